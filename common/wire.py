"""protobuf <-> domain types, and gRPC status codes <-> `Code`: every request and reply is built and read here
(secure aggregation's messages in common/wire_secure.py).

The coordinator's servicer and the client's connection both speak `common.messages` types and call these
converters at the edge (tests/test_layout.py checks they touch no message themselves), so a field added to the
proto is handled in one place. The admin view's converters are server/ops/admin_wire.py.
"""

from __future__ import annotations

import json
from dataclasses import fields

import grpc
from google.protobuf.message import Message

from .messages import (
    MAX_FAILURE_DETAIL_CHARS,
    Action,
    Code,
    FailureReason,
    FailureReport,
    FederationInfo,
    FederationRequest,
    HeartbeatRequest,
    JoinRequest,
    JoinResult,
    SubmitResult,
    Task,
    TaskRequest,
    TrainSettings,
    UpdateRequest,
)
from .proto import federation_pb2 as pb
from .secagg.exchange import SecureAnswer
from .secagg.keys import RoundId
from .spec import PromptConfig, TensorSpec
from .wire_secure import answer_from_proto, answer_to_proto, metrics_from_proto, metrics_to_proto
from .wire_secure import settings_from_proto as secure_from_proto
from .wire_secure import settings_to_proto as secure_to_proto

Reply = Message  # what a servicer method returns: a message built here, serialized by gRPC
# The federation port's gRPC service, named once (from the proto): the gate registers it, health reports on it.
COORDINATOR_SERVICE = pb.DESCRIPTOR.services_by_name["Coordinator"].full_name  # "pfeddc.v1.Coordinator"
_ACTIONS = {Action.TRAIN: pb.TaskReply.TRAIN, Action.WAIT: pb.TaskReply.WAIT, Action.FINISHED: pb.TaskReply.FINISHED}
_ACTIONS_BACK = {v: k for k, v in _ACTIONS.items()}
_REASONS = {
    FailureReason.DIVERGED: pb.FailureReport.DIVERGED, FailureReason.COLLAPSED: pb.FailureReport.COLLAPSED,
    FailureReason.OUT_OF_MEMORY: pb.FailureReport.OUT_OF_MEMORY,
    FailureReason.DATA_UNREADABLE: pb.FailureReport.DATA_UNREADABLE, FailureReason.OTHER: pb.FailureReport.OTHER,
    FailureReason.PEER_REFUSED: pb.FailureReport.PEER_REFUSED,
}


def status_of(code: Code) -> grpc.StatusCode:
    return grpc.StatusCode[code.value]


def code_of(status: grpc.StatusCode | None) -> Code:
    return Code.__members__.get(status.name, Code.UNKNOWN) if status is not None else Code.UNKNOWN


def rpc_code(exc: grpc.RpcError) -> Code:
    """The `Code` of a failed call (grpc's RpcError types `code()` only on its call subclasses)."""
    status = getattr(exc, "code", None)
    return code_of(status() if callable(status) else None)


def rpc_details(exc: grpc.RpcError) -> str:
    details = getattr(exc, "details", None)
    return str(details() if callable(details) else exc)


# ----- tensor specs
def spec_to_proto(spec: list[TensorSpec]) -> list[pb.TensorSpec]:
    return [pb.TensorSpec(name=s.name, shape=list(s.shape), dtype=s.dtype) for s in spec]


def spec_from_proto(msgs: list[pb.TensorSpec]) -> list[TensorSpec]:
    return [TensorSpec(m.name, tuple(int(d) for d in m.shape), m.dtype) for m in msgs]


# ----- settings and metrics: field for field, names taken from the dataclasses (metrics: common/wire_secure.py)
_SETTINGS = tuple(f.name for f in fields(TrainSettings))  # read once: fields() builds its answer on every call


def settings_to_proto(settings: TrainSettings) -> pb.TrainSettings:
    return pb.TrainSettings(**{name: getattr(settings, name) for name in _SETTINGS})


def settings_from_proto(msg: pb.TrainSettings) -> TrainSettings:
    return TrainSettings(**{name: getattr(msg, name) for name in _SETTINGS})


# ----- messages
def task_to_proto(task: Task, out: pb.TaskReply | None = None) -> pb.TaskReply:
    """The reply for `task`, written into `out` when given (a nested field: building a TaskReply and then
    assigning it would copy the payload twice, about 50x slower for an 82 KB payload)."""
    out = pb.TaskReply() if out is None else out
    out.action = _ACTIONS[task.action]
    out.round = task.round
    out.total_rounds = task.total_rounds
    out.global_state = task.payload
    out.global_sha256 = task.sha256
    out.retry_after_s = task.retry_after_s
    out.deadline_s = task.deadline_s
    if task.settings:
        out.settings.CopyFrom(settings_to_proto(task.settings))
    if task.secure:
        secure_to_proto(task.secure, out.secure)
    return out


def task_from_proto(msg: pb.TaskReply) -> Task:
    if msg.action not in _ACTIONS_BACK:
        raise ValueError(f"the coordinator sent an unknown task action {msg.action}")
    action = _ACTIONS_BACK[msg.action]
    return Task(
        action=action, round=msg.round, total_rounds=msg.total_rounds, payload=msg.global_state,
        sha256=msg.global_sha256,
        settings=settings_from_proto(msg.settings) if action == Action.TRAIN else None,
        retry_after_s=msg.retry_after_s, deadline_s=msg.deadline_s,
        secure=secure_from_proto(msg.secure) if msg.HasField("secure") else None,
    )


