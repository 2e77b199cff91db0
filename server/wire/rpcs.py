"""The federation port's RPCs, one row each: besides its proto and its handler, all a new RPC declares.

From this table come the handlers' registration (server/wire/gate.py `register`), the gate's parse and size limit,
and who may call it: every call presents the caller's credential (a token or a certificate, when the coordinator
requires them); in open mode a `bound` call must also carry the join secret bound to its client id at its first
Join (GetFederation and Join come before any binding). tests/server/test_gate.py checks the rows against the
proto's service, method by method.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from google.protobuf.message import Message

from ...common import wire, wire_secure
from ...common.proto import federation_pb2 as pb


class Size(StrEnum):
    """What bounds a request's size (server/wire/gate.py `method_limits` turns it into bytes)."""

    SMALL = "small"  # ids, counts, a failure detail
    JOIN = "join"  # the spec's list (and, while the class list is gathered, class names)
    UPDATE = "update"  # a safetensors payload of the federation's spec
    SECURE = "secure"  # a masked vector and sealed shares (nothing worth reading without secure aggregation)


@dataclass(frozen=True)
class Rpc:
    request: type[Message]
    read: Callable[[Any], object]  # common/wire.py: the request -> the domain type the handler receives
    reply: type[Message]
    size: Size = Size.SMALL
    bound: bool = True  # open mode: the caller must hold the join secret bound to its client id


RPCS: dict[str, Rpc] = {
    "GetFederation": Rpc(pb.FederationRequest, wire.federation_request_from_proto, pb.FederationInfo, bound=False),
    "Join": Rpc(pb.JoinRequest, wire.join_request_from_proto, pb.JoinReply, Size.JOIN, bound=False),
    "GetTask": Rpc(pb.TaskRequest, wire.task_request_from_proto, pb.TaskReply),
    "SubmitUpdate": Rpc(pb.UpdateRequest, wire.update_request_from_proto, pb.UpdateReply, Size.UPDATE),
    "ReportFailure": Rpc(pb.FailureReport, wire.failure_from_proto, pb.FailureReply),
    "Heartbeat": Rpc(pb.HeartbeatRequest, wire.heartbeat_request_from_proto, pb.HeartbeatReply),
    "SecureAggregate": Rpc(pb.SecAggRequest, wire_secure.step_from_proto, pb.SecAggReply, Size.SECURE),
}
