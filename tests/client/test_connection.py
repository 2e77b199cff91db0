"""The connection's retries against a real loopback server that answers UNAVAILABLE: one layer, counted."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest

from pfeddc.client.connection import Backoff, Connection, CoordinatorUnreachable, Stopped
from pfeddc.common.messages import Code, Refused


class Unavailable:
    """A Coordinator whose every method answers `code`, counting the calls that reach it."""

    def __init__(self, code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE) -> None:
        self.code, self.calls, self._lock = code, 0, threading.Lock()

    def __call__(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        with self._lock:
            self.calls += 1
        context.abort(self.code, "restarting")
        raise AssertionError("unreachable")


@pytest.fixture
def server() -> Iterator[tuple[str, Unavailable]]:
    fake = Unavailable()
    srv = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    handler = grpc.unary_unary_rpc_method_handler(fake)
    srv.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "pfeddc.v1.Coordinator", {name: handler for name in ("GetFederation", "GetTask", "Heartbeat")}),))
    port = srv.add_insecure_port("127.0.0.1:0")
    srv.start()
    yield f"127.0.0.1:{port}", fake
    srv.stop(None)


def test_connection_retries_unavailable_exactly_max_attempts_times(server: tuple[str, Unavailable]) -> None:
    target, fake = server
    conn = Connection(target, "site-a", backoff=Backoff(0.001, 0.002, 4), rpc_timeout_s=5)
    try:
        with pytest.raises(CoordinatorUnreachable, match="after 4 attempts"):
            conn.federation()
    finally:
        conn.close()
    assert fake.calls == 4  # no second layer under it (a channel retry policy made this 4 x 5)


def test_connection_heartbeat_is_one_call(server: tuple[str, Unavailable]) -> None:
    target, fake = server
    conn = Connection(target, "site-a", backoff=Backoff(0.001, 0.002, 4), rpc_timeout_s=5)
    try:
        with pytest.raises(Refused) as caught:
            conn.heartbeat()
    finally:
        conn.close()
    assert caught.value.code == Code.UNAVAILABLE and fake.calls == 1


def test_connection_stop_ends_the_retries_at_once(server: tuple[str, Unavailable]) -> None:
    target, fake = server
    stop = threading.Event()
    stop.set()
    conn = Connection(target, "site-a", backoff=Backoff(10.0, 10.0, 0), rpc_timeout_s=5, stop=stop)
    try:
        with pytest.raises(Stopped):
            conn.task()
    finally:
        conn.close()
    assert fake.calls == 1
