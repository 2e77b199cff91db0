"""The gRPC face of the federation: authenticate, convert with the wire layer, call the domain.

Every refusal becomes a status code in one place (`_call`); the conversions live in common/wire.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import grpc

from ..common import wire
from ..common.messages import FederationInfo, JoinResult, Refused
from ..common.proto import federation_pb2 as pb
from ..common.proto import federation_pb2_grpc as pb_grpc
from ..common.spec import PromptConfig
from .auth import Authenticator
from .federation import Federation

T = TypeVar("T")


class CoordinatorServicer(pb_grpc.CoordinatorServicer):
    def __init__(self, federation: Federation, auth: Authenticator, federation_id: str, model: str,
                 prompt_config: PromptConfig) -> None:
        self.federation, self.auth, self.federation_id = federation, auth, federation_id
        self.model, self.prompt_config = model, prompt_config

    def _call(self, context: grpc.ServicerContext, client_id: str, fn: Callable[[], T]) -> T:
        try:
            self.auth.check(context, client_id)
            return fn()
        except Refused as exc:
            context.abort(wire.status_of(exc.code), exc.message)
            raise AssertionError("unreachable") from None  # abort raises

    def GetFederation(self, request: pb.FederationRequest, context: grpc.ServicerContext) -> pb.FederationInfo:
        self._call(context, request.client_id, lambda: None)
        fed = self.federation
        return wire.info_to_proto(FederationInfo(self.federation_id, fed.config.rounds, fed.round, self.model,
                                                 self.prompt_config, fed.spec))

    def Join(self, request: pb.JoinRequest, context: grpc.ServicerContext) -> pb.JoinReply:
        spec = wire.spec_from_proto(list(request.spec))
        fed = self.federation
        self._call(context, request.client_id, lambda: fed.join(request.client_id, request.num_examples, spec))
        return wire.join_to_proto(JoinResult(self.federation_id, fed.config.rounds, fed.round))

    def GetTask(self, request: pb.TaskRequest, context: grpc.ServicerContext) -> pb.TaskReply:
        task = self._call(context, request.client_id, lambda: self.federation.task(request.client_id))
        return wire.task_to_proto(task)

    def SubmitUpdate(self, request: pb.UpdateRequest, context: grpc.ServicerContext) -> pb.UpdateReply:
        metrics = wire.metrics_from_proto(request.metrics)
        result = self._call(context, request.client_id, lambda: self.federation.submit(
            request.client_id, request.round, request.global_state, request.num_examples, metrics))
        return wire.submit_to_proto(result)
