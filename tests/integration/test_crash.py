"""kill -9 while many writers are in flight, at a random (seeded) moment, then restart on the same
data dir: every acknowledged write is there (decisions, rewards, feature rows, versions, aliases),
and nothing is there that was never attempted."""

from __future__ import annotations

import contextlib
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from llmopt.client import AlreadyExists, Arm, Client, ClientError, Feature, RetryPolicy
from tests.support import onnx_models
from tests.support.server import ServerProcess

pytestmark = pytest.mark.integration

SEED = 19
BANDIT, FEATURE_SET, MODEL = "crash-bandit", "crash-users", "crash-model"
BANDIT_WRITERS, FEATURE_WRITERS = 4, 2


@dataclass
class Log:
    """What each writer tried and what the server acknowledged, under one lock."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    decisions_tried: int = 0
    decisions: set[str] = field(default_factory=set)  # acknowledged
    rewards_tried: int = 0
    rewards: set[str] = field(default_factory=set)  # acknowledged
    rows: dict[str, float] = field(default_factory=dict)  # acknowledged entity -> value
    versions: set[int] = field(default_factory=set)
    aliases: dict[str, int] = field(default_factory=dict)


def no_retries(proc: ServerProcess) -> Client:
    """A call either answers (acknowledged) or fails once: no retry hides the kill."""
    return Client(proc.address, timeout=5.0, retry=RetryPolicy(attempts=1))


def until_killed(body: Callable[[int], None], stop: threading.Event) -> None:
    i = 0
    while not stop.is_set():
        try:
            body(i)
        except ClientError:
            return  # the server is gone: what was in flight is neither acknowledged nor owed
        i += 1


def bandit_writer(proc: ServerProcess, log: Log, stop: threading.Event) -> None:
    with no_retries(proc) as client:

        def body(_: int) -> None:
            with log.lock:
                log.decisions_tried += 1
            decision = client.select_arm(BANDIT, decision_id=uuid.uuid4().hex)
            with log.lock:
                log.decisions.add(decision.decision_id)
                log.rewards_tried += 1
            client.record_reward(decision.decision_id, 0.75)
            with log.lock:
                log.rewards.add(decision.decision_id)

        until_killed(body, stop)


def feature_writer(proc: ServerProcess, log: Log, stop: threading.Event, writer: int) -> None:
    with no_retries(proc) as client:

        def body(i: int) -> None:
            rows = {f"w{writer}-{i}-{k}": float(i * 10 + k) for k in range(5)}
            client.write_features(FEATURE_SET, {e: {"score": v} for e, v in rows.items()})
            with log.lock:
                log.rows.update(rows)

        until_killed(body, stop)


def registry_writer(proc: ServerProcess, log: Log, stop: threading.Event, onnx: bytes) -> None:
    with no_retries(proc) as client:

        def body(i: int) -> None:
            if i % 3 == 0:
                version = client.upload_onnx(MODEL, onnx).version
                with log.lock:
                    log.versions.add(version)
            else:
                alias = f"pin{i}"
                target = max(log.versions)
                client.set_alias(MODEL, alias, target)
                with log.lock:
                    log.aliases[alias] = target

        until_killed(body, stop)


def test_acknowledged_writes_of_every_kind_survive_kill_9_in_flight(
    server_factory: Callable[..., ServerProcess],
) -> None:
    rng = random.Random(SEED)
    onnx = onnx_models.logistic_regression(0).onnx
    first = server_factory()
    log = Log()
    with Client(first.address) as client:
        client.create_bandit(BANDIT, [Arm(f"arm{i}", model=f"m{i}") for i in range(3)])
        client.create_feature_set(FEATURE_SET, [Feature("score", "float")], entity_key="uid")
        client.create_model(MODEL)
        log.versions.add(client.upload_onnx(MODEL, onnx, alias="champion").version)

    stop = threading.Event()
    writers = [
        *(
            threading.Thread(target=bandit_writer, args=(first, log, stop))
            for _ in range(BANDIT_WRITERS)
        ),
        *(
            threading.Thread(target=feature_writer, args=(first, log, stop, w))
            for w in range(FEATURE_WRITERS)
        ),
        threading.Thread(target=registry_writer, args=(first, log, stop, onnx)),
    ]
    for t in writers:
        t.start()
    time.sleep(rng.uniform(1.0, 2.5))  # a random moment, the writers at full speed
    first.kill()
    stop.set()
    for t in writers:
        t.join(30)
    assert not any(t.is_alive() for t in writers)
    assert len(log.rewards) > 50 and len(log.rows) > 50 and log.aliases  # there was load

    second = server_factory(data_dir=first.data_dir)
    with Client(second.address) as client:
        stats = client.bandit_stats(BANDIT)
        # Every acknowledged decision and reward, and none that was never tried.
        assert len(log.decisions) <= stats.decisions <= log.decisions_tried
        assert len(log.rewards) <= stats.rewards <= log.rewards_tried
        for decision_id in log.rewards:  # each acknowledged reward, one by one
            with pytest.raises(AlreadyExists):
                client.record_reward(decision_id, 0.1)
        for decision_id in log.decisions - log.rewards:  # decided, reward in flight or not sent
            # It exists: a reward is taken, or refused since its own was in flight and made it.
            with contextlib.suppress(AlreadyExists):
                client.record_reward(decision_id, 0.1)

        stored = client.get_features(FEATURE_SET, sorted(log.rows), ["score"])
        assert {e: v["score"] for e, v in stored.items()} == log.rows

        model = client.get_model(MODEL)
        versions = {v.version for v in client.list_versions(MODEL)}
        assert log.versions <= versions
        assert all(model.aliases.get(alias) == v for alias, v in log.aliases.items())
    assert second.faults() == []
