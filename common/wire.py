"""protobuf <-> domain types, and gRPC status codes <-> `Code`: with wire_secure.py (secure aggregation's
messages), the only module that reads generated stubs.

The coordinator's servicer and the client's connection both speak `common.messages` types and call these
converters at the edge, so a field added to the proto is handled in one place.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import fields
from typing import TypeVar

import grpc

from .messages import (
    MAX_FAILURE_DETAIL_CHARS,
    Action,
    Code,
    FailureReason,
    FederationInfo,
    JoinResult,
    Metrics,
    SubmitResult,
    Task,
    TrainSettings,
)
from .proto import admin_pb2 as admin_pb
from .proto import federation_pb2 as pb
from .spec import PromptConfig, TensorSpec
from .status import ClientState, ClientStatus, FederationStatus, Incident, IncidentKind, Phase
from .wire_secure import settings_from_proto as secure_from_proto
from .wire_secure import settings_to_proto as secure_to_proto

_ACTIONS = {Action.TRAIN: pb.TaskReply.TRAIN, Action.WAIT: pb.TaskReply.WAIT, Action.FINISHED: pb.TaskReply.FINISHED}
_ACTIONS_BACK = {v: k for k, v in _ACTIONS.items()}
_REASONS = {
    FailureReason.DIVERGED: pb.FailureReport.DIVERGED, FailureReason.COLLAPSED: pb.FailureReport.COLLAPSED,
    FailureReason.OUT_OF_MEMORY: pb.FailureReport.OUT_OF_MEMORY,
    FailureReason.DATA_UNREADABLE: pb.FailureReport.DATA_UNREADABLE, FailureReason.OTHER: pb.FailureReport.OTHER,
}
E = TypeVar("E")


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


# ----- settings and metrics: field for field, names taken from the dataclasses
def settings_to_proto(settings: TrainSettings) -> pb.TrainSettings:
    return pb.TrainSettings(**{f.name: getattr(settings, f.name) for f in fields(TrainSettings)})


def settings_from_proto(msg: pb.TrainSettings) -> TrainSettings:
    return TrainSettings(**{f.name: getattr(msg, f.name) for f in fields(TrainSettings)})


def metrics_to_proto(metrics: Metrics) -> pb.Metrics:
    return pb.Metrics(**{f.name: getattr(metrics, f.name) for f in fields(Metrics)})


def metrics_from_proto(msg: pb.Metrics) -> Metrics:
    return Metrics(**{f.name: getattr(msg, f.name) for f in fields(Metrics)})


# ----- messages
def task_to_proto(task: Task, out: pb.TaskReply | None = None) -> pb.TaskReply:
    """The reply for `task`, written into `out` when given (a nested field: building a TaskReply and then
    assigning it would copy the payload twice, about 50x slower for an 82 KB payload)."""
    out = pb.TaskReply() if out is None else out
    out.action, out.round, out.total_rounds = _ACTIONS[task.action], task.round, task.total_rounds
    out.global_state, out.global_sha256 = task.payload, task.sha256
    out.retry_after_s, out.deadline_s = task.retry_after_s, task.deadline_s
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
    )


def info_from_proto(msg: pb.FederationInfo) -> FederationInfo:
    return FederationInfo(
        federation_id=msg.federation_id, total_rounds=msg.total_rounds, current_round=msg.current_round,
        model=msg.model, prompt_config=PromptConfig.from_dict(json.loads(msg.prompt_config_json)),
        spec=spec_from_proto(list(msg.spec)),
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


# ----- failure reports
def failure_to_proto(client_id: str, round_: int, reason: FailureReason, detail: str) -> pb.FailureReport:
    return pb.FailureReport(client_id=client_id, round=round_, reason=_REASONS[reason],
                            detail=detail[:MAX_FAILURE_DETAIL_CHARS])


def reason_from_proto(value: int) -> FailureReason:
    """The domain reason of a report; an unset or unknown value (a newer client) reads as OTHER."""
    return next((r for r, v in _REASONS.items() if v == value), FailureReason.OTHER)


def failure_reply_to_proto(result: SubmitResult) -> pb.FailureReply:
    return pb.FailureReply(duplicate=result.duplicate, received=result.received, expected=result.expected)


def failure_reply_from_proto(msg: pb.FailureReply) -> SubmitResult:
    return SubmitResult(msg.duplicate, msg.received, msg.expected)


# ----- the admin view (protos/pfeddc/v1/admin.proto)
_PHASES = {Phase.WAITING: admin_pb.FederationStatus.WAITING, Phase.TRAINING: admin_pb.FederationStatus.TRAINING,
           Phase.FINISHED: admin_pb.FederationStatus.FINISHED, Phase.ABORTED: admin_pb.FederationStatus.ABORTED}
_STATES = {ClientState.TRAINING: admin_pb.ClientStatus.TRAINING, ClientState.SUBMITTED: admin_pb.ClientStatus.SUBMITTED,
           ClientState.IDLE: admin_pb.ClientStatus.IDLE, ClientState.OFFLINE: admin_pb.ClientStatus.OFFLINE,
           ClientState.FAILED: admin_pb.ClientStatus.FAILED}


def _back(table: Mapping[E, int], value: int, what: str) -> E:
    for domain, proto in table.items():
        if proto == value:
            return domain
    raise ValueError(f"the coordinator sent an unknown {what} {value}")


def status_to_proto(status: FederationStatus) -> admin_pb.FederationStatus:
    clients = [admin_pb.ClientStatus(
        client_id=c.client_id, state=_STATES[c.state], num_examples=c.num_examples,
        rounds_participated=c.rounds_participated, last_seen_s=c.last_seen_s, last_round=c.last_round,
        last_metrics=metrics_to_proto(c.last_metrics) if c.last_metrics else None, failure=c.failure)
        for c in status.clients]
    incidents = [admin_pb.Incident(ago_s=i.ago_s, round=i.round, attempt=i.attempt, kind=str(i.kind),
                                   client_id=i.client_id, reason=i.reason) for i in status.incidents]
    return admin_pb.FederationStatus(
        federation_id=status.federation_id, model=status.model, method=status.method, phase=_PHASES[status.phase],
        round=status.round, total_rounds=status.total_rounds, min_clients=status.min_clients,
        sampled=status.sampled, received=status.received, deadline_s=status.deadline_s,
        online_window_s=status.online_window_s, uptime_s=status.uptime_s, version=status.version, clients=clients,
        attempt=status.attempt, max_retries=status.max_retries, incidents=incidents, aborted=status.aborted or "")


def status_from_proto(msg: admin_pb.FederationStatus) -> FederationStatus:
    clients = tuple(ClientStatus(
        client_id=c.client_id, state=_back(_STATES, c.state, "client state"), num_examples=c.num_examples,
        rounds_participated=c.rounds_participated, last_seen_s=c.last_seen_s if c.HasField("last_seen_s") else None,
        last_round=c.last_round,
        last_metrics=metrics_from_proto(c.last_metrics) if c.HasField("last_metrics") else None, failure=c.failure)
        for c in msg.clients)
    incidents = tuple(Incident(ago_s=i.ago_s, round=i.round, attempt=i.attempt, kind=_incident_kind(i.kind),
                               client_id=i.client_id, reason=i.reason) for i in msg.incidents)
    phase = _back(_PHASES, msg.phase, "federation phase")
    # earlier coordinators sent total_rounds + 1 once finished
    round_ = min(msg.round, msg.total_rounds) if phase == Phase.FINISHED else msg.round
    return FederationStatus(
        federation_id=msg.federation_id, model=msg.model, method=msg.method,
        phase=phase, round=round_, total_rounds=msg.total_rounds,
        min_clients=msg.min_clients, sampled=msg.sampled, received=msg.received,
        deadline_s=msg.deadline_s if msg.HasField("deadline_s") else None, online_window_s=msg.online_window_s,
        uptime_s=msg.uptime_s, version=msg.version, clients=clients, attempt=msg.attempt,
        max_retries=msg.max_retries, incidents=incidents, aborted=msg.aborted or None)


def _incident_kind(value: str) -> IncidentKind:
    try:
        return IncidentKind(value)
    except ValueError:
        raise ValueError(f"the coordinator sent an unknown incident kind {value!r}") from None
