"""``Client``: the typed wrapper over the generated gRPC stubs (re-exported by ``llmopt.client``).

Every call has a deadline. Calls that are safe to repeat are retried with exponential backoff and
jitter when the server answers UNAVAILABLE (starting, draining, not up yet); the others never
are, so a lost answer can not turn into a double write. Every failure is raised as the
``ClientError`` subclass of its status code (``llmopt.client.errors``), carrying the code and the
server's message.

Which calls are retried: reads (Get*, List*, stats, Predict, GetFeatureVector, downloads), calls
whose repetition changes nothing (SetAlias to the same version, SetTrafficPolicy,
CreateFeatureSet with the same definition), SelectArm (the client picks the ``decision_id`` when
the caller did not, and the server answers a known id with the same decision) and RecordReward
(the server takes at most one reward per decision; a retry whose first attempt had landed raises
ALREADY_EXISTS), Suggest (with a request id the client picks, answered again with the same
trials) and Report (the same report twice is harmless). Never retried: creating bandits, models,
arms and studies, uploads, deletions, Promote, Rollback, WriteFeatures.
"""

from __future__ import annotations

import contextlib
import os
import random
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import grpc
import numpy as np
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc

from llmopt.client import types as ct
from llmopt.client.errors import (
    AlreadyExists,
    DeadlineExceeded,
    NotFound,
    error_from,
)
from llmopt.client.types import (
    AliasChange,
    Arm,
    AuditEntry,
    Bandit,
    BanditStats,
    Context,
    Decision,
    Explanation,
    Feature,
    FeatureImportance,
    FeatureSet,
    FeatureVector,
    Feedback,
    Model,
    ModelVersion,
    Page,
    Prediction,
    Promotion,
    Reward,
    RewardReceipt,
    TrafficPolicy,
)
from llmopt.gen.llmopt.v1 import (
    audit_pb2,
    audit_pb2_grpc,
    bandits_pb2,
    bandits_pb2_grpc,
    common_pb2,
    features_pb2,
    features_pb2_grpc,
    inference_pb2,
    inference_pb2_grpc,
    registry_pb2,
    registry_pb2_grpc,
    tuning_pb2,
    tuning_pb2_grpc,
)

__all__ = ["DEFAULT_ADDRESS", "Client", "RetryPolicy", "call_metadata", "tls_credentials"]

T = TypeVar("T")
DEFAULT_ADDRESS = "127.0.0.1:50051"
UPLOAD_CHUNK = 1 << 20
MIB = 1 << 20
ACTOR_METADATA = "x-llmopt-actor"
AUTHORIZATION_METADATA = "authorization"
# The most rows a version's background sample may have (the server refuses more).
MAX_BACKGROUND_ROWS = 1000


def tls_credentials(
    ca: str | Path | None = None, cert: str | Path | None = None, key: str | Path | None = None
) -> grpc.ChannelCredentials | None:
    """Channel credentials from PEM files, None when none is given (plaintext).

    ``ca`` verifies the server (None: the system's roots); ``cert`` and ``key`` are the client's
    certificate and key for mTLS, both or neither. A missing file raises FileNotFoundError.

    >>> tls_credentials() is None
    True
    >>> tls_credentials(cert="client.pem")
    Traceback (most recent call last):
    ...
    ValueError: tls_cert and tls_key go together: tls_cert='client.pem', tls_key=None
    """
    if ca is None and cert is None and key is None:
        return None
    if (cert is None) != (key is None):
        raise ValueError(f"tls_cert and tls_key go together: tls_cert={_shown(cert)}, "
                         f"tls_key={_shown(key)}")  # fmt: skip
    return grpc.ssl_channel_credentials(
        root_certificates=Path(ca).read_bytes() if ca is not None else None,
        private_key=Path(key).read_bytes() if key is not None else None,
        certificate_chain=Path(cert).read_bytes() if cert is not None else None,
    )


def _shown(path: str | Path | None) -> str:
    return repr(str(path)) if path is not None else "None"


