"""The coordinator's domain logic: who joined, which round runs, who is sampled, when a round closes.

No gRPC and no I/O besides the checkpoint hook: the servicer translates requests into these calls and
`Refused` into status codes. Time comes from an injectable clock so deadlines are testable.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ..common import serde
from ..common.logs import Event, get_logger
from ..common.messages import Action, Code, Metrics, Refused, SubmitResult, Task, TrainSettings
from ..common.spec import TensorSpec, spec_difference
from ..common.transport import DEFAULT_MAX_UPDATE_BYTES
from .aggregate import fedavg

log = get_logger("coordinator")
CLIENT_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True)
class FederationConfig:
    rounds: int
    min_clients: int = 2
    fraction: float = 1.0
    round_timeout_s: float = 600.0
    quorum: int = 1
    seed: int = 0
    train: TrainSettings = field(default_factory=TrainSettings)
    max_update_bytes: int = DEFAULT_MAX_UPDATE_BYTES
    poll_interval_s: float = 2.0

    def __post_init__(self) -> None:
        checks = [
            (self.rounds >= 1, f"rounds must be >= 1, got {self.rounds}"),
            (self.min_clients >= 1, f"min_clients must be >= 1, got {self.min_clients}"),
            (0 < self.fraction <= 1, f"fraction must be in (0, 1], got {self.fraction}"),
            (self.round_timeout_s > 0, f"round_timeout must be > 0, got {self.round_timeout_s}"),
            (1 <= self.quorum <= self.min_clients, f"quorum must be in [1, min_clients], got {self.quorum}"),
            (self.max_update_bytes > 0, f"max_update_bytes must be > 0, got {self.max_update_bytes}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


@dataclass
class ClientRecord:
    client_id: str
    num_examples: int
    rounds_participated: int = 0
    last_seen: float = -math.inf  # clock time; not persisted: a restarted coordinator waits for check-ins
    last_round: int = 0  # the last round whose update from it was accepted (status view; not persisted)
    last_metrics: Metrics | None = None  # ... and the metrics it reported with it

    def to_json(self) -> dict[str, Any]:
        return {"num_examples": self.num_examples, "rounds_participated": self.rounds_participated}


@dataclass
class _Update:
    sha256: str
    tensors: dict[str, np.ndarray]
    num_examples: int
    metrics: Metrics


@dataclass(frozen=True)
class RoundView:
    """`Federation.snapshot()`: the open round and the clients, `last_seen` as seconds ago."""

    round: int
    finished: bool
    sampled: frozenset[str]
    received: frozenset[str]
    deadline_s: float | None  # seconds left; None when no round is open
    clients: tuple[ClientRecord, ...]


@dataclass
class FederationState:
    """What a checkpoint holds: enough to resume after a crash at the start of the unfinished round."""

    round: int
    global_tensors: dict[str, np.ndarray]
    clients: dict[str, ClientRecord]
    history: list[dict[str, Any]]


class Federation:
    def __init__(
        self,
        config: FederationConfig,
        spec: list[TensorSpec],
        state: FederationState,
        on_round_closed: Callable[[FederationState], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        serde.validate(state.global_tensors, spec)
        self.config, self.spec = config, spec
        self._state = state
        self._on_round_closed = on_round_closed or (lambda _s: None)
        self._clock = clock
        self._lock = threading.RLock()
        self._set_global(state.global_tensors)
        self._sampled: set[str] = set()
        self._attempt = 0
        self._deadline = math.inf
        self._opened_at = 0.0
        self._received: dict[str, _Update] = {}
        self._last_closed: dict[str, str] = {}  # client -> sha of its accepted update in the previous round

    # ----- queries
    @property
    def round(self) -> int:
        return self._state.round

    @property
    def finished(self) -> bool:
        return self._state.round > self.config.rounds

    @property
    def global_tensors(self) -> dict[str, np.ndarray]:
        return dict(self._state.global_tensors)

    @property
    def history(self) -> list[dict[str, Any]]:
        return list(self._state.history)

    def sampled(self) -> set[str]:
        with self._lock:
            return set(self._sampled)

    @property
    def online_window_s(self) -> float:
        """A client heard from within this window counts as online (and can be sampled)."""
        return max(self.config.round_timeout_s, 10 * self.config.poll_interval_s)

    def snapshot(self) -> RoundView:
        """A consistent copy of the open round and the client registry, for the status view and metrics."""
        with self._lock:
            self._advance()
            now = self._clock()
            clients = tuple(replace(r, last_seen=now - r.last_seen) for r in self._state.clients.values())
            deadline = None if not self._sampled else max(0.0, self._deadline - now)
            return RoundView(self.round, self.finished, frozenset(self._sampled), frozenset(self._received),
                             deadline, clients)

    # ----- requests
    def join(self, client_id: str, num_examples: int, spec: list[TensorSpec]) -> None:
        if not CLIENT_ID_PATTERN.match(client_id):
            raise Refused(Code.INVALID_ARGUMENT, f"client_id {client_id!r} must match {CLIENT_ID_PATTERN.pattern}")
        if num_examples <= 0:
            raise Refused(Code.INVALID_ARGUMENT, f"num_examples must be > 0, got {num_examples}")
        diff = spec_difference(self.spec, spec)
        if diff:
            raise Refused(Code.FAILED_PRECONDITION, f"model spec differs from the federation's: {diff}")
        with self._lock:
            record = self._state.clients.get(client_id)
            rejoined = record is not None
            if record is None:
                record = self._state.clients[client_id] = ClientRecord(client_id, num_examples)
            record.num_examples = num_examples
            record.last_seen = self._clock()
            log.info(Event.CLIENT_JOINED, client_id=client_id, num_examples=num_examples, rejoined=rejoined,
                     round=self.round, clients=len(self._state.clients))
            self._advance()

    def task(self, client_id: str) -> Task:
        with self._lock:
            self._touch(client_id)
            self._advance()
            total = self.config.rounds
            if self.finished:
                return Task(Action.FINISHED, self.round - 1, total, self._payload, self._sha)
            if client_id in self._sampled and client_id not in self._received:
                return Task(Action.TRAIN, self.round, total, self._payload, self._sha, self._settings(client_id),
                            deadline_s=max(0.0, self._deadline - self._clock()))
            return Task(Action.WAIT, self.round, total, retry_after_s=self.config.poll_interval_s)

    def submit(self, client_id: str, round_: int, payload: bytes, num_examples: int,
               metrics: Metrics) -> SubmitResult:
        with self._lock:
            self._touch(client_id)
            self._advance()
            sha = serde.sha256(payload)
            if round_ == self.round - 1 and self._last_closed.get(client_id) == sha:
                return SubmitResult(True, len(self._received), len(self._sampled))
            if self.finished:
                raise Refused(Code.FAILED_PRECONDITION, f"the federation finished after round {self.config.rounds}")
            if round_ != self.round:
                which = "stale" if round_ < self.round else "future"
                raise Refused(Code.FAILED_PRECONDITION, f"{which} round {round_}: the current round is {self.round}")
            if client_id not in self._sampled:
                raise Refused(Code.FAILED_PRECONDITION, f"client {client_id!r} is not sampled in round {self.round}")
            previous = self._received.get(client_id)
            if previous is not None:
                if previous.sha256 == sha:
                    return SubmitResult(True, len(self._received), len(self._sampled))
                raise Refused(Code.ALREADY_EXISTS, f"a different update from {client_id!r} for round {round_} "
                                           "was already accepted")
            update = self._check_update(payload, sha, num_examples, metrics)
            self._received[client_id] = update
            log.info(Event.UPDATE_ACCEPTED, client_id=client_id, round=round_, num_examples=num_examples,
                     received=len(self._received), expected=len(self._sampled))
            result = SubmitResult(False, len(self._received), len(self._sampled))
            self._advance()
            return result

    def tick(self) -> None:
        """Apply time-based transitions (deadlines); the app calls this periodically."""
        with self._lock:
            self._advance()

    # ----- internals
    def _check_update(self, payload: bytes, sha: str, num_examples: int, metrics: Metrics) -> _Update:
        if num_examples <= 0:
            raise Refused(Code.INVALID_ARGUMENT, f"num_examples must be > 0, got {num_examples}")
        if len(payload) > self.config.max_update_bytes:
            raise Refused(Code.RESOURCE_EXHAUSTED, f"update payload of {len(payload)} bytes exceeds the "
                                          f"{self.config.max_update_bytes}-byte limit")
        bad = metrics.non_finite()
        if bad:
            raise Refused(Code.INVALID_ARGUMENT, f"metric {bad!r} is not finite ({getattr(metrics, bad)})")
        try:
            tensors = serde.decode(payload)
            serde.validate(tensors, self.spec)
        except serde.InvalidTensors as exc:
            raise Refused(Code.INVALID_ARGUMENT, f"update refused: {exc}") from None
        return _Update(sha, tensors, num_examples, metrics)

    def _touch(self, client_id: str) -> None:
        record = self._state.clients.get(client_id)
        if record is None:
            raise Refused(Code.NOT_FOUND, f"unknown client {client_id!r}: call Join first")
        record.last_seen = self._clock()

    def _set_global(self, tensors: dict[str, np.ndarray]) -> None:
        self._state.global_tensors = tensors
        self._payload = serde.encode(tensors)
        self._sha = serde.sha256(self._payload)

    def _settings(self, client_id: str) -> TrainSettings:
        digest = hashlib.sha256(f"{self.config.seed}:{self.round}:{client_id}".encode()).digest()
        return replace(self.config.train, seed=int.from_bytes(digest[:8], "big") & (2**63 - 1))

    def _advance(self) -> None:
        now = self._clock()
        if self._sampled:
            if set(self._received) == self._sampled:
                self._close_round(now)
            elif now >= self._deadline:
                if len(self._received) >= self.config.quorum:
                    self._close_round(now)
                else:
                    log.warning(Event.ROUND_RETRIED, round=self.round, received=len(self._received),
                                quorum=self.config.quorum, missing=sorted(self._sampled - set(self._received)))
                    self._sampled, self._received = set(), {}
                    self._attempt += 1
        if not self._sampled and not self.finished:
            self._open_round(now)

    def _open_round(self, now: float) -> None:
        active = sorted(c for c, r in self._state.clients.items() if now - r.last_seen <= self.online_window_s)
        if len(active) < self.config.min_clients:
            return
        k = max(math.ceil(self.config.fraction * len(active)), self.config.quorum)
        rng = random.Random(f"{self.config.seed}:{self.round}:{self._attempt}")
        self._sampled = set(rng.sample(active, min(k, len(active))))
        self._deadline = now + self.config.round_timeout_s
        self._opened_at = now
        log.info(Event.ROUND_STARTED, round=self.round, sampled=sorted(self._sampled), active=len(active),
                 attempt=self._attempt)

    def _close_round(self, now: float) -> None:
        updates = list(self._received.values())
        new_global = fedavg([(u.tensors, u.num_examples) for u in updates]) if self.spec else {}
        summary = _summarize(self.round, self._received, now - self._opened_at)
        missing = sorted(self._sampled - set(self._received))
        for client_id in self._received:
            record = self._state.clients[client_id]
            record.rounds_participated += 1
            record.last_round, record.last_metrics = self.round, self._received[client_id].metrics
        self._last_closed = {c: u.sha256 for c, u in self._received.items()}
        self._sampled, self._received, self._attempt, self._deadline = set(), {}, 0, math.inf
        self._set_global(new_global)
        self._state.round += 1
        self._state.history.append(summary)
        self._on_round_closed(self._state)
        log.info(Event.ROUND_COMPLETED, **summary, stragglers=missing)
        if self.finished:
            log.info(Event.FEDERATION_FINISHED, rounds=self.config.rounds)


def _summarize(round_: int, received: Mapping[str, _Update], duration_s: float) -> dict[str, Any]:
    """The round's record: who took part and their metrics weighted like the prompts (or by test examples)."""

    def weighted(values: list[tuple[float, float]]) -> float | None:
        pairs = [(v, w) for v, w in values if w > 0 and math.isfinite(v)]
        total = sum(w for _, w in pairs)
        return round(sum(v * w for v, w in pairs) / total, 6) if total else None

    updates = list(received.values())
    return {
        "round": round_,
        "clients": sorted(received),
        "num_examples": sum(u.num_examples for u in updates),
        "train_loss": weighted([(u.metrics.train_loss, u.num_examples) for u in updates]),
        "accuracy_before": weighted([(u.metrics.accuracy_before, u.metrics.num_test_examples) for u in updates]),
        "accuracy_after": weighted([(u.metrics.accuracy_after, u.metrics.num_test_examples) for u in updates]),
        "duration_s": round(duration_s, 3),
        # per-site figures: what each client declared and reported with its accepted update
        "sites": {c: {"num_examples": u.num_examples, **{k: _json_number(v) for k, v in u.metrics.as_dict().items()}}
                  for c, u in sorted(received.items())},
    }


def _json_number(value: float) -> float | None:
    return round(value, 6) if math.isfinite(value) else None
