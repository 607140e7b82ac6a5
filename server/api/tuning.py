"""llmopt.v1.Tuning servicer: converts, calls ``tuning.TuningService``, converts back."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llmopt.api import convert_tuning as conv
from llmopt.api.binding import ServiceBinding, service_name
from llmopt.gen.llmopt.v1 import tuning_pb2 as pb
from llmopt.gen.llmopt.v1 import tuning_pb2_grpc
from llmopt.tuning import TuningService

if TYPE_CHECKING:
    from llmopt.composition import Services


class TuningServicer(tuning_pb2_grpc.TuningServicer):
    def __init__(self, tuning: TuningService) -> None:
        self._tuning = tuning

    def CreateStudy(self, request: pb.CreateStudyRequest, context: Any) -> Any:
        return conv.to_study(self._tuning.create_study(conv.from_study(request.study)))

    def GetStudy(self, request: pb.GetStudyRequest, context: Any) -> Any:
        return conv.to_study(self._tuning.get_study(request.name))

    def ListStudies(self, request: pb.ListStudiesRequest, context: Any) -> Any:
        studies, token = self._tuning.list_studies(request.page.page_size, request.page.page_token)
        return pb.ListStudiesResponse(
            studies=[conv.to_study(s) for s in studies], next_page_token=token
        )

    def DeleteStudy(self, request: pb.DeleteStudyRequest, context: Any) -> Any:
        self._tuning.delete_study(request.name)
        return pb.DeleteStudyResponse()

    def Suggest(self, request: pb.SuggestRequest, context: Any) -> Any:
        trials = self._tuning.suggest(request.study, request.count, request.request_id)
        return pb.SuggestResponse(trials=[conv.to_trial(t) for t in trials])

    def Report(self, request: pb.ReportRequest, context: Any) -> Any:
        trial = self._tuning.report(
            request.study,
            request.trial,
            value=request.value if request.HasField("value") else None,
            metrics=dict(request.metrics),
            failed=request.failed,
            failure=request.failure,
            params=conv.from_params(request.params) if request.HasField("params") else None,
        )
        return conv.to_trial(trial)

    def ListTrials(self, request: pb.ListTrialsRequest, context: Any) -> Any:
        trials, token = self._tuning.list_trials(
            request.study,
            conv.from_trial_state(request.state),
            request.page.page_size,
            request.page.page_token,
        )
        return pb.ListTrialsResponse(
            trials=[conv.to_trial(t) for t in trials], next_page_token=token
        )

    def BestTrial(self, request: pb.BestTrialRequest, context: Any) -> Any:
        return conv.to_trial(self._tuning.best_trial(request.study))

    def StopStudy(self, request: pb.StopStudyRequest, context: Any) -> Any:
        return conv.to_study(self._tuning.stop_study(request.name))


def bind(services: Services) -> ServiceBinding:
    return ServiceBinding(
        service_name(pb, "Tuning"),
        tuning_pb2_grpc.add_TuningServicer_to_server,
        TuningServicer(services.tuning),
    )
