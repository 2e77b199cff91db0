"""The Admin service: the federation's status, to callers holding an admin credential only."""

from __future__ import annotations

import grpc

from ...common import wire
from ...common.logs import Event, get_logger
from ...common.messages import Refused
from ...common.proto import admin_pb2 as admin_pb
from ...common.proto import admin_pb2_grpc as admin_grpc
from ..ops import admin_wire
from ..ops.status import StatusSource
from .auth import Authenticator
from .gate import BoundedLog

log = get_logger("coordinator")
ADMIN_SERVICE_NAME = admin_pb.DESCRIPTOR.services_by_name["Admin"].full_name  # "pfeddc.v1.Admin"


class AdminServicer(admin_grpc.AdminServicer):
    def __init__(self, source: StatusSource, auth: Authenticator) -> None:
        self.source = source
        self.auth = auth
        self._log = BoundedLog(log.warning)

    def GetStatus(self, request: admin_pb.StatusRequest, context: grpc.ServicerContext) -> admin_pb.FederationStatus:
        try:
            self.auth.check_admin(context)
        except Refused as exc:
            self._log(f"admin:{exc.code}", Event.CALLER_REFUSED, method="GetStatus", code=str(exc.code),
                      peer=context.peer(), reason=exc.message)
            context.abort(wire.status_of(exc.code), exc.message)
        return admin_wire.status_to_proto(self.source.status())
