"""The coordinator's plain-HTTP side port: Prometheus `/metrics`, the live status page `/`, and its JSON.

It serves only reads (GET/HEAD) and no prompts. It binds to loopback unless `--metrics-bind` says otherwise;
on Kubernetes the NetworkPolicy admits it only from the monitoring namespace (deploy/k8s).

  /             the status page (server/ops/page.html: one self-contained file that polls the two below)
  /api/status   the status snapshot as JSON (the same as `pfeddc-server status --json`)
  /api/rounds   rounds.jsonl as a JSON list: per-round and per-site figures for the accuracy curves
  /metrics      Prometheus text format
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ...common.logs import get_logger
from .metrics import CoordinatorMetrics
from .status import StatusSource

log = get_logger("coordinator")
PAGE = Path(__file__).with_name("page.html")
# A connection that sends nothing (or half a request) for this long is closed: it cannot pin its thread.
HTTP_TIMEOUT_S = 10.0
# Connections served at once; beyond it a new one is closed at once (scrapes and a few browsers need far fewer).
MAX_HTTP_CONNECTIONS = 32


def _csp(page: str) -> str:
    """Only the page's own inline script and style may run, and it may only fetch from this origin."""
    hashes = []
    for tag in ("script", "style"):
        for body in re.findall(rf"<{tag}>(.*?)</{tag}>", page, re.S):
            digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
            hashes.append((tag, f"'sha256-{digest}'"))
    src = {tag: " ".join(h for t, h in hashes if t == tag) or "'none'" for tag in ("script", "style")}
    return (f"default-src 'none'; script-src {src['script']}; style-src {src['style']}; connect-src 'self'; "
            "img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


class BoundedHTTPServer(ThreadingHTTPServer):
    """A thread per connection, at most MAX_HTTP_CONNECTIONS of them; the rest are closed unserved."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._slots = threading.BoundedSemaphore(MAX_HTTP_CONNECTIONS)
        super().__init__(*args, **kwargs)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


@dataclass
class WebServer:
    httpd: ThreadingHTTPServer
    port: int

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def serve(bind: str, port: int, source: StatusSource, metrics: CoordinatorMetrics) -> WebServer:
    page = PAGE.read_bytes()
    headers = {"Content-Security-Policy": _csp(page.decode()), "X-Content-Type-Options": "nosniff",
               "Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}

    class Handler(BaseHTTPRequestHandler):
        server_version = "pfeddc"
        sys_version = ""
        timeout = HTTP_TIMEOUT_S

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            path = self.path.split("?", 1)[0]
            if path in ("/", "/index.html"):
                self._send(200, "text/html; charset=utf-8", page)
            elif path == "/api/status":
                self._send(200, "application/json", json.dumps(source.status().to_json()).encode())
            elif path == "/api/rounds":
                self._send(200, "application/json", json.dumps(source.rounds.read()).encode())
            elif path == "/metrics":
                self._send(200, CONTENT_TYPE_LATEST, generate_latest(metrics.registry))
            else:
                self._send(404, "text/plain; charset=utf-8", b"not found: try /, /metrics, /api/status\n")

        def do_HEAD(self) -> None:  # noqa: N802
            self.do_GET()

        def _send(self, code: int, content_type: str, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's signature)
            pass  # scrapes every few seconds would drown the federation's events

    host = bind.strip("[]")
    server_class: type[ThreadingHTTPServer] = BoundedHTTPServer
    if ":" in host:
        import socket

        class V6Server(BoundedHTTPServer):
            address_family = socket.AF_INET6

        server_class = V6Server
    try:
        httpd = server_class((host, port), Handler)
    except OSError as exc:
        raise OSError(f"cannot serve metrics on {bind}:{port}: {exc.strerror or exc} (is another coordinator "
                      "running?)") from None
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True, name="metrics-http").start()
    return WebServer(httpd, httpd.server_address[1])
