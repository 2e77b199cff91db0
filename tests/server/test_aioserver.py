"""The aio server's registration: each handler is instrumented once, never per call, on both lookup paths; where an
update is decoded (on the loop or a worker thread, by its size)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tests_support import StartCoordinator

from pfeddc.client.connection import Backoff, Connection, global_tensors
from pfeddc.common import serde
from pfeddc.common.backbones import HUB_DEFAULT_MODEL
from pfeddc.common.messages import Metrics
from pfeddc.server.app import RunningServer
from pfeddc.server.ops.checkpoint import Checkpoint
from pfeddc.server.ops.metrics import CoordinatorMetrics
from pfeddc.server.round.federation import Federation
from pfeddc.server.wire.aioserver import AioServer, ReadingHandler
from pfeddc.server.wire.servicer import INLINE_UPDATE_BYTES


class Details(grpc.HandlerCallDetails):
    def __init__(self, method: str) -> None:
        self.method = method
        self.invocation_metadata = ()


def test_generic_lookup_builds_each_known_method_once_and_remembers_no_unknown_one() -> None:
    built: list[str] = []

    def instrument(method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        built.append(method)
        return handler

    async def echo(request: bytes, _context: Any) -> bytes:
        return request

    inner = grpc.method_handlers_generic_handler("t.S", {"M": grpc.unary_unary_rpc_method_handler(echo)})
    handler = ReadingHandler(inner, instrument)
    first = handler.service(Details("/t.S/M"))
    assert first is not None and handler.service(Details("/t.S/M")) is first
    assert built == ["M"]
    for i in range(100):  # a stranger's made-up names: answered UNIMPLEMENTED by gRPC, nothing kept
        assert handler.service(Details(f"/t.S/Made{i}")) is None
    assert built == ["M"]


def test_calls_are_counted_on_the_registered_and_the_generic_path_without_an_interceptor() -> None:
    metrics = CoordinatorMetrics()
    server = AioServer(options=[], instrument=metrics.instrument)

    async def echo(request: bytes, _context: Any) -> bytes:
        return request

    handler = grpc.unary_unary_rpc_method_handler(echo)
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("t.S", {"M": handler})])
    server.add_registered_method_handlers("t.S", {"M": handler})
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()

    async def call() -> None:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            method: Any = channel.unary_unary  # the stubs know neither form
            assert await method("/t.S/M", _registered_method=True)(b"abc") == b"abc"
            assert await method("/t.S/M")(b"abcd") == b"abcd"

    try:
        asyncio.run(call())
    finally:
        server.stop(0)
    sample = metrics.registry.get_sample_value
    assert sample("pfeddc_requests_total", {"method": "M", "code": "OK"}) == 2
    assert sample("pfeddc_received_bytes_total", {"method": "M"}) == sample("pfeddc_sent_bytes_total",
                                                                             {"method": "M"}) == 7


def test_calls_refused_at_the_headers_add_no_series_for_made_up_method_names() -> None:
    metrics = CoordinatorMetrics()

    async def echo(request: bytes, _context: Any) -> bytes:
        return request

    metrics.instrument("GetTask", grpc.unary_unary_rpc_method_handler(echo))
    metrics.refused("GetTask", grpc.StatusCode.UNAUTHENTICATED)
    for i in range(50):
        metrics.refused(f"Made{i}", grpc.StatusCode.UNAUTHENTICATED)
    sample = metrics.registry.get_sample_value
    assert sample("pfeddc_requests_total", {"method": "GetTask", "code": "UNAUTHENTICATED"}) == 1
    assert sample("pfeddc_requests_total", {"method": "unknown", "code": "UNAUTHENTICATED"}) == 50
    names = {s.labels["method"] for family in metrics.registry.collect() if family.name == "pfeddc_requests"
             for s in family.samples}
    assert names == {"GetTask", "unknown"}


@pytest.mark.parametrize(("flags", "on_loop"), [
    (("--method", "promptfl", "--text-ctx", "4"), ["grpc-aio", "worker"]),  # 2 KB each
    (("--model", HUB_DEFAULT_MODEL, "--method", "pfeddc-prompts", "--text-ctx", "64", "--vision-tokens", "64"),
     ["worker", "worker"]),  # 327 KB, above INLINE_UPDATE_BYTES
])
def test_small_updates_are_taken_on_the_event_loop_large_ones_and_the_last_of_a_round_on_a_worker_thread(
        coordinator: StartCoordinator, monkeypatch: pytest.MonkeyPatch, flags: tuple[str, ...],
        on_loop: list[str]) -> None:
    """A small update is decoded on the loop (the hop to a thread cost more than the decode); a large one on a
    worker thread, and so is the update that closes the round, whose FedAvg and checkpoint would otherwise hold
    every other call (the health checks too)."""
    threads: list[str] = []
    submit = Federation.submit

    def recorded(self: Federation, *args: Any, **kwargs: Any) -> Any:
        threads.append("grpc-aio" if threading.current_thread().name == "grpc-aio" else "worker")
        return submit(self, *args, **kwargs)

    monkeypatch.setattr(Federation, "submit", recorded)
    server = coordinator("--rounds", "1", "--min-clients", "2", *flags)
    sites = [Connection(f"localhost:{server.port}", f"site-{i}", None, None, Backoff(0.05, 0.2, 2),
                        rpc_timeout_s=10) for i in range(2)]
    for conn in sites:
        conn.join(10, conn.federation().spec)
    for conn in sites:
        task = conn.task()
        update = {k: np.full_like(v, 0.5) for k, v in global_tensors(task).items()}
        assert (len(serde.encode(update)) <= INLINE_UPDATE_BYTES) == (on_loop[0] == "grpc-aio")
        conn.submit(task.round, update, 10, Metrics(num_test_examples=1))
    assert threads == on_loop
    assert server.federation.round == 2  # taken either way


def closing_slowly(coordinator: StartCoordinator, monkeypatch: pytest.MonkeyPatch
                   ) -> tuple[RunningServer, Connection, threading.Thread]:
    """(the coordinator, site-a, the thread of site-b's update): site-b's update closes round 1 of 2 and its
    checkpoint takes 2 s (as on a slow disk); returns once that checkpoint is being written."""
    saving, closes = threading.Event(), threading.Event()
    save = Checkpoint.save

    def slow_save(self: Checkpoint, state: Any) -> None:
        if closes.is_set():
            saving.set()
            time.sleep(2.0)
        save(self, state)

    monkeypatch.setattr(Checkpoint, "save", slow_save)
    server = coordinator("--rounds", "2", "--min-clients", "2", "--method", "promptfl", "--text-ctx", "4")
    a, b = (Connection(f"localhost:{server.port}", f"site-{c}", None, None, Backoff(0.05, 0.2, 2), rpc_timeout_s=10)
            for c in "ab")
    for conn in (a, b):
        conn.join(10, conn.federation().spec)
    tasks = {conn.client_id: conn.task() for conn in (a, b)}
    a.submit(1, global_tensors(tasks["site-a"]), 10, Metrics(num_test_examples=1))
    closes.set()
    closing = threading.Thread(target=b.submit, args=(1, global_tensors(tasks["site-b"]), 10,
                                                       Metrics(num_test_examples=1)))
    closing.start()
    assert saving.wait(10)
    return server, a, closing


def test_while_a_round_closes_on_a_worker_thread_the_event_loop_serves_every_other_call(
        coordinator: StartCoordinator, monkeypatch: pytest.MonkeyPatch) -> None:
    """The closing update holds the federation for its checkpoint (made slow here, as on a slow disk): a heartbeat
    that needs the federation then waits on a worker thread, not on the event loop, so a health check sent after
    it is answered at once (the loop used to wait on the lock: 2 s here)."""
    server, a, closing = closing_slowly(coordinator, monkeypatch)
    beats: list[object] = []
    beat = threading.Thread(target=lambda: beats.append(a.heartbeat()))  # needs the federation: waits for the save
    beat.start()
    time.sleep(0.1)
    with grpc.insecure_channel(f"localhost:{server.port}") as channel:
        started = time.monotonic()
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        answered_in = time.monotonic() - started
    closing.join(10)
    beat.join(10)
    assert answered_in < 1.0, answered_in  # typically 0.01 s
    assert len(beats) == 1  # answered once the save ended
    assert server.federation.round == 2


def test_calls_that_wait_for_a_closing_round_are_woken_once_it_leaves_not_polled(
        coordinator: StartCoordinator, monkeypatch: pytest.MonkeyPatch) -> None:
    """While a round's 2-s checkpoint holds the federation, calls on the event loop await the holder's leaving:
    each asks for the section a few times in all (polling every few ms asked 46 times each), and
    each is answered once the save ends."""
    asks = [0]
    try_enter = Federation.try_enter

    def counted(self: Federation) -> bool:
        asks[0] += 1
        return try_enter(self)

    monkeypatch.setattr(Federation, "try_enter", counted)
    server, a, closing = closing_slowly(coordinator, monkeypatch)
    asks[0] = 0
    beats: list[object] = []
    waiting = [threading.Thread(target=lambda: beats.append(a.heartbeat())) for _ in range(10)]
    for t in waiting:
        t.start()
    closing.join(10)
    for t in waiting:
        t.join(10)
    assert len(beats) == 10  # every heartbeat answered once the save ended
    # 2 each before waiting (before and after registering), 1-2 more each time it is woken: every holder that
    # leaves wakes them (the closing update's thread, the ticker's); polling asked 460 times
    assert asks[0] <= 10 * 10, asks[0]
    assert server.federation.round == 2
