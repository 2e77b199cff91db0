"""The metrics port: refused beyond loopback unless guarded, and no half-sent request can pin its threads."""

from __future__ import annotations

import socket
import time
import urllib.request

import pytest
from structlog.testing import capture_logs
from tests_support import StartCoordinator

from pfeddc.common.logs import Event
from pfeddc.server.ops import web
from pfeddc.server.ops.runner import check_metrics_exposure

FLAGS = ("--rounds", "1", "--method", "promptfl", "--text-ctx", "4", "--metrics-port", "0")


def test_metrics_port_beyond_loopback_needs_metrics_guarded() -> None:
    with pytest.raises(ValueError, match="--metrics-guarded") as info:
        check_metrics_exposure("0.0.0.0", 9090, guarded=False)
    assert "every client id" in str(info.value)
    with capture_logs() as logs:
        check_metrics_exposure("0.0.0.0", 9090, guarded=True)
        check_metrics_exposure("127.0.0.1", 9090, guarded=False)
        check_metrics_exposure("0.0.0.0", None, guarded=False)  # no metrics port: nothing to refuse
    assert [(e["event"], e["log_level"]) for e in logs] == [(Event.INSECURE_LISTENER, "warning")]


def half_sent(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(b"GET /api/status HTTP/1.1\r\nHost: x\r\n")  # never finished
    return sock


def closed(sock: socket.socket) -> bool:
    """The server closed the connection: an end of stream, or a reset (it closed with the request unread)."""
    try:
        return sock.recv(100) == b""
    except ConnectionResetError:
        return True


def test_half_sent_requests_are_closed_and_cannot_take_every_thread(coordinator: StartCoordinator,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(web, "HTTP_TIMEOUT_S", 1.0)
    monkeypatch.setattr(web, "MAX_HTTP_CONNECTIONS", 3)
    server = coordinator(*FLAGS)
    assert server.side is not None and server.side.metrics_port
    port = server.side.metrics_port
    stuck = [half_sent(port) for _ in range(3)]
    time.sleep(0.2)
    extra = half_sent(port)
    assert closed(extra)  # beyond the cap: closed at once, unserved
    started = time.monotonic()
    assert all(closed(s) for s in stuck)  # the half-sent ones are closed by the timeout
    assert time.monotonic() - started < 5
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        assert reply.status == 200  # and the port serves again
    for s in (*stuck, extra):
        s.close()