def info_to_proto(info: FederationInfo) -> pb.FederationInfo:
    return pb.FederationInfo(
        federation_id=info.federation_id, total_rounds=info.total_rounds, current_round=info.current_round,
        model=info.model, prompt_config_json=json.dumps(info.prompt_config.to_dict()), spec=spec_to_proto(info.spec),
        classes_pending=info.classes_pending,
    )


def info_from_proto(msg: pb.FederationInfo) -> FederationInfo:
    return FederationInfo(
        federation_id=msg.federation_id, total_rounds=msg.total_rounds, current_round=msg.current_round,
        model=msg.model, prompt_config=PromptConfig.from_dict(json.loads(msg.prompt_config_json)),
        spec=spec_from_proto(list(msg.spec)), classes_pending=msg.classes_pending,
    )


def join_to_proto(result: JoinResult) -> pb.JoinReply:
    return pb.JoinReply(federation_id=result.federation_id, total_rounds=result.total_rounds,
                        current_round=result.current_round, weight=result.weight)


def join_from_proto(msg: pb.JoinReply) -> JoinResult:
    return JoinResult(msg.federation_id, msg.total_rounds, msg.current_round, msg.weight)


def submit_to_proto(result: SubmitResult) -> pb.UpdateReply:
    reply = pb.UpdateReply(duplicate=result.duplicate, received=result.received, expected=result.expected)
    if result.next_task:
        task_to_proto(result.next_task, reply.next_task)
    return reply


def submit_from_proto(msg: pb.UpdateReply) -> SubmitResult:
    next_task = task_from_proto(msg.next_task) if msg.HasField("next_task") else None
    return SubmitResult(msg.duplicate, msg.received, msg.expected, next_task)


def secure_answer_to_proto(answer: SecureAnswer, next_task: Task | None = None) -> pb.SecAggReply:
    """wire_secure's SecAggReply, with the next task (a TaskReply, this module's) after a DONE that asked for it."""
    reply = answer_to_proto(answer)
    if next_task is not None:
        task_to_proto(next_task, reply.next_task)
    return reply


def secure_answer_from_proto(msg: pb.SecAggReply, rid: RoundId, recipient: str) -> tuple[SecureAnswer, Task | None]:
    return answer_from_proto(msg, rid, recipient), task_from_proto(msg.next_task) if msg.HasField("next_task") else None


# ----- requests: the client builds them with *_to_proto, the coordinator's gate reads them with *_from_proto
def federation_request_to_proto(request: FederationRequest) -> pb.FederationRequest:
    return pb.FederationRequest(client_id=request.client_id)


def federation_request_from_proto(msg: pb.FederationRequest) -> FederationRequest:
    return FederationRequest(msg.client_id)


def join_request_to_proto(request: JoinRequest) -> pb.JoinRequest:
    return pb.JoinRequest(client_id=request.client_id, num_examples=request.num_examples,
                          spec=spec_to_proto(request.spec), capabilities=sorted(request.capabilities),
                          class_names=list(request.class_names), signing_key=request.signing_key)


def join_request_from_proto(msg: pb.JoinRequest) -> JoinRequest:
    return JoinRequest(msg.client_id, msg.num_examples, spec_from_proto(list(msg.spec)), frozenset(msg.capabilities),
                       tuple(msg.class_names), bytes(msg.signing_key))


def task_request_to_proto(request: TaskRequest) -> pb.TaskRequest:
    return pb.TaskRequest(client_id=request.client_id, max_wait_s=request.max_wait_s)


def task_request_from_proto(msg: pb.TaskRequest) -> TaskRequest:
    return TaskRequest(msg.client_id, msg.max_wait_s)


def update_request_to_proto(request: UpdateRequest) -> pb.UpdateRequest:
    return pb.UpdateRequest(client_id=request.client_id, round=request.round, global_state=request.payload,
                            num_examples=request.num_examples, metrics=metrics_to_proto(request.metrics),
                            next_task_wait_s=request.next_task_wait_s)


def update_request_from_proto(msg: pb.UpdateRequest) -> UpdateRequest:
    return UpdateRequest(msg.client_id, msg.round, msg.global_state, msg.num_examples,
                         metrics_from_proto(msg.metrics), msg.next_task_wait_s)


def heartbeat_request_to_proto(request: HeartbeatRequest) -> pb.HeartbeatRequest:
    return pb.HeartbeatRequest(client_id=request.client_id, round=request.round)


def heartbeat_request_from_proto(msg: pb.HeartbeatRequest) -> HeartbeatRequest:
    return HeartbeatRequest(msg.client_id, msg.round)


def heartbeat_reply_to_proto(round_: int) -> pb.HeartbeatReply:
    return pb.HeartbeatReply(round=round_)


def heartbeat_reply_from_proto(msg: pb.HeartbeatReply) -> int:
    return int(msg.round)


# ----- failure reports
def failure_to_proto(report: FailureReport) -> pb.FailureReport:
    return pb.FailureReport(client_id=report.client_id, round=report.round, reason=_REASONS[report.reason],
                            detail=report.detail[:MAX_FAILURE_DETAIL_CHARS], attempt=report.attempt)


def failure_from_proto(msg: pb.FailureReport) -> FailureReport:
    """An unset or unknown reason (a newer client) reads as OTHER."""
    reason = next((r for r, v in _REASONS.items() if v == msg.reason), FailureReason.OTHER)
    return FailureReport(msg.client_id, msg.round, reason, msg.detail, msg.attempt)


def failure_reply_to_proto(result: SubmitResult) -> pb.FailureReply:
    return pb.FailureReply(duplicate=result.duplicate, received=result.received, expected=result.expected)


def failure_reply_from_proto(msg: pb.FailureReply) -> SubmitResult:
    return SubmitResult(msg.duplicate, msg.received, msg.expected)