def call_metadata(
    *, actor: str = "", token: str | None = None
) -> tuple[tuple[str, str], ...] | None:
    """The metadata sent with every call: the actor header and the bearer token, where given.

    >>> call_metadata(actor="ci", token="s3cret")
    (('x-llmopt-actor', 'ci'), ('authorization', 'Bearer s3cret'))
    >>> call_metadata() is None
    True
    """
    if token is not None and (not token or token != token.strip() or "\n" in token):
        # The value is a secret: say what is wrong with it, not what it is.
        raise ValueError(f"token must be non-empty, one line, without surrounding whitespace "
                         f"(got {len(token)} characters)")  # fmt: skip
    pairs: list[tuple[str, str]] = []
    if actor:
        pairs.append((ACTOR_METADATA, actor))
    if token:
        pairs.append((AUTHORIZATION_METADATA, f"Bearer {token}"))
    return tuple(pairs) or None


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of idempotent calls on UNAVAILABLE: ``attempts`` in all (1: no retry), sleeping
    a random share (full jitter) of ``initial_backoff * multiplier**n``, capped at
    ``max_backoff`` seconds."""

    attempts: int = 5
    initial_backoff: float = 0.1
    max_backoff: float = 2.0
    multiplier: float = 2.0

    def delays(self, rng: random.Random) -> Iterator[float]:
        """The sleeps between attempts (``attempts - 1`` of them).

        >>> list(RetryPolicy(attempts=4, initial_backoff=1.0, multiplier=3.0,
        ...                  max_backoff=5.0).delays(_FakeRandom()))
        [1.0, 3.0, 5.0]
        """
        ceiling = self.initial_backoff
        for _ in range(self.attempts - 1):
            yield rng.uniform(0.0, 1.0) * min(ceiling, self.max_backoff)
            ceiling *= self.multiplier


class _FakeRandom(random.Random):
    """Always the top of the jitter range (for the example above)."""

    def uniform(self, a: float, b: float) -> float:
        return b


class Client:
    """A connection to llmopt-server; use it as a context manager to close the channel.

    ``timeout`` is the default deadline of every call in seconds (uploads get ``upload_timeout``);
    ``actor`` is recorded with registry alias changes when the server runs without auth (with
    auth on, the server records the authenticated principal instead).

    TLS: ``tls_ca`` (PEM file of the CA that signed the server's certificate; None: the system's
    roots) turns TLS on, as do ``tls_cert`` and ``tls_key`` (the client certificate and its key,
    for a server with mTLS; both or neither). ``credentials`` (ready channel credentials) is the
    alternative to those three. ``token`` is sent as ``authorization: Bearer <token>`` on every
    call; gRPC sends call credentials only over TLS, so the token goes as plain metadata, which
    also reaches a plaintext server on loopback.

    >>> with Client(address) as c:
    ...     c.wait_ready(timeout=10)
    ...     c.list_bandits() is not None
    True
    """

    def __init__(
        self,
        address: str = DEFAULT_ADDRESS,
        *,
        timeout: float = 10.0,
        upload_timeout: float = 300.0,
        retry: RetryPolicy | None = None,
        actor: str = "",
        credentials: grpc.ChannelCredentials | None = None,
        tls_ca: str | Path | None = None,
        tls_cert: str | Path | None = None,
        tls_key: str | Path | None = None,
        token: str | None = None,
        max_message_mb: int = 64,
        seed: int | None = None,
    ) -> None:
        tls = tls_credentials(tls_ca, tls_cert, tls_key)
        if tls is not None and credentials is not None:
            raise ValueError("pass either credentials or tls_ca/tls_cert/tls_key, not both")
        credentials = credentials or tls
        options = [
            ("grpc.max_send_message_length", max_message_mb * MIB),
            ("grpc.max_receive_message_length", max_message_mb * MIB),
        ]
        self.address = address
        self._channel = (
            grpc.secure_channel(address, credentials, options=options)
            if credentials is not None
            else grpc.insecure_channel(address, options=options)
        )
        self._timeout = timeout
        self._upload_timeout = upload_timeout
        self._retry = retry or RetryPolicy()
        self._rng = random.Random(seed)
        self._metadata = call_metadata(actor=actor, token=token)
        self._bandits = bandits_pb2_grpc.BanditsStub(self._channel)
        self._registry = registry_pb2_grpc.RegistryStub(self._channel)
        self._inference = inference_pb2_grpc.InferenceStub(self._channel)
        self._features = features_pb2_grpc.FeaturesStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)
        self._audit = audit_pb2_grpc.AuditStub(self._channel)
        self._tuning = tuning_pb2_grpc.TuningStub(self._channel)
        # (model, version, alias) -> (input name, dtype name) of the version it reaches.
        self._inputs: dict[tuple[str, int, str], tuple[str, str]] = {}

    # -- lifecycle ------------------------------------------------------------------------------

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def wait_ready(self, timeout: float = 30.0, service: str = "") -> None:
        """Block until the server reports SERVING (for ``service``, "" = the whole server)."""
        deadline = time.monotonic() + timeout
        status = None
        while True:
            left = deadline - time.monotonic()
            try:
                status = self._health.Check(
                    health_pb2.HealthCheckRequest(service=service), timeout=max(0.1, min(2, left))
                ).status
                if status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError as exc:
                status = exc.code()
            if time.monotonic() + 0.05 >= deadline:
                raise DeadlineExceeded(
                    "Health/Check",
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    f"server at {self.address} not SERVING within {timeout}s (last: {status})",
                )
            time.sleep(0.05)

    def health(self) -> dict[str, str]:
        """Every service's health status by name ("" is the server as a whole), from
        Health/List: ``{"": "SERVING", "llmopt.v1.Bandits": "SERVING", ...}``."""
        answer = self._call(self._health.List, health_pb2.HealthListRequest(), name="Health/List",
                            retry=True)  # fmt: skip
        name = health_pb2.HealthCheckResponse.ServingStatus.Name
        return {service: name(r.status) for service, r in sorted(answer.statuses.items())}

    def ready(self) -> bool:
        """Whether every service reports SERVING now (what ``/readyz`` answers 200 for)."""
        return all(status == "SERVING" for status in self.health().values())

    # -- plumbing -------------------------------------------------------------------------------

    def _run(self, attempt: Callable[[], T], *, name: str, retry: bool) -> T:
        """``attempt()``, again after a backoff on UNAVAILABLE when ``retry``; a failure becomes
        the ClientError subclass of its status code."""
        delays = self._retry.delays(self._rng) if retry else iter(())
        while True:
            try:
                return attempt()
            except grpc.RpcError as exc:
                code = exc.code()  # type: ignore[attr-defined]
                if code == grpc.StatusCode.UNAVAILABLE:
                    delay = next(delays, None)
                    if delay is not None:
                        time.sleep(delay)
                        continue
                raise error_from(name, code, exc.details() or "") from None  # type: ignore[attr-defined]

    def _call(
        self,
        method: Callable[..., T],
        request: Any,
        *,
        name: str,
        retry: bool,
        timeout: float | None = None,
    ) -> T:
        def attempt() -> T:
            return method(request, timeout=timeout or self._timeout, metadata=self._metadata)

        return self._run(attempt, name=name, retry=retry)

    def _every_page(
        self,
        method: Callable[..., Any],
        request_for: Callable[[common_pb2.PageRequest], Any],
        items_of: Callable[[Any], Iterable[T]],
        *,
        name: str,
    ) -> list[T]:
        """Every item of a paged listing: the requests ``request_for`` builds around each page
        (1,000 at a time), retried as reads, and the items ``items_of`` takes from each answer."""
        out: list[T] = []
        token = ""
        while True:
            request = request_for(common_pb2.PageRequest(page_size=1000, page_token=token))
            page = self._call(method, request, name=name, retry=True)
            out.extend(items_of(page))
            token = page.next_page_token
            if not token:
                return out

    # -- bandits --------------------------------------------------------------------------------

    def create_bandit(
        self,
        name: str,
        arms: Sequence[Arm] = (),
        *,
        policy: str = "ucb1",
        policy_params: Mapping[str, float] | None = None,
        reward: str | Reward = "",
        feature_set: str = "",
        seed: int = 0,
        description: str = "",
        reward_wait_seconds: float | None = None,
        default_reward: float | None = None,
    ) -> Bandit:
        """Create a bandit over ``arms``. ``policy`` is a Policy oneof name (ucb1,
        thompson_beta, lin_ucb, epsilon_greedy, ...) with optional ``policy_params``; ``reward``
        a preset name (balanced, quality-focused, cost-focused, latency-focused) or a Reward.
        Not retried (a lost answer would turn into ALREADY_EXISTS).
        """
        msg = bandits_pb2.Bandit(
            name=name,
            policy=ct.to_policy(policy, policy_params),
            arms=[ct.to_arm(a) for a in arms],
            feature_set=feature_set,
            seed=seed,
            description=description,
        )
        if isinstance(reward, str):
            msg.reward.preset = reward
        else:
            msg.reward.CopyFrom(bandits_pb2.RewardConfig(**vars(reward)))
        if reward_wait_seconds is not None:
            msg.reward_wait.FromNanoseconds(int(reward_wait_seconds * 1e9))
        if default_reward is not None:
            msg.default_reward = default_reward
        request = bandits_pb2.CreateBanditRequest(bandit=msg)
        answer = self._call(self._bandits.CreateBandit, request, name="CreateBandit", retry=False)
        return ct.from_bandit(answer)

    def get_bandit(self, name: str) -> Bandit:
        request = bandits_pb2.GetBanditRequest(name=name)
        return ct.from_bandit(
            self._call(self._bandits.GetBandit, request, name="GetBandit", retry=True)
        )

    def list_bandits(self) -> list[Bandit]:
        """Every bandit (all pages)."""
        return self._every_page(
            self._bandits.ListBandits,
            lambda page: bandits_pb2.ListBanditsRequest(page=page),
            lambda answer: (ct.from_bandit(b) for b in answer.bandits),
            name="ListBandits",
        )

    def delete_bandit(self, name: str) -> None:
        request = bandits_pb2.DeleteBanditRequest(name=name)
        self._call(self._bandits.DeleteBandit, request, name="DeleteBandit", retry=False)

    def add_arm(self, bandit: str, arm: Arm) -> Bandit:
        request = bandits_pb2.AddArmRequest(bandit=bandit, arm=ct.to_arm(arm))
        return ct.from_bandit(self._call(self._bandits.AddArm, request, name="AddArm", retry=False))

    def remove_arm(self, bandit: str, arm_id: str) -> Bandit:
        request = bandits_pb2.RemoveArmRequest(bandit=bandit, arm_id=arm_id)
        return ct.from_bandit(
            self._call(self._bandits.RemoveArm, request, name="RemoveArm", retry=False)
        )

    def select_arm(
        self,
        bandit: str,
        context: Context | None = None,
        *,
        vector: Sequence[float] | np.ndarray | None = None,
        excluded: Iterable[str] = (),
        decision_id: str = "",
        entity_ids: Mapping[str, str] | None = None,
        explain: bool = False,
    ) -> Decision:
        """Ask which arm serves a request, from its ``context`` or a ready ``vector``.

        Without a ``decision_id`` the client makes one (a UUID), so that a retry after a lost
        answer gets the same decision instead of a second one. ``explain``: the decision comes
        with every arm's score and its parts (``Decision.explanation``), kept with the logged
        decision (``get_decision``).
        """
        request = bandits_pb2.SelectArmRequest(
            bandit=bandit,
            excluded_arms=list(excluded),
            decision_id=decision_id or uuid.uuid4().hex,
            entity_ids=dict(entity_ids or {}),
            explain=explain,
        )
        if context is not None:
            request.context.CopyFrom(ct.to_context(context))
        if vector is not None:
            request.context_vector.extend(float(v) for v in np.asarray(vector).reshape(-1))
        answer = self._call(self._bandits.SelectArm, request, name="SelectArm", retry=True)
        return ct.from_decision(answer)

    def record_reward(
        self,
        decision_id: str,
        reward: float | None = None,
        *,
        quality: float | None = None,
        cost: float = 0.0,
        latency_ms: float = 0.0,
        tokens: int = 0,
        feedback: Feedback | None = None,
    ) -> RewardReceipt:
        """Reward a decision: a raw ``reward`` in [0, 1], or the outcome (quality, cost in
        dollars, latency, tokens, user feedback) that the bandit's reward config turns into one.
        """
        request = bandits_pb2.RecordRewardRequest(decision_id=decision_id)
        if reward is not None:
            if quality is not None or cost or latency_ms or tokens or feedback is not None:
                raise ValueError("give a raw reward or an outcome (quality, cost, ...), not both")
            request.reward = reward
        else:
            request.outcome.CopyFrom(ct.to_outcome(quality, cost, latency_ms, tokens, feedback))
        answer = self._call(self._bandits.RecordReward, request, name="RecordReward", retry=True)
        return RewardReceipt(answer.decision_id, answer.arm_id, answer.reward)

    def bandit_stats(self, bandit: str) -> BanditStats:
        """Per-arm pulls, rewards and means, and the bandit's totals.

        >>> stats = client.bandit_stats("doc-router")
        >>> stats.decisions >= 1 and sorted(stats.arms)
        ['large', 'small']
        """
        request = bandits_pb2.GetStatsRequest(bandit=bandit)
        answer = self._call(self._bandits.GetStats, request, name="GetStats", retry=True)
        return ct.from_bandit_stats(answer)

    def get_decision(self, decision_id: str, *, explain: bool = False) -> ct.LoggedDecision:
        """One decision as the server logged it: its context and vector, arm, scores, status,
        reward and outcome once recorded. ``explain``: with its explanation (the one kept when
        select_arm asked for it, else recomputed against the policy's state now)."""
        request = bandits_pb2.GetDecisionRequest(decision_id=decision_id, explain=explain)
        answer = self._call(self._bandits.GetDecision, request, name="GetDecision", retry=True)
        return ct.from_logged_decision(answer)

    def list_decisions(
        self,
        bandit: str,
        *,
        start_time: float | None = None,
        end_time: float | None = None,
        page_size: int = 0,
        page_token: str = "",
    ) -> Page[ct.LoggedDecision]:
        """One page of a bandit's decisions made at or after ``start_time`` and before
        ``end_time`` (seconds since the epoch; None: unbounded), oldest first (``page_size`` 0:
        the server's default, 100)."""
        request = bandits_pb2.ListDecisionsRequest(
            bandit=bandit, page=common_pb2.PageRequest(page_size=page_size, page_token=page_token)
        )
        if start_time is not None:
            request.start_time.CopyFrom(ct.to_timestamp(start_time))
        if end_time is not None:
            request.end_time.CopyFrom(ct.to_timestamp(end_time))
        page = self._call(self._bandits.ListDecisions, request, name="ListDecisions", retry=True)
        return Page(tuple(ct.from_logged_decision(d) for d in page.decisions), page.next_page_token)

    def iter_decisions(
        self,
        bandit: str,
        *,
        start_time: float | None = None,
        end_time: float | None = None,
        page_size: int = 1000,
    ) -> Iterator[ct.LoggedDecision]:
        """Every decision of ``list_decisions``' range, page after page (fetched as consumed)."""
        token = ""
        while True:
            page = self.list_decisions(
                bandit,
                start_time=start_time,
                end_time=end_time,
                page_size=page_size,
                page_token=token,
            )
            yield from page.items
            token = page.next_page_token
            if not token:
                return

    def get_arm_estimates(self, bandit: str) -> ct.ArmEstimates:
        """What the bandit's policy has learned per arm: means and their 95 % intervals, and for
        linear policies theta and its sd per context slot (``slot_names``)."""
        request = bandits_pb2.GetArmEstimatesRequest(bandit=bandit)
        answer = self._call(
            self._bandits.GetArmEstimates, request, name="GetArmEstimates", retry=True
        )
        return ct.from_arm_estimates(answer)

    # -- registry -------------------------------------------------------------------------------

    def create_model(
        self,
        name: str,
        *,
        description: str = "",
        task: str = "",
        tags: Mapping[str, str] | None = None,
    ) -> Model:
        """Register a model name; ``task`` is regression, classification, ranking, policy or
        other."""
        try:
            task_value = ct.TASKS[task]
        except KeyError:
            raise ValueError(f"task: {task!r} is not one of {', '.join(ct.TASKS)}") from None
        request = registry_pb2.CreateModelRequest(
            name=name, description=description, task=task_value, tags=dict(tags or {})
        )
        answer = self._call(self._registry.CreateModel, request, name="CreateModel", retry=False)
        return ct.from_model(answer)

    def get_model(self, name: str) -> Model:
        request = registry_pb2.GetModelRequest(name=name)
        return ct.from_model(
            self._call(self._registry.GetModel, request, name="GetModel", retry=True)
        )

    def list_models(self, tag_filter: Mapping[str, str] | None = None) -> list[Model]:
        tags = dict(tag_filter or {})
        return self._every_page(
            self._registry.ListModels,
            lambda page: registry_pb2.ListModelsRequest(page=page, tag_filter=tags),
            lambda answer: (ct.from_model(m) for m in answer.models),
            name="ListModels",
        )

    def delete_model(self, name: str, *, force: bool = False) -> int:
        """Delete a model (``force``: with its versions); returns the versions deleted."""
        request = registry_pb2.DeleteModelRequest(name=name, force=force)
        answer = self._call(self._registry.DeleteModel, request, name="DeleteModel", retry=False)
        return int(answer.versions_deleted)

    def upload_onnx(
        self,
        model: str,
        onnx: bytes | str | Path,
        *,
        semver: str = "",
        parent_version: int = 0,
        metrics: Mapping[str, float] | None = None,
        tags: Mapping[str, str] | None = None,
        description: str = "",
        alias: str = "",
        chunk_size: int = UPLOAD_CHUNK,
        background: Any = None,
    ) -> ModelVersion:
        """Upload an ONNX artifact (bytes, or a file path read as it is sent) as the model's next
        version, streamed in ``chunk_size`` chunks, optionally pointing ``alias`` at it in the
        same transaction. ``background`` (rows of the model's input, at most 1,000, floats) is
        kept with the version as the baseline of ``explain``. Not retried."""
        if isinstance(onnx, bytes):
            size = len(onnx)
            blocks: Iterator[bytes] = (
                onnx[start : start + chunk_size] for start in range(0, size, chunk_size)
            )
        else:
            size = Path(onnx).stat().st_size
            blocks = _read_blocks(Path(onnx), chunk_size)
        meta = registry_pb2.UploadVersionMetadata(
            model=model,
            semver=semver,
            parent_version=parent_version,
            metrics=dict(metrics or {}),
            tags=dict(tags or {}),
            description=description,
            alias=alias,
            size_bytes=size,
        )
        if background is not None:
            rows = np.asarray(background)
            if rows.dtype.kind in "biu":
                rows = rows.astype(np.float64)  # integer rows sent as floats: exact, not refused
            meta.background.CopyFrom(ct.to_tensor(rows))

        def parts() -> Iterator[registry_pb2.UploadVersionRequest]:
            yield registry_pb2.UploadVersionRequest(metadata=meta)
            for block in blocks:
                yield registry_pb2.UploadVersionRequest(chunk=block)

        answer = self._call(
            self._registry.UploadVersion,
            parts(),
            name="UploadVersion",
            retry=False,
            timeout=self._upload_timeout,
        )
        self._forget_inputs(model)
        return ct.from_version(answer)

    def register_sklearn_model(
        self,
        model: str,
        estimator: Any,
        *,
        n_features: int | None = None,
        sample: np.ndarray | None = None,
        create: bool = True,
        task: str = "",
        description: str = "",
        alias: str = "",
        semver: str = "",
        parent_version: int = 0,
        metrics: Mapping[str, float] | None = None,
        tags: Mapping[str, str] | None = None,
        background: Any = None,
    ) -> ModelVersion:
        """Export a fitted scikit-learn estimator to ONNX (``llmopt.registry.export``: skl2onnx,
        checked against scikit-learn on ``sample``) and upload it; ``create`` registers the model
        name first when it does not exist. The graph takes one float32 input named ``input``.

        The version's background sample (the baseline of ``explain``) is ``background`` when
        given, else the training data passed as ``sample`` (a seeded draw of
        ``MAX_BACKGROUND_ROWS`` rows when it has more); with neither it has none.

        The export needs the server's extras (scikit-learn, skl2onnx, onnxruntime); it is
        imported here, on first use, so that the rest of the client never loads it.

        >>> from sklearn.linear_model import LinearRegression
        >>> X = np.array([[0, 0], [1, 0], [0, 1], [1, 1], [2, 1]], dtype=np.float32)
        >>> fitted = LinearRegression().fit(X, X @ [1.0, 2.0])
        >>> v1 = client.register_sklearn_model("doc-linear", fitted, alias="champion")
        >>> v1.version, v1.inputs[0].name, v1.aliases
        (1, 'input', ('champion',))
        >>> client.predict("doc-linear", [[1.0, 1.0], [2.0, 0.0]]).round(3).tolist()
        [[3.0], [2.0]]
        """
        from llmopt.registry.export import export_sklearn

        exported = export_sklearn(estimator, n_features, sample=sample)
        if create:
            with contextlib.suppress(AlreadyExists):
                self.create_model(model, description=description, task=task)
        all_tags = {"framework": "sklearn", "estimator": type(estimator).__name__}
        all_tags.update(tags or {})
        if background is None and sample is not None:
            background = background_of(sample)
        return self.upload_onnx(
            model,
            exported.onnx_bytes,
            semver=semver,
            parent_version=parent_version,
            metrics=metrics,
            tags=all_tags,
            description=description,
            alias=alias,
            background=background,
        )

    def get_version(self, model: str, version: int = 0, *, alias: str = "") -> ModelVersion:
        """A version by number or by alias (``latest``: the newest)."""
        request = registry_pb2.GetVersionRequest(model=model, version=version, alias=alias)
        return ct.from_version(
            self._call(self._registry.GetVersion, request, name="GetVersion", retry=True)
        )

    def list_versions_page(
        self,
        model: str,
        *,
        page_size: int = 0,
        page_token: str = "",
        tag_filter: Mapping[str, str] | None = None,
    ) -> Page[ModelVersion]:
        """One page of a model's versions, newest first (``page_size`` 0: the server's default;
        ``tag_filter``: only versions carrying every one of these tags)."""
        request = registry_pb2.ListVersionsRequest(
            model=model,
            page=common_pb2.PageRequest(page_size=page_size, page_token=page_token),
            tag_filter=dict(tag_filter or {}),
        )
        page = self._call(self._registry.ListVersions, request, name="ListVersions", retry=True)
        return Page(tuple(ct.from_version(v) for v in page.versions), page.next_page_token)

    def list_versions(
        self, model: str, tag_filter: Mapping[str, str] | None = None
    ) -> list[ModelVersion]:
        """Every version of a model (all pages), newest first."""
        out: list[ModelVersion] = []
        token = ""
        while True:
            page = self.list_versions_page(
                model, page_size=1000, page_token=token, tag_filter=tag_filter
            )
            out.extend(page.items)
            token = page.next_page_token
            if not token:
                return out

    def delete_version(self, model: str, version: int) -> None:
        """Delete a version that no alias points at. Not retried."""
        request = registry_pb2.DeleteVersionRequest(model=model, version=version)
        self._call(self._registry.DeleteVersion, request, name="DeleteVersion", retry=False)
        self._forget_inputs(model)

    def _download(
        self, model: str, version: int, alias: str, write: Callable[[bytes], object]
    ) -> ModelVersion:
        """Stream a version's bytes into ``write``; its metadata (the stream's first part)."""
        request = registry_pb2.DownloadVersionRequest(model=model, version=version, alias=alias)
        stream = self._registry.DownloadVersion(
            request, timeout=self._upload_timeout, metadata=self._metadata
        )
        meta = registry_pb2.ModelVersion()
        for part in stream:
            if part.WhichOneof("part") == "metadata":
                meta = part.metadata
            else:
                write(part.chunk)
        return ct.from_version(meta)

    def download_version(self, model: str, version: int = 0, *, alias: str = "") -> bytes:
        """The ONNX bytes of a version (by number or alias)."""

        def attempt() -> bytes:
            parts: list[bytes] = []
            self._download(model, version, alias, parts.append)
            return b"".join(parts)

        return self._run(attempt, name="DownloadVersion", retry=True)

    def download_to_file(
        self, model: str, path: str | Path, version: int = 0, *, alias: str = ""
    ) -> ModelVersion:
        """Stream a version's ONNX file (by number or alias) to ``path`` and return the version.

        The bytes go to ``path`` + ".part" first, renamed when complete: ``path`` never holds
        a partial download, and a failed one leaves nothing behind.
        """
        out = Path(path)
        tmp = out.with_name(out.name + ".part")

        def attempt() -> ModelVersion:
            with open(tmp, "wb") as f:
                return self._download(model, version, alias, f.write)

        try:
            found = self._run(attempt, name="DownloadVersion", retry=True)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, out)
        return found

    def set_alias(self, model: str, alias: str, version: int, *, reason: str = "") -> AliasChange:
        """Point ``alias`` (e.g. champion, challenger) at ``version``."""
        request = registry_pb2.SetAliasRequest(
            model=model, alias=alias, version=version, reason=reason
        )
        answer = self._call(self._registry.SetAlias, request, name="SetAlias", retry=True)
        self._forget_inputs(model)
        return ct.from_alias_change(answer)

    def delete_alias(self, model: str, alias: str, *, reason: str = "") -> AliasChange:
        request = registry_pb2.DeleteAliasRequest(model=model, alias=alias, reason=reason)
        answer = self._call(self._registry.DeleteAlias, request, name="DeleteAlias", retry=False)
        self._forget_inputs(model)
        return ct.from_alias_change(answer)

    def promote(self, model: str, *, reason: str = "") -> AliasChange:
        """The challenger becomes champion (its alias is removed); returns the champion's move.

        Not retried: a repeated Promote would promote whatever is challenger by then.
        """
        return self.promote_challenger(model, reason=reason).champion

    def promote_challenger(self, model: str, *, reason: str = "") -> Promotion:
        """``promote``, returning both alias moves: the champion's and the challenger's removal."""
        request = registry_pb2.PromoteRequest(model=model, reason=reason)
        answer = self._call(self._registry.Promote, request, name="Promote", retry=False)
        self._forget_inputs(model)
        return Promotion(
            ct.from_alias_change(answer.champion), ct.from_alias_change(answer.challenger_removed)
        )

    def rollback(self, model: str, *, reason: str = "") -> AliasChange:
        """The champion returns to the version it pointed at before its last change."""
        request = registry_pb2.RollbackRequest(model=model, reason=reason)
        answer = self._call(self._registry.Rollback, request, name="Rollback", retry=False)
        self._forget_inputs(model)
        return ct.from_alias_change(answer)

    def alias_history_page(
        self, model: str, alias: str = "", *, page_size: int = 0, page_token: str = ""
    ) -> Page[AliasChange]:
        """One page of a model's alias changes (of one alias when given), newest first."""
        request = registry_pb2.GetAliasHistoryRequest(
            model=model,
            alias=alias,
            page=common_pb2.PageRequest(page_size=page_size, page_token=page_token),
        )
        page = self._call(
            self._registry.GetAliasHistory, request, name="GetAliasHistory", retry=True
        )
        return Page(tuple(ct.from_alias_change(c) for c in page.changes), page.next_page_token)

    def alias_history(self, model: str, alias: str = "") -> list[AliasChange]:
        """Alias changes of a model (of one alias when given), newest first (all pages)."""
        out: list[AliasChange] = []
        token = ""
        while True:
            page = self.alias_history_page(model, alias, page_size=1000, page_token=token)
            out.extend(page.items)
            token = page.next_page_token
            if not token:
                return out

    # -- inference ------------------------------------------------------------------------------

    def _input_of(self, model: str, version: int, alias: str) -> tuple[str, str]:
        """Name and dtype of the single input of the version a call would reach."""
        key = (model, version, alias)
        found = self._inputs.get(key)
        if found is None:
            if version or alias:
                mv = self.get_version(model, version, alias=alias)
            else:
                try:
                    mv = self.get_version(model, alias="champion")
                except NotFound:
                    mv = self.get_version(model, alias="latest")
            if len(mv.inputs) != 1:
                names = ", ".join(s.name for s in mv.inputs)
                raise ValueError(
                    f"model {model!r} takes {len(mv.inputs)} inputs ({names}): pass a dict "
                    "name -> array"
                )
            found = (mv.inputs[0].name, mv.inputs[0].dtype)
            self._inputs[key] = found
        return found

    def _forget_inputs(self, model: str) -> None:
        for key in [k for k in self._inputs if k[0] == model]:
            del self._inputs[key]

    def infer(
        self,
        model: str,
        inputs: Any,
        *,
        version: int = 0,
        alias: str = "",
        outputs: Sequence[str] = (),
        routing_key: str = "",
    ) -> Prediction:
        """Run a model and get every output with the version and variant that answered.

        ``inputs`` is a dict name -> array, or one array for a single-input model (its name
        and dtype are read from the registry once, and the array is cast to that dtype).
        Without ``version`` or ``alias`` the model's traffic policy picks champion or
        challenger (sticky per ``routing_key``).
        """
        if isinstance(inputs, Mapping):
            named = {name: np.asarray(a) for name, a in inputs.items()}
        else:
            name, dtype = self._input_of(model, version, alias)
            array = np.asarray(inputs)
            named = {name: array if dtype == "string" else array.astype(dtype, copy=False)}
        request = inference_pb2.PredictRequest(
            model=model,
            version=version,
            alias=alias,
            inputs=[ct.to_tensor(a, name) for name, a in named.items()],
            output_names=list(outputs),
            routing_key=routing_key,
        )
        answer = self._call(self._inference.Predict, request, name="Predict", retry=True)
        return ct.from_prediction(answer)

    def predict(
        self,
        model: str,
        inputs: Any,
        *,
        output: str = "",
        version: int = 0,
        alias: str = "",
        routing_key: str = "",
    ) -> np.ndarray:
        """One output of a model as a numpy array: ``output`` by name, else the first one."""
        prediction = self.infer(
            model,
            inputs,
            version=version,
            alias=alias,
            outputs=[output] if output else (),
            routing_key=routing_key,
        )
        if output:
            return prediction.outputs[output]
        return next(iter(prediction.outputs.values()))

    def explain(
        self,
        model: str,
        inputs: Any,
        *,
        version: int = 0,
        alias: str = "",
        method: str = "auto",
        output_name: str = "",
        output_index: int = 0,
        samples: int = 0,
        seed: int = 0,
        routing_key: str = "",
    ) -> Explanation:
        """Per-feature contributions to the predictions of ``inputs`` (rows of the model's one
        float input, cast to its dtype): exact for linear graphs and tree ensembles, seeded
        KernelSHAP (``samples`` coalitions per row, 0: 2048) for any other graph; ``method``
        auto, linear, tree_shap or kernel_shap. The baseline is the version's background
        sample. Routed like ``infer`` without ``version`` or ``alias``.
        """
        try:
            method_value = ct.EXPLAIN_METHODS[method.lower()]
        except KeyError:
            raise ValueError(
                f"method: {method!r} is not one of {', '.join(ct.EXPLAIN_METHODS)}"
            ) from None
        name, dtype = self._input_of(model, version, alias)
        array = np.asarray(inputs)
        request = inference_pb2.ExplainRequest(
            model=model,
            version=version,
            alias=alias,
            inputs=[ct.to_tensor(array.astype(dtype, copy=False), name)],
            output_name=output_name,
            output_index=output_index,
            method=method_value,
            samples=samples,
            seed=seed,
            routing_key=routing_key,
        )
        answer = self._call(self._inference.Explain, request, name="Explain", retry=True)
        return ct.from_explanation(answer)

    def get_feature_importance(
        self, model: str, *, version: int = 0, alias: str = ""
    ) -> FeatureImportance:
        """A version's mean |contribution| per feature over the rows it served recently (its
        last 1,000 predicted rows in this server process; version 0 and no alias: the
        champion), largest first; ``rows`` 0 and zeros before any traffic."""
        request = inference_pb2.GetFeatureImportanceRequest(
            model=model, version=version, alias=alias
        )
        answer = self._call(
            self._inference.GetFeatureImportance,
            request,
            name="GetFeatureImportance",
            retry=True,
        )
        return ct.from_feature_importance(answer)

    def set_traffic_policy(
        self, model: str, mode: str, challenger_percent: float = 0.0
    ) -> TrafficPolicy:
        """Share routed requests: ``mode`` off, split (``challenger_percent`` go to the
        challenger) or shadow (every request copied to the challenger).

        >>> client.set_traffic_policy("doc-linear", "split", 10)
        TrafficPolicy(model='doc-linear', mode='split', challenger_percent=10.0)
        """
        try:
            mode_value = ct.MODES[mode.lower()]
        except KeyError:
            raise ValueError(f"mode: {mode!r} is not one of off, split, shadow") from None
        request = inference_pb2.SetTrafficPolicyRequest(
            policy=inference_pb2.TrafficPolicy(
                model=model, mode=mode_value, challenger_percent=challenger_percent
            )
        )
        answer = self._call(
            self._inference.SetTrafficPolicy, request, name="SetTrafficPolicy", retry=True
        )
        return ct.from_traffic_policy(answer)

    def get_traffic_policy(self, model: str) -> TrafficPolicy:
        request = inference_pb2.GetTrafficPolicyRequest(model=model)
        answer = self._call(
            self._inference.GetTrafficPolicy, request, name="GetTrafficPolicy", retry=True
        )
        return ct.from_traffic_policy(answer)

    def model_stats(self, model: str) -> dict[str, Any]:
        """Serving statistics of a model as plain dicts (requests, errors, latency by variant)."""
        from google.protobuf import json_format

        request = inference_pb2.GetModelStatsRequest(model=model)
        answer = self._call(
            self._inference.GetModelStats, request, name="GetModelStats", retry=True
        )
        return json_format.MessageToDict(answer, preserving_proto_field_name=True)

    # -- features -------------------------------------------------------------------------------

    def create_feature_set(
        self,
        name: str,
        features: Sequence[Feature],
        *,
        entity_key: str = "",
        ttl_seconds: float | None = None,
        description: str = "",
        aggregates: Sequence[str] = (),
        fit: bool = False,
    ) -> FeatureSet:
        """Create a feature set (a new version when the definition differs from the latest;
        the same definition returns the latest unchanged, so this call is retried).

        >>> fs = client.create_feature_set("doc-users", [
        ...     Feature("requests_per_day", "float", "log1p"),
        ...     Feature("plan", "category", "one_hot", {"vocabulary": ["free", "pro"]}),
        ... ], entity_key="user_id")
        >>> fs.version, [f.name for f in fs.features]
        (1, ['requests_per_day', 'plan'])
        """
        msg = features_pb2.FeatureSet(
            name=name,
            entity_key=entity_key,
            features=[ct.to_feature(f) for f in features],
            description=description,
            aggregates=list(aggregates),
        )
        if ttl_seconds is not None:
            msg.ttl.FromNanoseconds(int(ttl_seconds * 1e9))
        request = features_pb2.CreateFeatureSetRequest(feature_set=msg, fit=fit)
        answer = self._call(
            self._features.CreateFeatureSet, request, name="CreateFeatureSet", retry=True
        )
        return ct.from_feature_set(answer)

    def get_feature_set(self, name: str, version: int = 0) -> FeatureSet:
        request = features_pb2.GetFeatureSetRequest(name=name, version=version)
        answer = self._call(self._features.GetFeatureSet, request, name="GetFeatureSet", retry=True)
        return ct.from_feature_set(answer)

    def list_feature_sets(self) -> list[FeatureSet]:
        return self._every_page(
            self._features.ListFeatureSets,
            lambda page: features_pb2.ListFeatureSetsRequest(page=page),
            lambda answer: (ct.from_feature_set(s) for s in answer.feature_sets),
            name="ListFeatureSets",
        )

    def write_features(
        self,
        feature_set: str,
        rows: Mapping[str, Mapping[str, Any]] | Iterable[tuple[str, Mapping[str, Any], float]],
    ) -> int:
        """Write feature values: ``{entity_id: {name: value}}`` (event time: the server's now)
        or ``(entity_id, values, event_time_seconds)`` tuples. Returns the rows written.
        Not retried (a repeated write would count twice in windowed aggregates).

        >>> client.write_features("doc-users", {"u1": {"requests_per_day": 40.0, "plan": "pro"}})
        1
        """
        msgs = []
        items = ((e, v, None) for e, v in rows.items()) if isinstance(rows, Mapping) else iter(rows)
        for entity_id, values, event_time in items:
            row = features_pb2.FeatureRow(entity_id=entity_id)
            for key, value in values.items():
                row.values[key].CopyFrom(ct.to_value(value))
            if event_time is not None:
                row.event_time.FromNanoseconds(int(event_time * 1e9))
            msgs.append(row)
        request = features_pb2.WriteFeaturesRequest(feature_set=feature_set, rows=msgs)
        answer = self._call(
            self._features.WriteFeatures, request, name="WriteFeatures", retry=False
        )
        return int(answer.rows_written)

    def get_features(
        self,
        feature_set: str,
        entity_ids: Sequence[str],
        names: Sequence[str] = (),
        *,
        as_of: float | None = None,
    ) -> dict[str, dict[str, Any]]:
        """Stored values per entity: ``{entity_id: {name: value or None when missing}}``.

        >>> client.get_features("doc-users", ["u1"], ["plan"])
        {'u1': {'plan': 'pro'}}
        """
        request = features_pb2.GetFeaturesRequest(
            feature_set=feature_set, entity_ids=list(entity_ids), feature_names=list(names)
        )
        if as_of is not None:
            ts = Timestamp()
            ts.FromNanoseconds(int(as_of * 1e9))
            request.as_of.CopyFrom(ts)
        answer = self._call(self._features.GetFeatures, request, name="GetFeatures", retry=True)
        return {
            e.entity_id: {
                name: None if v.missing else ct.from_value(v.value) for name, v in e.values.items()
            }
            for e in answer.entities
        }

    def get_feature_vector(
        self,
        feature_set: str = "",
        context: Context | None = None,
        entity_ids: Sequence[str] = (),
    ) -> FeatureVector:
        """The dense vector of a request (``feature_set`` "": the built-in 10-dim context).

        >>> v = client.get_feature_vector(context=Context(task_type="summarization",
        ...     priority=10, hour_of_day=0, day_of_week=0))
        >>> v.values.round(2).tolist()
        [0.0, 0.5, 1.0, 1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0]
        """
        request = features_pb2.GetFeatureVectorRequest(
            feature_set=feature_set, entity_ids=list(entity_ids)
        )
        if context is not None:
            request.context.CopyFrom(ct.to_context(context))
        answer = self._call(
            self._features.GetFeatureVector, request, name="GetFeatureVector", retry=True
        )
        return ct.from_feature_vector(answer)

    # -- audit ----------------------------------------------------------------------------------

    def get_audit_log(
        self,
        principal: str = "",
        method: str = "",
        target: str = "",
        since: float | None = None,
        until: float | None = None,
        page_size: int = 100,
        page_token: str = "",
    ) -> Page[AuditEntry]:
        """One page of the server's audit trail of admin RPCs, newest first (needs the admin
        scope). Filters that are given must all match: ``principal``, ``method`` (a full name,
        "/llmopt.v1.Registry/Promote"), ``target``; ``since``/``until`` are seconds since the
        epoch (calls at or after ``since``, before ``until``)."""
        request = audit_pb2.GetAuditLogRequest(
            principal=principal,
            method=method,
            target=target,
            page=common_pb2.PageRequest(page_size=page_size, page_token=page_token),
        )
        if since is not None:
            request.since.CopyFrom(ct.to_timestamp(since))
        if until is not None:
            request.until.CopyFrom(ct.to_timestamp(until))
        page = self._call(self._audit.GetAuditLog, request, name="GetAuditLog", retry=True)
        return Page(tuple(ct.from_audit_entry(e) for e in page.entries), page.next_page_token)

    # -- tuning ---------------------------------------------------------------------------------

    def create_study(
        self,
        name: str,
        parameters: Sequence[ct.Parameter],
        *,
        direction: str = "maximize",
        metric: str = "",
        constraints: Sequence[ct.Constraint] = (),
        acquisition: str = "log_ei",
        batch: str = "kriging_believer",
        initial_design: str = "sobol",
        initial_trials: int = 0,
        noiseless: bool = False,
        seed: int = 0,
        binding: ct.StudyBinding | None = None,
        max_trials: int = 0,
        description: str = "",
    ) -> ct.Study:
        """Create a study over ``parameters`` (FloatParameter, IntParameter, Categorical) that
        maximizes or minimizes (``direction``) the reported value, or the reported ``metric``,
        subject to ``constraints``. ``acquisition``: log_ei, ei, pi or ucb; ``batch``:
        kriging_believer or local_penalization; ``initial_design``: sobol or latin_hypercube.
        With ``binding`` the study drives a bandit. Not retried (a lost answer would turn into
        ALREADY_EXISTS)."""
        enum = tuning_pb2
        study = tuning_pb2.Study(
            name=name,
            parameters=[ct.to_parameter(p) for p in parameters],
            objective=tuning_pb2.Objective(
                direction=enum.Direction.Value(direction.upper()), metric=metric
            ),
            constraints=[
                tuning_pb2.Constraint(metric=c.metric, max=c.max, min=c.min) for c in constraints
            ],
            optimizer=tuning_pb2.OptimizerConfig(
                acquisition=enum.Acquisition.Value(acquisition.upper()),
                batch=enum.BatchStrategy.Value(batch.upper()),
                initial_design=enum.InitialDesign.Value(initial_design.upper()),
                initial_trials=initial_trials,
                noiseless=noiseless,
                seed=seed,
            ),
            max_trials=max_trials,
            description=description,
        )
        if binding is not None:
            study.binding.CopyFrom(ct.to_binding(binding))
        request = tuning_pb2.CreateStudyRequest(study=study)
        return ct.from_study(
            self._call(self._tuning.CreateStudy, request, name="CreateStudy", retry=False)
        )

    def get_study(self, name: str) -> ct.Study:
        request = tuning_pb2.GetStudyRequest(name=name)
        return ct.from_study(
            self._call(self._tuning.GetStudy, request, name="GetStudy", retry=True)
        )

    def list_studies(self) -> list[ct.Study]:
        """Every study (all pages)."""
        return self._every_page(
            self._tuning.ListStudies,
            lambda page: tuning_pb2.ListStudiesRequest(page=page),
            lambda answer: (ct.from_study(s) for s in answer.studies),
            name="ListStudies",
        )

    def delete_study(self, name: str) -> None:
        request = tuning_pb2.DeleteStudyRequest(name=name)
        self._call(self._tuning.DeleteStudy, request, name="DeleteStudy", retry=False)

    def stop_study(self, name: str) -> ct.Study:
        """Stop suggesting (retried: stopping a stopped study changes nothing)."""
        request = tuning_pb2.StopStudyRequest(name=name)
        return ct.from_study(
            self._call(self._tuning.StopStudy, request, name="StopStudy", retry=True)
        )

    def suggest(self, study: str, count: int = 1, *, request_id: str = "") -> list[ct.Trial]:
        """Up to ``count`` new trials to evaluate. Retried: the client sends a request id
        (``request_id``, or one of its own), and the server answers a retry with the trials of
        the first attempt."""
        request = tuning_pb2.SuggestRequest(
            study=study, count=count, request_id=request_id or uuid.uuid4().hex
        )
        answer = self._call(self._tuning.Suggest, request, name="Suggest", retry=True)
        return [ct.from_trial(t) for t in answer.trials]

    def report(
        self,
        study: str,
        trial: int,
        value: float | None = None,
        *,
        metrics: Mapping[str, float] | None = None,
        failed: bool = False,
        failure: str = "",
        params: Mapping[str, Any] | None = None,
    ) -> ct.Trial:
        """Tell the study how ``trial`` went: its ``value`` (or the objective's metric in
        ``metrics``) and its constraint ``metrics``, or ``failed``. ``trial`` 0 with ``params``
        records an evaluation made outside the study. Retried: the same report twice is
        harmless."""
        request = tuning_pb2.ReportRequest(
            study=study, trial=trial, metrics=metrics or {}, failed=failed, failure=failure
        )
        if value is not None:
            request.value = value
        if params is not None:
            request.params.update(params)
        return ct.from_trial(self._call(self._tuning.Report, request, name="Report", retry=True))

    def list_trials(self, study: str, state: str = "") -> list[ct.Trial]:
        """Every trial of ``study`` by number (all pages); ``state`` "running", "complete" or
        "failed" keeps those only."""
        wanted = ct.TRIAL_STATE_BY_NAME[state] if state else 0
        return self._every_page(
            self._tuning.ListTrials,
            lambda page: tuning_pb2.ListTrialsRequest(
                study=study,
                state=wanted,  # type: ignore[arg-type]
                page=page,
            ),
            lambda answer: (ct.from_trial(t) for t in answer.trials),
            name="ListTrials",
        )

    def best_trial(self, study: str) -> ct.Trial:
        """The best complete trial within the constraints (FailedPrecondition while none)."""
        request = tuning_pb2.BestTrialRequest(study=study)
        return ct.from_trial(
            self._call(self._tuning.BestTrial, request, name="BestTrial", retry=True)
        )


def background_of(sample: Any, seed: int = 0) -> np.ndarray:
    """A background sample from training data: every row, or a seeded draw of
    ``MAX_BACKGROUND_ROWS`` of them (in their order) when there are more."""
    rows = np.asarray(sample, dtype=np.float32)
    if rows.ndim == 2 and len(rows) > MAX_BACKGROUND_ROWS:
        keep = np.random.default_rng(seed).choice(len(rows), MAX_BACKGROUND_ROWS, replace=False)
        rows = rows[np.sort(keep)]
    return rows


def _read_blocks(path: Path, size: int) -> Iterator[bytes]:
    """The bytes of a file in blocks of ``size``, read as they are asked for."""
    with open(path, "rb") as f:
        while block := f.read(size):
            yield block
