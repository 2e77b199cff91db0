"""What the coordinator offers its operator beside the federation port: flags, side ports, the run loop.

  --health-port   plaintext grpc.health.v1 only, for the kubelet's probes (server/ops/probes.py)
  --metrics-port  Prometheus /metrics, the live status page and its JSON (server/ops/web.py)
and the run loop that decides when the process ends and with which exit code (common/lifecycle.py).
"""

from __future__ import annotations

import argparse
import math
import threading
import time
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2

from ...common.lifecycle import ExitCode, Stopper
from ...common.logs import Event, get_logger
from ...common.transport import is_loopback
from ...common.wire import COORDINATOR_SERVICE
from ..round.federation import Federation
from .metrics import CoordinatorMetrics
from .probes import serve_health
from .process import return_freed_memory
from .status import StatusSource
from .web import WebServer, serve

log = get_logger("coordinator")
# After an abort, held calls are told at once; this is for clients that poll to hear the reason too.
ABORT_LINGER_S = 10.0


@dataclass
class SidePorts:
    health_server: grpc.Server | None = None
    health_port: int | None = None
    web: WebServer | None = None

    @property
    def metrics_port(self) -> int | None:
        return self.web.port if self.web else None

    def stop(self) -> None:
        if self.web:
            self.web.stop()
        if self.health_server:
            self.health_server.stop(0)


def check_metrics_exposure(bind: str, port: int | None, guarded: bool) -> None:
    """Refuse to serve the unauthenticated status beyond loopback unless --metrics-guarded says it is guarded."""
    if port is None or is_loopback(bind):
        return
    if not guarded:
        raise ValueError(f"refusing to serve the metrics port on {bind}: /api/status shows every client id and its "
                         "metrics to anyone who reaches it. Fix: --metrics-bind 127.0.0.1 (scrape through a sidecar "
                         "or port-forward), or guard the port (a NetworkPolicy, a firewall) and pass --metrics-guarded")
    log.warning(Event.INSECURE_LISTENER, bind=bind, port=port, service="metrics", client_auth=False,
                advice="the status page, /api/status and /metrics are served without authentication: only the "
                       "guard you confirmed with --metrics-guarded keeps them private")


def start_side_ports(args: argparse.Namespace, health_servicer: health.HealthServicer, source: StatusSource,
                     metrics: CoordinatorMetrics) -> SidePorts:
    check_metrics_exposure(args.metrics_bind, args.metrics_port, args.metrics_guarded)
    ports = SidePorts()
    try:
        if args.health_port is not None:
            ports.health_server, ports.health_port = serve_health(args.bind, args.health_port, health_servicer)
        if args.metrics_port is not None:
            ports.web = serve(args.metrics_bind, args.metrics_port, source, metrics)
    except BaseException:
        ports.stop()
        raise
    return ports


def run_until_done(federation: Federation, linger_s: float, stopper: Stopper) -> int:
    """Serve until a signal, or until `linger_s` after the last round (never when it is negative or inf).

    0 when the federation had finished (even if a signal ended the lingering), 128 + signal otherwise.
    """
    forever = linger_s < 0 or math.isinf(linger_s)
    finished_at: float | None = None
    aborted_at: float | None = None
    while not stopper.event.wait(0.2):
        if federation.aborted:
            aborted_at = aborted_at or time.monotonic()
            if time.monotonic() - aborted_at >= min(ABORT_LINGER_S, linger_s if linger_s >= 0 else ABORT_LINGER_S):
                return ExitCode.ABORTED
        if federation.finished:
            if finished_at is None:
                finished_at = time.monotonic()
                log.info(Event.LINGERING, linger_s=None if forever else linger_s,
                         advice="the final prompts and the status stay served" + ("" if forever else
                                 f" for {linger_s:g} s"))
            if not forever and time.monotonic() - finished_at >= linger_s:
                return ExitCode.OK
    if federation.aborted:
        return ExitCode.ABORTED
    return ExitCode.OK if federation.finished else stopper.exit_code


# glibc keeps freed heap pages (gRPC's buffers of calls refused or finished) for reuse: hand them back to the
# system this often, so memory a burst of callers took returns after they leave (benchmarks/results/dripping.md).
TRIM_INTERVAL_S = 30.0


def tick(federation: Federation, health_servicer: health.HealthServicer, stop_event: threading.Event) -> None:
    """Deadlines and checkpoint retries; health follows durability. An error is logged and ticking goes on."""
    serving = True
    trimmed = time.monotonic()
    while not stop_event.wait(0.5):
        if time.monotonic() - trimmed >= TRIM_INTERVAL_S:
            trimmed = time.monotonic()
            return_freed_memory()
        try:
            federation.tick()
            ok = federation.durable
        except Exception as exc:  # a bug: say so loudly, report NOT_SERVING, and keep the rounds moving
            log.exception(Event.TICKER_FAILED, error=f"{type(exc).__name__}: {exc}")
            ok = False
        if ok != serving and not stop_event.is_set():
            serving = ok
            status = health_pb2.HealthCheckResponse.SERVING if ok else health_pb2.HealthCheckResponse.NOT_SERVING
            for name in ("", COORDINATOR_SERVICE):
                health_servicer.set(name, status)
