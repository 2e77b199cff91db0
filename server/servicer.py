"""The gRPC face of the federation: decode, authenticate, call the domain, encode; errors mapped in one place."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import grpc

from pfeddc.common.proto import federation_pb2 as pb
from pfeddc.common.proto import federation_pb2_grpc as pb_grpc
from pfeddc.common.spec import PromptConfig, TensorSpec
from pfeddc.server.auth import Authenticator
from pfeddc.server.federation import Code, Federation, Refused

_STATUS = {
    Code.INVALID: grpc.StatusCode.INVALID_ARGUMENT,
    Code.PRECONDITION: grpc.StatusCode.FAILED_PRECONDITION,
    Code.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    Code.EXISTS: grpc.StatusCode.ALREADY_EXISTS,
    Code.TOO_LARGE: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Code.PERMISSION: grpc.StatusCode.PERMISSION_DENIED,
    Code.UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
}
_ACTIONS = {"train": pb.TaskReply.TRAIN, "wait": pb.TaskReply.WAIT, "finished": pb.TaskReply.FINISHED}
_METRICS = ("train_loss", "accuracy_before", "accuracy_after", "num_test_examples", "train_seconds")
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
            context.abort(_STATUS[exc.code], exc.message)
            raise AssertionError("unreachable") from None  # abort raises

    def GetFederation(self, request: pb.FederationRequest, context: grpc.ServicerContext) -> pb.FederationInfo:
        self._call(context, request.client_id, lambda: None)
        fed = self.federation
        return pb.FederationInfo(
            federation_id=self.federation_id, total_rounds=fed.config.rounds, current_round=fed.round,
            model=self.model, prompt_config_json=json.dumps(self.prompt_config.to_dict()),
            spec=[s.to_proto() for s in fed.spec],
        )

    def Join(self, request: pb.JoinRequest, context: grpc.ServicerContext) -> pb.JoinReply:
        spec = [TensorSpec.from_proto(s) for s in request.spec]
        fed = self.federation
        self._call(context, request.client_id, lambda: fed.join(request.client_id, request.num_examples, spec))
        return pb.JoinReply(federation_id=self.federation_id, total_rounds=fed.config.rounds,
                            current_round=fed.round)

    def GetTask(self, request: pb.TaskRequest, context: grpc.ServicerContext) -> pb.TaskReply:
        task = self._call(context, request.client_id, lambda: self.federation.task(request.client_id))
        settings: dict[str, Any] = task.settings
        return pb.TaskReply(
            action=_ACTIONS[task.action], round=task.round, total_rounds=task.total_rounds,
            global_state=task.payload, global_sha256=task.sha256,
            settings=pb.TrainSettings(**settings) if settings else None,
            retry_after_s=task.retry_after_s, deadline_s=task.deadline_s,
        )

    def SubmitUpdate(self, request: pb.UpdateRequest, context: grpc.ServicerContext) -> pb.UpdateReply:
        metrics = {k: float(getattr(request.metrics, k)) for k in _METRICS}
        result = self._call(context, request.client_id, lambda: self.federation.submit(
            request.client_id, request.round, request.global_state, request.num_examples, metrics))
        return pb.UpdateReply(duplicate=result.duplicate, received=result.received, expected=result.expected)
