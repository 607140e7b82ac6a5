"""llmopt.v1.Bandits servicer: convert, call ``BanditService``, convert back."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from llmopt.api import convert_bandits as cb
from llmopt.api.binding import ServiceBinding, answers_serialized, service_name
from llmopt.api.convert import from_request_context
from llmopt.bandits.arms import Arm
from llmopt.bandits.service import BanditService
from llmopt.gen.llmopt.v1 import bandits_pb2, bandits_pb2_grpc

if TYPE_CHECKING:
    from llmopt.composition import Services

MAX_CACHED_ARMS = 10_000


class BanditsServicer(bandits_pb2_grpc.BanditsServicer):
    def __init__(self, service: BanditService) -> None:
        self._service = service
        # Serialized Arm messages by arm object (arms are immutable): SelectArm answers include
        # them as they are. Holding the arm keeps its id() from being reused.
        self._arm_bytes: dict[int, tuple[Arm, bytes]] = {}

    def _arm_answer(self, arm: Arm) -> bytes:
        cached = self._arm_bytes.get(id(arm))
        if cached is not None and cached[0] is arm:
            return cached[1]
        if len(self._arm_bytes) >= MAX_CACHED_ARMS:
            self._arm_bytes.clear()
        data = cb.to_arm(arm).SerializeToString()
        self._arm_bytes[id(arm)] = (arm, data)
        return data

    def CreateBandit(self, request: bandits_pb2.CreateBanditRequest, context: Any) -> Any:
        return cb.to_bandit(self._service.create_bandit(cb.from_bandit(request.bandit)))

    def GetBandit(self, request: bandits_pb2.GetBanditRequest, context: Any) -> Any:
        return cb.to_bandit(self._service.get_bandit(request.name))

    def ListBandits(self, request: bandits_pb2.ListBanditsRequest, context: Any) -> Any:
        infos, token = self._service.list_bandits(request.page.page_size, request.page.page_token)
        return bandits_pb2.ListBanditsResponse(
            bandits=[cb.to_bandit(i) for i in infos], next_page_token=token
        )

    def DeleteBandit(self, request: bandits_pb2.DeleteBanditRequest, context: Any) -> Any:
        self._service.delete_bandit(request.name)
        return bandits_pb2.DeleteBanditResponse()

    def AddArm(self, request: bandits_pb2.AddArmRequest, context: Any) -> Any:
        return cb.to_bandit(self._service.add_arm(request.bandit, cb.from_arm(request.arm)))

    def RemoveArm(self, request: bandits_pb2.RemoveArmRequest, context: Any) -> Any:
        return cb.to_bandit(self._service.remove_arm(request.bandit, request.arm_id))

    @answers_serialized
    def SelectArm(self, request: bandits_pb2.SelectArmRequest, context: Any) -> bytes:
        """Answers a serialized Decision (see ``convert_bandits.decision_answer``)."""
        decision = self._service.select_arm(
            request.bandit,
            context=from_request_context(request.context) if request.HasField("context") else None,
            vector=np.array(request.context_vector, dtype=np.float64)
            if len(request.context_vector)
            else None,
            excluded=request.excluded_arms,
            decision_id=request.decision_id,
            entity_ids=request.entity_ids,
            explain=request.explain,
        )
        return cb.decision_answer(decision, self._arm_answer)

    @answers_serialized
    def RecordReward(self, request: bandits_pb2.RecordRewardRequest, context: Any) -> bytes:
        """Answers a serialized RecordRewardResponse (see ``convert_bandits.reward_answer``)."""
        which = request.WhichOneof("value")
        receipt = self._service.record_reward(
            request.decision_id,
            reward=request.reward if which == "reward" else None,
            outcome=cb.from_outcome(request.outcome) if which == "outcome" else None,
        )
        return cb.reward_answer(receipt)

    def GetStats(self, request: bandits_pb2.GetStatsRequest, context: Any) -> Any:
        return cb.to_bandit_stats(self._service.stats(request.bandit))

    def GetDecision(self, request: bandits_pb2.GetDecisionRequest, context: Any) -> Any:
        decision = self._service.get_decision(request.decision_id, explain=request.explain)
        return cb.to_logged_decision(decision)

    def ListDecisions(self, request: bandits_pb2.ListDecisionsRequest, context: Any) -> Any:
        bandit, start, end, page_size, page_token = cb.from_list_decisions(request)
        decisions, token = self._service.list_decisions(bandit, start, end, page_size, page_token)
        return bandits_pb2.ListDecisionsResponse(
            decisions=[cb.to_logged_decision(d) for d in decisions], next_page_token=token
        )

    def GetArmEstimates(self, request: bandits_pb2.GetArmEstimatesRequest, context: Any) -> Any:
        return cb.to_arm_estimates(self._service.arm_estimates(request.bandit))


def bind(services: Services) -> ServiceBinding:
    return ServiceBinding(
        service_name(bandits_pb2, "Bandits"),
        bandits_pb2_grpc.add_BanditsServicer_to_server,
        BanditsServicer(services.bandits),
    )
