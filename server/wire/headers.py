"""The first look at a call: its headers, before gRPC reads one byte of its message.

Under --tokens a call whose bearer token is missing or not one this coordinator issued (a stranger's, or one
withdrawn from the tokens file) is refused here: the interceptor answers it with a handler that never asks for
the request, so gRPC buffers none of its body however slowly the caller sends it (a caller dripping 10,000
half-sent requests cost the coordinator 250 MB when the check ran in the handler, after the body was read).
Whose token it is, and the client id it must match, is still the gate's check (server/wire/gate.py), once
the request is read. Certificates are checked earlier still, at the TLS handshake (mTLS). The health service
stays open: probes carry no credential.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from ...common.logs import Event, get_logger
from ...common.transport import token_digest
from .auth import bearer_of
from .gate import BoundedLog

log = get_logger("coordinator")
OPEN_SERVICES = ("/grpc.health.v1.Health/",)


class CredentialHeaders(grpc.aio.ServerInterceptor):
    def __init__(self, digests: frozenset[str] | None,
                 count: Callable[[str, grpc.StatusCode], None] = lambda _method, _code: None) -> None:
        """`digests`: the SHA-256 digests of the issued tokens (None: no tokens, nothing to check here); `count`:
        told (method, code) of each call refused here (the metrics count every call under the code it got)."""
        self._digests = digests
        self._count = count
        self._log = BoundedLog(lambda event, **fields: log.warning(event, **fields))

    async def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails],
                                                             Awaitable[grpc.RpcMethodHandler]],
                                details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        method = details.method
        if self._digests is None or method.startswith(OPEN_SERVICES):
            return await continuation(details)
        bearer = bearer_of(details.invocation_metadata)
        if bearer is None:
            return self._refuse(method, "this coordinator requires a client token (--token)")
        if token_digest(bearer) not in self._digests:
            return self._refuse(method, "the token is not one this coordinator issued")
        return await continuation(details)

    def _refuse(self, method: str, why: str) -> grpc.RpcMethodHandler:
        name = method.rsplit("/", 1)[-1]
        self._log(f"headers:{why}", Event.CALLER_REFUSED, method=name, code="UNAUTHENTICATED", reason=why,
                  at="headers")
        self._count(name, grpc.StatusCode.UNAUTHENTICATED)

        async def refuse(_requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, why)  # the request stream is never read

        return grpc.stream_unary_rpc_method_handler(refuse)
