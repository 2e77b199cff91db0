"""The coordinator's plain-HTTP side port: Prometheus `/metrics`, the live status page `/`, and its JSON.

It serves only reads (GET/HEAD) and no prompts. It binds to loopback unless `--metrics-bind` says otherwise;
on Kubernetes the NetworkPolicy admits it only from the monitoring namespace (deploy/k8s).

  /             the status page (server/ops/page.html: one self-contained file that polls the two below)
  /api/status   the status snapshot as JSON (the same as `pfeddc-server status --json`)
  /api/rounds   rounds.jsonl as a JSON list: per-round and per-site figures for the accuracy curves
  /metrics      Prometheus text format (prometheus_client)

Served by aiohttp on an event loop of its own thread: a connection is a coroutine, not a thread, so slow or
half-sent requests pin nothing (the stdlib's threaded server gave 32 of them every slot: 0 of 60 scrapes
succeeded); a connection is closed when a request has not completed within HTTP_TIMEOUT_S; at most
MAX_HTTP_CONNECTIONS are open (more are closed unserved); a client that resets mid-request costs no log line.
Its own loop, not the gRPC server's: a flood of scrapes never delays a held federation call.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import re
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ...common.logs import get_logger
from .metrics import CoordinatorMetrics
from .status import StatusSource

log = get_logger("coordinator")
PAGE = Path(__file__).with_name("page.html")
# A connection whose request is not complete this long after it connected (or after its last answer) is closed.
HTTP_TIMEOUT_S = 10.0
# Connections open at once; beyond it a new one is closed at once (each costs a coroutine and a socket).
MAX_HTTP_CONNECTIONS = 1024
for _name in ("aiohttp.server", "aiohttp.access", "aiohttp.web", "aiohttp.internal"):  # resets: no tracebacks
    logging.getLogger(_name).setLevel(logging.CRITICAL)


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


@dataclass
class WebServer:
    loop: asyncio.AbstractEventLoop
    runner: web.AppRunner
    server: asyncio.Server
    reaper: asyncio.Task[None]
    port: int
    thread: threading.Thread

    def stop(self) -> None:
        async def close() -> None:
            self.reaper.cancel()
            self.server.close()
            await self.runner.cleanup()

        if self.loop.is_running():
            asyncio.run_coroutine_threadsafe(close(), self.loop).result(10)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)


def application(source: StatusSource, metrics: CoordinatorMetrics) -> web.Application:
    page = PAGE.read_bytes()
    headers = {"Content-Security-Policy": _csp(page.decode()), "X-Content-Type-Options": "nosniff",
               "Cache-Control": "no-store", "Referrer-Policy": "no-referrer", "Server": "pfeddc"}

    def reply(content_type: str, body: Callable[[], bytes]) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(_request: web.Request) -> web.Response:
            return web.Response(body=body(), headers={**headers, "Content-Type": content_type})
        return handle

    async def not_found(_request: web.Request) -> web.Response:
        return web.Response(status=404, body=b"not found: try /, /metrics, /api/status\n",
                            headers={**headers, "Content-Type": "text/plain; charset=utf-8"})

    app = web.Application(handler_args={"max_line_size": 8190, "max_field_size": 8190})
    routes = {
        "/": reply("text/html; charset=utf-8", lambda: page),
        "/index.html": reply("text/html; charset=utf-8", lambda: page),
        "/api/status": reply("application/json", lambda: json.dumps(source.status().to_json()).encode()),
        "/api/rounds": reply("application/json", lambda: json.dumps(source.rounds.read()).encode()),
        "/metrics": reply(CONTENT_TYPE_LATEST, lambda: generate_latest(metrics.registry)),
    }
    for path, handler in routes.items():
        app.router.add_get(path, handler)  # HEAD too
    app.router.add_route("*", "/{tail:.*}", not_found)
    return app


class _Closed(asyncio.Protocol):
    """Over the connection cap: closed unserved."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


def serve(bind: str, port: int, source: StatusSource, metrics: CoordinatorMetrics) -> WebServer:
    """Start serving on its own loop thread; returns once listening (OSError naming the port if it cannot)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True, name="metrics-http")
    thread.start()
    host = bind.strip("[]")

    async def start() -> tuple[web.AppRunner, asyncio.Server, asyncio.Task[None]]:
        runner = web.AppRunner(application(source, metrics), access_log=None, handle_signals=False,
                               keepalive_timeout=HTTP_TIMEOUT_S)
        await runner.setup()
        handlers = runner.server
        assert handlers is not None
        opened: dict[Any, float] = {}

        def connection() -> asyncio.Protocol:
            if len(handlers.connections) >= MAX_HTTP_CONNECTIONS:
                return _Closed()
            protocol = handlers()
            opened[protocol] = time.monotonic()
            return protocol

        async def reap() -> None:  # requests not complete in time: the connection goes (a byte a second too)
            while True:
                await asyncio.sleep(1.0)
                now = time.monotonic()
                for protocol in list(opened):
                    if protocol not in handlers.connections and now - opened[protocol] > 1.0:
                        opened.pop(protocol, None)  # closed already
                    elif now - opened[protocol] > HTTP_TIMEOUT_S:
                        opened.pop(protocol, None)
                        transport = protocol.transport
                        if transport is not None:
                            transport.close()

        server = await loop.create_server(connection, host, port)
        return runner, server, loop.create_task(reap())

    try:
        runner, server, reaper = asyncio.run_coroutine_threadsafe(start(), loop).result(30)
    except OSError as exc:
        loop.call_soon_threadsafe(loop.stop)
        raise OSError(f"cannot serve metrics on {bind}:{port}: {exc.strerror or exc} (is another coordinator "
                      "running?)") from None
    bound = server.sockets[0].getsockname()[1]
    return WebServer(loop, runner, server, reaper, bound, thread)
