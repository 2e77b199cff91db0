"""Prometheus metrics of the coordinator, in a registry of its own (no process-global state).

Each registered handler counts its calls, bytes and update outcomes (`instrument`); the round-closed hook times
checkpoints; the round-duration histogram is read from rounds.jsonl and the gauges (round, clients by state, ...)
from the same status snapshot as `pfeddc-server status` at every scrape, so the two never disagree.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from ...common.messages import Code
from .status import StatusSource
from .status_doc import ClientState, Phase

PREFIX = "pfeddc"
# Rounds last from seconds (tests, tiny models) to hours (ViT-B/16 on hospital GPUs).
ROUND_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, float("inf"))
CHECKPOINT_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, float("inf"))
SUBMIT_METHOD = "SubmitUpdate"


class CoordinatorMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.checkpoint_duration = Histogram(f"{PREFIX}_checkpoint_duration_seconds", "Time to write the "
                                             "checkpoint after a round", buckets=CHECKPOINT_BUCKETS, registry=r)
        self.updates_accepted = Counter(f"{PREFIX}_updates_accepted", "Client updates accepted (not counting "
                                        "idempotent retries)", registry=r)
        self.updates_refused = Counter(f"{PREFIX}_updates_refused", "Client updates refused, by reason (the "
                                       "status code returned)", ["reason"], registry=r)
        for code in Code:  # every series from the start: rate() and alerts need a zero before the first refusal
            if code not in (Code.UNKNOWN, Code.CANCELLED, Code.UNIMPLEMENTED):
                self.updates_refused.labels(code.value)
        self.requests = Counter(f"{PREFIX}_requests", "RPCs answered, by method and status code",
                                ["method", "code"], registry=r)
        self.received_bytes = Counter(f"{PREFIX}_received_bytes", "Request payload bytes, by method", ["method"],
                                      registry=r)
        self.sent_bytes = Counter(f"{PREFIX}_sent_bytes", "Response payload bytes, by method", ["method"],
                                  registry=r)
        ProcessCollector(registry=r)  # memory and CPU of the coordinator process
        self._series: dict[tuple[str, grpc.StatusCode], tuple[Any, Any]] = {}
        self._methods: set[str] = set()  # the methods registered through `instrument`

    def watch(self, source: StatusSource) -> None:
        """Export the gauges of this status source and the round durations of its history file (the
        federation is built after the metrics it reports to)."""
        self.registry.register(_StatusCollector(source))

    def instrument(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """`handler` (a unary-unary one; others are returned as they are) counting its calls, bytes and update
        outcomes under `method`. Applied once, when the server registers the handler
        (server/wire/aioserver.py), not through an interceptor: a grpc.aio interceptor runs a coroutine and
        builds a handler for every call."""
        self._methods.add(method)
        inner: Any = handler.unary_unary  # (request, context) -> response, or its coroutine
        if inner is None:
            return handler
        wrapped: Any
        if inspect.iscoroutinefunction(inner):
            async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> Any:
                try:
                    response = await inner(request, context)
                except BaseException:
                    self.record(method, context.code() or grpc.StatusCode.UNKNOWN, request, None)
                    raise
                self.record(method, grpc.StatusCode.OK, request, response)
                return response
        else:  # the admin and health handlers, on the aio server's thread pool
            def wrapped(request: Any, context: grpc.ServicerContext) -> Any:
                seen = _SeenCode(context)
                try:
                    response = inner(request, seen)
                except BaseException:
                    code_of = getattr(context, "code", None)  # grpc >= 1.38; the stubs do not know it
                    code = seen.code or (code_of() if callable(code_of) else None)
                    self.record(method, code or grpc.StatusCode.UNKNOWN, request, None)
                    raise
                self.record(method, seen.code or grpc.StatusCode.OK, request, response)
                return response
        serialize = handler.response_serializer
        sent = self.sent_bytes.labels(method)

        def counted(response: Any) -> bytes:  # the reply's bytes counted as gRPC serializes it (once, not twice)
            data = serialize(response) if serialize is not None else response
            sent.inc(len(data))
            return data

        return grpc.unary_unary_rpc_method_handler(wrapped, request_deserializer=handler.request_deserializer,
                                                   response_serializer=counted)

    def refused(self, method: str, code: grpc.StatusCode) -> None:
        """A call refused before any handler ran (its headers): counted under its method when the server has
        one of that name, else under "unknown", so a caller's made-up method names add no series."""
        self.requests.labels(method if method in self._methods else "unknown", code.name).inc()

    def record(self, method: str, code: grpc.StatusCode, request: Any, response: Any) -> None:
        series = self._series.get((method, code))
        if series is None:  # bounded: registered methods x status codes
            series = self._series[(method, code)] = (self.requests.labels(method, code.name),
                                                     self.received_bytes.labels(method))
        calls, received = series
        calls.inc()
        # the federation port's requests arrive as raw bytes (server/wire/gate.py), the others parsed; the replies'
        # bytes are counted by the serializer `instrument` wraps
        received.inc(len(request) if isinstance(request, bytes) else request.ByteSize())
        if method == SUBMIT_METHOD:
            if code == grpc.StatusCode.OK:
                if not response.duplicate:
                    self.updates_accepted.inc()
            else:
                self.updates_refused.labels(code.name).inc()


