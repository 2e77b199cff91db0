"""The gRPC face of the federation: authenticate, convert with the wire layer, call the domain.

Every refusal becomes a status code in one place (`_call`); the conversions live in common/wire.py.
A GetTask (or a SubmitUpdate asking for its next task) that would be told to WAIT is held open until the
federation changes (server/longpoll.py), so a client learns of a new round the moment it opens.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import TypeVar

import grpc

from ..common import wire
from ..common.messages import Action, FederationInfo, JoinResult, Refused, Task
from ..common.proto import federation_pb2 as pb
from ..common.proto import federation_pb2_grpc as pb_grpc
from ..common.spec import PromptConfig
from ..common.transport import JOIN_SECRET_METADATA_KEY
from .auth import Authenticator
from .federation import Federation
from .longpoll import MAX_HOLD_S

T = TypeVar("T")


class CoordinatorServicer(pb_grpc.CoordinatorServicer):
    def __init__(self, federation: Federation, auth: Authenticator, federation_id: str, model: str,
                 prompt_config: PromptConfig) -> None:
        self.federation, self.auth, self.federation_id = federation, auth, federation_id
        self.model, self.prompt_config = model, prompt_config

    def _call(self, context: grpc.ServicerContext, client_id: str, fn: Callable[[], T], bound: bool = True) -> T:
        """Authenticate, run `fn`, map a refusal to its status. `bound`: in open mode, the caller must hold the
        join secret bound to `client_id` (every call but GetFederation and Join, which binds it)."""
        try:
            self.auth.check(context, client_id)
            if bound and not self.auth.enabled:
                self.federation.authorize(client_id, _join_secret(context))
            return fn()
        except Refused as exc:
            context.abort(wire.status_of(exc.code), exc.message)
            raise AssertionError("unreachable") from None  # abort raises

    def _hold(self, context: grpc.ServicerContext, client_id: str, max_wait_s: float) -> Task:
        """The client's task; while it is WAIT, hold the call until the federation changes or the wait ends."""
        fed = self.federation
        remaining = context.time_remaining()
        wait_s = min(max_wait_s, MAX_HOLD_S, (remaining - 0.5) if remaining is not None else MAX_HOLD_S)
        deadline, call = time.monotonic() + wait_s, _HeldCall()
        watching = False
        task: Task | None = None
        while True:
            version = fed.changes.version
            task = task or fed.task(client_id)
            left = deadline - time.monotonic()
            if task.action != Action.WAIT or left <= 0 or call.ended:
                break
            if not watching:
                def on_done() -> None:  # runs when the call ends; wakes the waiters only if it ended while held
                    call.ended = True
                    if call.waiting:
                        fed.changes.wake()

                context.add_callback(on_done)
                watching = True
            backoff = fed.backoff_left(client_id)
            call.waiting = True
            try:
                held = fed.changes.wait(version, min(left, backoff) if backoff > 0 else left, call)
            finally:
                call.waiting = False
            if not held:
                return task  # too many held calls (or stopping): answer at once, the client polls
            task = None
        return replace(task, retry_after_s=fed.backoff_left(client_id)) if task.action == Action.WAIT else task

    def GetFederation(self, request: pb.FederationRequest, context: grpc.ServicerContext) -> pb.FederationInfo:
        self._call(context, request.client_id, lambda: None, bound=False)
        fed = self.federation
        return wire.info_to_proto(FederationInfo(self.federation_id, fed.config.rounds, fed.round, self.model,
                                                 self.prompt_config, fed.spec))

    def Join(self, request: pb.JoinRequest, context: grpc.ServicerContext) -> pb.JoinReply:
        spec = wire.spec_from_proto(list(request.spec))
        fed = self.federation
        secret = _join_secret(context) if not self.auth.enabled else None
        weight = self._call(context, request.client_id,
                            lambda: fed.join(request.client_id, request.num_examples, spec, secret), bound=False)
        return wire.join_to_proto(JoinResult(self.federation_id, fed.config.rounds, fed.round, weight))

    def GetTask(self, request: pb.TaskRequest, context: grpc.ServicerContext) -> pb.TaskReply:
        client_id, fed = request.client_id, self.federation
        if request.max_wait_s > 0:
            task = self._call(context, client_id, lambda: self._hold(context, client_id, request.max_wait_s))
        else:
            task = self._call(context, client_id, lambda: fed.task(client_id))
        return wire.task_to_proto(task)

    def SubmitUpdate(self, request: pb.UpdateRequest, context: grpc.ServicerContext) -> pb.UpdateReply:
        metrics = wire.metrics_from_proto(request.metrics)
        client_id, fed = request.client_id, self.federation
        result = self._call(context, client_id, lambda: fed.submit(
            client_id, request.round, request.global_state, request.num_examples, metrics))
        if request.next_task_wait_s > 0:
            next_task = self._call(context, client_id, lambda: self._hold(context, client_id, request.next_task_wait_s))
            result = replace(result, next_task=next_task)
        return wire.submit_to_proto(result)

    def ReportFailure(self, request: pb.FailureReport, context: grpc.ServicerContext) -> pb.FailureReply:
        reason = wire.reason_from_proto(request.reason)
        result = self._call(context, request.client_id, lambda: self.federation.report_failure(
            request.client_id, request.round, reason, request.detail))
        return wire.failure_reply_to_proto(result)


class _HeldCall:
    """Flags of one held call (plain attributes: an Event per call costs more than the call's own work)."""

    __slots__ = ("ended", "waiting")

    def __init__(self) -> None:
        self.ended = False  # the RPC ended (cancelled, deadline, server stopping)
        self.waiting = False


def _join_secret(context: grpc.ServicerContext) -> str | None:
    for key, value in context.invocation_metadata():
        if key == JOIN_SECRET_METADATA_KEY and isinstance(value, str):
            return value
    return None
