"""The federation port's gate: a credential, a size, then a parse, before any of a request's work.

grpc.aio would deserialize a request (and Join convert its spec list) before the servicer could look at the
caller, and every method accepted 64 MiB: an unauthenticated 60 MB Join cost seconds of CPU and gigabytes on
the one event loop. The Coordinator's handlers are therefore registered here (`register`) with a raw-bytes
deserializer, and each call passes, in order:

  1. a credential, whoever it names: under --tokens the bearer token's digest must be one of the tokens';
     under mTLS the handshake verified the chain and the certificate must name someone. Open mode has none
     (its join secret is bound to the client_id, so it is checked once the id is read).
  2. the size, against the method's limit derived from the federation's spec: only SubmitUpdate carries
     tensors; the others are a few KiB (Join: plus what the spec list needs). gRPC core refuses anything
     above the largest limit from the message's length prefix (`max_receive_bytes`), before buffering it.
  3. the parse: undecodable bytes are INVALID_ARGUMENT, logged at a bounded rate (never gRPC's UNKNOWN and
     an error line per request); the message becomes its domain type (its row's reader, server/wire/rpcs.py).
  4. list lengths (a Join's spec) and the client_id's form.
The servicer then binds the client_id to the credential (Authenticator.check) as before.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import grpc
from google.protobuf.message import DecodeError

from ...common import serde, wire
from ...common.ids import MAX_CLIENT_ID_CHARS, client_id_problem
from ...common.logs import Event
from ...common.messages import Code, JoinRequest, Refused
from ...common.secagg.exchange import vector_length
from ...common.secagg.identity import PUBLIC_KEY_BYTES
from ...common.spec import MAX_CLASS_NAME_CHARS, MAX_CLASSES, TensorSpec
from .auth import Authenticator
from .rpcs import RPCS, Size

R = TypeVar("R")
SERVICE_NAME = wire.COORDINATOR_SERVICE
# Requests without tensors: ids, counts, a failure detail of at most 500 characters; far below this.
SMALL_REQUEST_BYTES = 4 * 1024
# Refusals of the same kind are logged at most once per this many seconds, with the count of those skipped.
LOG_INTERVAL_S = 10.0
# A secure round's largest message, besides its masked vector (8 bytes per element at most): the sealed share
# bundles, at most this many bytes per other site (a 202-byte ciphertext, two digests, two ids of up to 128
# characters), for up to this many sites.
SECAGG_BUNDLE_BYTES = 640
SECAGG_MAX_SITES = 2048


def method_limits(spec: list[TensorSpec], secure: bool = False, gathering: bool = False) -> dict[str, int]:
    """The largest request each method may carry, in bytes, for a federation of `spec` (`secure`: with secure
    aggregation; without it SecureAggregate carries nothing worth reading; `gathering`: while the class list is
    gathered from the Joins, which then carry class names)."""
    names = tuple("x" * MAX_CLASS_NAME_CHARS for _ in range(MAX_CLASSES)) if gathering else ()
    join = wire.join_request_to_proto(JoinRequest("x" * MAX_CLIENT_ID_CHARS, 2**62, spec, class_names=names,
                                                  signing_key=b"k" * PUBLIC_KEY_BYTES))
    masked = 8 * vector_length(spec) + SECAGG_BUNDLE_BYTES * SECAGG_MAX_SITES if secure else 0
    extra = {Size.SMALL: 0, Size.JOIN: join.ByteSize(), Size.UPDATE: serde.max_payload_bytes(spec),
             Size.SECURE: masked}
    return {name: extra[rpc.size] + SMALL_REQUEST_BYTES for name, rpc in RPCS.items()}


def max_receive_bytes(spec: list[TensorSpec], secure: bool = False, gathering: bool = False) -> int:
    """gRPC core's receive limit: the largest legitimate request, plus a margin."""
    return max(method_limits(spec, secure, gathering).values()) + 64 * 1024


