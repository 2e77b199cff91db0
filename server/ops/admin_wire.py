"""protobuf <-> the admin view (protos/pfeddc/v1/admin.proto): what `pfeddc-server status` and the page read."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

from ...common.proto import admin_pb2 as admin_pb
from ...common.wire import metrics_from_proto, metrics_to_proto
from ..round.incidents import Incident, IncidentKind
from .status_doc import ClientState, ClientStatus, FederationStatus, Phase

E = TypeVar("E")
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