class _SeenCode:
    """A servicer context that remembers the status code a handler aborted with (or set): the synchronous
    contexts grpc.aio hands to admin and health handlers cannot tell it afterwards, so refusals were UNKNOWN."""

    def __init__(self, context: Any) -> None:
        self._context = context
        self.code: grpc.StatusCode | None = None

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.code = code
        self._context.abort(code, details)

    def set_code(self, code: grpc.StatusCode) -> None:
        self.code = code
        self._context.set_code(code)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


class _StatusCollector(Collector):
    """Gauges computed from the status snapshot at scrape time."""

    def __init__(self, source: StatusSource) -> None:
        self.source = source

    def collect(self) -> Iterator[Metric]:
        yield _duration_histogram(self.source.rounds.read())
        s = self.source.status()
        gauges = {
            "round": ("The open (or next) round", s.round),
            "rounds_total": ("Rounds the federation runs", s.total_rounds),
            "rounds_completed": ("Rounds closed and aggregated", s.rounds_completed),
            "round_sampled_clients": ("Clients sampled in the open round", s.sampled),
            "round_received_updates": ("Updates received in the open round", s.received),
            "round_deadline_seconds": ("Seconds left in the open round (0 when none is open)", s.deadline_s or 0),
            "round_attempt": ("Attempt of the open round (0: the first; each retry adds one)", s.attempt),
            "finished": ("1 once the last round closed", int(s.phase == Phase.FINISHED)),
            "aborted": ("1 once a round failed more than --max-retries times", int(s.phase == Phase.ABORTED)),
            "clients_active": ("Clients heard from within the heartbeat window", sum(c.online for c in s.clients)),
            "clients_known": ("Clients that ever joined", len(s.clients)),
        }
        for name, (help_text, value) in gauges.items():
            yield GaugeMetricFamily(f"{PREFIX}_{name}", help_text, value=value)
        by_state = GaugeMetricFamily(f"{PREFIX}_clients", "Clients by state", labels=["state"])
        for state in ClientState:
            by_state.add_metric([state.value], sum(c.state == state for c in s.clients))
        yield by_state


def _duration_histogram(rounds: list[dict[str, Any]]) -> Metric:
    """Round durations from rounds.jsonl: the history survives restarts, so the histogram does too."""
    durations = [float(r["duration_s"]) for r in rounds if isinstance(r.get("duration_s"), int | float)]
    counts = [sum(d <= bound for d in durations) for bound in ROUND_BUCKETS]
    return HistogramMetricFamily(f"{PREFIX}_round_duration_seconds", "Time from a round's opening to its close "
                                 "(every committed round in rounds.jsonl)",
                                 buckets=[(_le(b), c) for b, c in zip(ROUND_BUCKETS, counts, strict=True)],
                                 sum_value=sum(durations))


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else str(bound)