class BoundedLog:
    """Log an event at most once per `interval_s` per key, saying how many were skipped in between."""

    def __init__(self, log: Callable[..., None], interval_s: float = LOG_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._log = log
        self._interval = interval_s
        self._clock = clock
        self._last: dict[str, float] = {}
        self._skipped: dict[str, int] = {}

    def __call__(self, key: str, event: str, **fields: Any) -> bool:
        now = self._clock()
        if now - self._last.get(key, -self._interval) < self._interval:
            self._skipped[key] = self._skipped.get(key, 0) + 1
            return False
        self._last[key] = now
        self._log(event, **fields, skipped=self._skipped.pop(key, 0))
        return True


class Gate:
    def __init__(self, auth: Authenticator, spec: Callable[[], list[TensorSpec]], log: Callable[..., None],
                 secure: bool = False, gathering: Callable[[], bool] = lambda: False) -> None:
        """`spec`: the federation's current spec, and `gathering` whether it gathers its class list (the spec
        grows once, when the list is fixed)."""
        self.auth = auth
        self._spec = spec
        self._secure = secure
        self._gathering = gathering
        self._limits: tuple[tuple[int, bool], dict[str, int]] = ((-1, False), {})
        self._log = BoundedLog(log)

    @property
    def limits(self) -> dict[str, int]:
        spec = self._spec()
        gathering = self._gathering()
        if self._limits[0] != (len(spec), gathering):
            self._limits = ((len(spec), gathering), method_limits(spec, self._secure, gathering))
        return self._limits[1]

    @property
    def spec_len(self) -> int:
        return len(self._spec())

    def open(self, context: grpc.aio.ServicerContext, method: str, raw: bytes, kind: type[R]) -> R:
        """The request as its domain type `kind`, or `Refused` naming why it was not read."""
        try:
            self.auth.check_caller(context)  # type: ignore[arg-type]  # the aio context has the same accessors
        except Refused as exc:
            self.caller_refused(context, method, exc)
            raise
        limit = self.limits[method]
        if len(raw) > limit:
            self._refused(context, method, f"{method} request of {len(raw)} bytes exceeds the {limit}-byte limit")
            raise Refused(Code.RESOURCE_EXHAUSTED, f"a {method} request of {len(raw)} bytes exceeds this "
                                                   f"federation's {limit}-byte limit for it")
        rpc = RPCS[method]
        message = rpc.request
        try:
            request = rpc.read(message.FromString(raw))
        except DecodeError as exc:
            self._refused(context, method, f"undecodable {method} request: {exc}")
            raise Refused(Code.INVALID_ARGUMENT, f"the {method} request is not a valid "
                                                 f"{message.DESCRIPTOR.full_name} message") from None
        except ValueError as exc:  # parsed, but a value the wire refuses (a key or a share of the wrong form)
            raise Refused(Code.INVALID_ARGUMENT, f"the {method} request is malformed: {exc}") from None
        if not isinstance(request, kind):
            raise TypeError(f"{method} requests read as {type(request).__name__}, not {kind.__name__}")
        if isinstance(request, JoinRequest) and len(request.spec) > self.spec_len:
            raise Refused(Code.INVALID_ARGUMENT, f"the Join lists {len(request.spec)} tensors; the federation's "
                                                 f"spec has {self.spec_len}")
        problem = client_id_problem(getattr(request, "client_id", ""))
        if problem:
            raise Refused(Code.INVALID_ARGUMENT, problem)
        return request

    def caller_refused(self, context: grpc.aio.ServicerContext, method: str, exc: Refused) -> None:
        """A token or certificate refused: the operator hears of it (at a bounded rate), the caller is told why."""
        self._log(f"caller:{exc.code}", Event.CALLER_REFUSED, method=method, code=str(exc.code), peer=context.peer(),
                  reason=exc.message)

    def _refused(self, context: grpc.aio.ServicerContext, method: str, why: str) -> None:
        self._log(method, Event.REQUEST_REFUSED, method=method, peer=context.peer(), reason=why)


def register(server: Any, handlers: dict[str, Callable[..., Any]]) -> None:
    """Register the Coordinator's methods with raw-bytes requests (the servicer parses them, via the gate)."""
    if set(handlers) != set(RPCS):
        raise ValueError(f"handlers {sorted(handlers)} differ from the RPCs of server/wire/rpcs.py {sorted(RPCS)}")
    rpc = {name: grpc.unary_unary_rpc_method_handler(fn, request_deserializer=None,
                                                     response_serializer=RPCS[name].reply.SerializeToString)
           for name, fn in handlers.items()}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, rpc),))
    server.add_registered_method_handlers(SERVICE_NAME, rpc)
