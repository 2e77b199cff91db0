"""The federation port on `grpc.aio`, run on its own event-loop thread and driven like a `grpc.Server`.

Why aio: a waiting client's call is held open until its round opens (push). On the threaded server every held
call pins a worker thread (2,000 threads at 2,000 clients), and waking them all at once costs more than the
rounds' work: with 2,000 calls held and released together, gRPC alone cost 1.9 CPU-s per round threaded and
0.7 on grpc.aio (benchmarks/results/coordinator.md, gRPC-only floors). The
coordinator's servicer is async; the admin and health servicers stay synchronous and run on a small thread
pool (`migration_thread_pool`). The domain logic stays synchronous, pure and thread-safe.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent import futures
from typing import Any, TypeVar

import grpc

from ...common.logs import Event, get_logger
from .gate import BoundedLog

T = TypeVar("T")
# What the server does to each handler as it is registered (e.g. count its calls): (method name, handler) -> handler
Instrument = Callable[[str, grpc.RpcMethodHandler], grpc.RpcMethodHandler]


class AioServer:
    """What app.py needs of a server (register, bind, start, stop), for a grpc.aio server on a loop thread."""

    def __init__(self, options: Sequence[tuple[str, Any]], interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
                 sync_workers: int = 8, instrument: Instrument = lambda _method, handler: handler) -> None:
        """`interceptors` run on every call (a coroutine each); `instrument` wraps each handler once, as it is
        registered, which costs a call nothing beyond the wrapper itself."""
        self._instrument = instrument
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="grpc-aio")
        self._thread.start()
        self._pool = futures.ThreadPoolExecutor(max_workers=sync_workers, thread_name_prefix="grpc-sync")

        async def make() -> grpc.aio.Server:
            return grpc.aio.server(migration_thread_pool=self._pool, options=list(options),
                                   interceptors=list(interceptors) or None)

        self._server = self._run(make())

    def _run(self, coro: Awaitable[T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()  # type: ignore[arg-type]

    def _in_loop(self, fn: Callable[..., T], *args: Any) -> T:
        async def call() -> T:
            return fn(*args)

        return self._run(call())

    # what the generated add_*_to_server functions call; every service's requests are read by `reading`
    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self._in_loop(self._server.add_generic_rpc_handlers, [ReadingHandler(h, self._instrument) for h in handlers])

    def add_registered_method_handlers(self, service: str, handlers: dict[str, grpc.RpcMethodHandler]) -> None:
        handlers = {name: self._instrument(name, reading(h)) for name, h in handlers.items()}
        self._in_loop(self._server.add_registered_method_handlers, service, handlers)  # type: ignore[attr-defined]

    def add_insecure_port(self, address: str) -> int:
        return self._in_loop(self._server.add_insecure_port, address)

    def add_secure_port(self, address: str, credentials: grpc.ServerCredentials) -> int:
        return self._in_loop(self._server.add_secure_port, address, credentials)

    def start(self) -> None:
        self._run(self._server.start())

    def stop(self, grace: float | None = None) -> None:
        """Stop serving (in-flight calls get `grace` seconds), then end the loop thread."""
        if not self.loop.is_running():
            return
        try:
            self._run(self._server.stop(grace))
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(5)
            self._pool.shutdown(wait=False, cancel_futures=True)


class ReadingHandler(grpc.GenericRpcHandler):
    """A service's generic handler whose methods read their requests through `reading`, instrumented. gRPC asks
    it on every call made without the registered-method path (its handlers are built once per method: only
    methods the service knows are remembered, so a stranger's made-up names add nothing)."""

    def __init__(self, inner: grpc.GenericRpcHandler, instrument: Instrument) -> None:
        self._inner = inner
        self._instrument = instrument
        self._built: dict[str, grpc.RpcMethodHandler] = {}

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        built = self._built.get(details.method)
        if built is not None:
            return built
        handler = self._inner.service(details)
        if handler is None:
            return None
        built = self._built[details.method] = self._instrument(details.method.rsplit("/", 1)[-1], reading(handler))
        return built


def reading(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """The handler with its request parsed inside the call: bytes that do not parse are answered
    INVALID_ARGUMENT (gRPC itself would answer an unhandled error), logged at a bounded rate. Handlers that read
    their own bytes (the Coordinator's, through server/wire/gate.py) and streaming requests are left as they are."""
    parse = handler.request_deserializer
    if parse is None or handler.request_streaming:
        return handler
    behavior = handler.unary_unary or handler.unary_stream
    name = getattr(parse, "__qualname__", "request")

    def refuse(context: Any, exc: Exception) -> str:
        _refusals(name, Event.REQUEST_REFUSED, method=name, peer=context.peer(), reason=f"undecodable: {exc}")
        return f"the request is not a valid message ({type(exc).__name__})"

    assert behavior is not None
    wrapped: Callable[..., Any]
    if inspect.isasyncgenfunction(behavior):
        async def read_stream(raw: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            try:
                request = parse(raw)
            except Exception as exc:  # noqa: BLE001  # whatever the parser raises, the bytes are the caller's fault
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, refuse(context, exc))
            async for reply in behavior(request, context):  # type: ignore[arg-type]
                yield reply

        wrapped = read_stream
    elif inspect.iscoroutinefunction(behavior):
        async def read_async(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
            try:
                request = parse(raw)
            except Exception as exc:  # noqa: BLE001
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, refuse(context, exc))
            return await behavior(request, context)  # type: ignore[arg-type]

        wrapped = read_async
    else:
        def read_sync(raw: bytes, context: grpc.ServicerContext) -> Any:
            try:
                request = parse(raw)
            except Exception as exc:  # noqa: BLE001
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, refuse(context, exc))
            return behavior(request, context)

        wrapped = read_sync
    make = grpc.unary_unary_rpc_method_handler if handler.unary_unary else grpc.unary_stream_rpc_method_handler
    return make(wrapped, request_deserializer=None, response_serializer=handler.response_serializer)


log = get_logger("coordinator")
_refusals = BoundedLog(lambda event, **fields: log.warning(event, **fields))  # the logger as configured at the call
