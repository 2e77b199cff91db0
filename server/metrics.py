"""Prometheus metrics of the coordinator, in a registry of its own (no process-global state).

Counters and histograms are fed by a gRPC interceptor (bytes, calls, update outcomes) and by the round-closed
hook (round and checkpoint durations); gauges (round, clients by state, ...) are read from the same status
snapshot as `pfeddc-server status` at every scrape, so the two never disagree.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..common.status import ClientState, Phase
from .admin import StatusSource

PREFIX = "pfeddc"
# Rounds last from seconds (tests, tiny models) to hours (ViT-B/16 on hospital GPUs).
ROUND_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, float("inf"))
CHECKPOINT_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, float("inf"))
SUBMIT_METHOD = "SubmitUpdate"


class CoordinatorMetrics:
    def __init__(self, source: StatusSource) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.round_duration = Histogram(f"{PREFIX}_round_duration_seconds", "Time from a round's opening to its "
                                        "close", buckets=ROUND_BUCKETS, registry=r)
        self.checkpoint_duration = Histogram(f"{PREFIX}_checkpoint_duration_seconds", "Time to write the "
                                             "checkpoint after a round", buckets=CHECKPOINT_BUCKETS, registry=r)
        self.updates_accepted = Counter(f"{PREFIX}_updates_accepted", "Client updates accepted (not counting "
                                        "idempotent retries)", registry=r)
        self.updates_refused = Counter(f"{PREFIX}_updates_refused", "Client updates refused, by reason (the "
                                       "status code returned)", ["reason"], registry=r)
        self.requests = Counter(f"{PREFIX}_requests", "RPCs answered, by method and status code",
                                ["method", "code"], registry=r)
        self.received_bytes = Counter(f"{PREFIX}_received_bytes", "Request payload bytes, by method", ["method"],
                                      registry=r)
        self.sent_bytes = Counter(f"{PREFIX}_sent_bytes", "Response payload bytes, by method", ["method"],
                                  registry=r)
        ProcessCollector(registry=r)  # memory and CPU of the coordinator process
        r.register(_StatusCollector(source))

    def round_closed_hook(self, save: Callable[[Any], None]) -> Callable[[Any], None]:
        """Wrap the checkpoint hook: time the save, observe the round's duration from its record."""

        def hook(state: Any) -> None:
            started = time.perf_counter()
            save(state)
            self.checkpoint_duration.observe(time.perf_counter() - started)
            history = getattr(state, "history", None)
            if history and isinstance(history[-1], dict) and "duration_s" in history[-1]:
                self.round_duration.observe(float(history[-1]["duration_s"]))

        return hook

    def interceptor(self) -> grpc.ServerInterceptor:
        return _Interceptor(self)

    def record(self, method: str, code: grpc.StatusCode, request: Any, response: Any) -> None:
        self.requests.labels(method, code.name).inc()
        self.received_bytes.labels(method).inc(request.ByteSize())
        if response is not None:
            self.sent_bytes.labels(method).inc(response.ByteSize())
        if method == SUBMIT_METHOD:
            if code == grpc.StatusCode.OK:
                if not response.duplicate:
                    self.updates_accepted.inc()
            else:
                self.updates_refused.labels(code.name).inc()


class _Interceptor(grpc.ServerInterceptor):
    def __init__(self, metrics: CoordinatorMetrics) -> None:
        self.metrics = metrics

    def intercept_service(self, continuation, details):  # type: ignore[no-untyped-def]
        handler = continuation(details)
        if handler is None or handler.unary_unary is None:
            return handler
        method = details.method.rsplit("/", 1)[-1]
        inner, metrics = handler.unary_unary, self.metrics

        def call(request: Any, context: grpc.ServicerContext) -> Any:
            try:
                response = inner(request, context)
            except BaseException:
                code = context.code() if callable(getattr(context, "code", None)) else None
                metrics.record(method, code or grpc.StatusCode.UNKNOWN, request, None)
                raise
            metrics.record(method, grpc.StatusCode.OK, request, response)
            return response

        return grpc.unary_unary_rpc_method_handler(call, request_deserializer=handler.request_deserializer,
                                                   response_serializer=handler.response_serializer)


class _StatusCollector(Collector):
    """Gauges computed from the status snapshot at scrape time."""

    def __init__(self, source: StatusSource) -> None:
        self.source = source

    def collect(self) -> Iterator[Metric]:
        s = self.source.status()
        gauges = {
            "round": ("The open (or next) round", s.round),
            "rounds_total": ("Rounds the federation runs", s.total_rounds),
            "rounds_completed": ("Rounds closed and aggregated", s.rounds_completed),
            "round_sampled_clients": ("Clients sampled in the open round", s.sampled),
            "round_received_updates": ("Updates received in the open round", s.received),
            "round_deadline_seconds": ("Seconds left in the open round (0 when none is open)", s.deadline_s or 0),
            "finished": ("1 once the last round closed", int(s.phase == Phase.FINISHED)),
            "clients_active": ("Clients heard from within the online window", sum(c.online for c in s.clients)),
            "clients_known": ("Clients that ever joined", len(s.clients)),
        }
        for name, (help_text, value) in gauges.items():
            yield GaugeMetricFamily(f"{PREFIX}_{name}", help_text, value=value)
        by_state = GaugeMetricFamily(f"{PREFIX}_clients", "Clients by state", labels=["state"])
        for state in ClientState:
            by_state.add_metric([state.value], sum(c.state == state for c in s.clients))
        yield by_state
