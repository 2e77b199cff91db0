"""The round lifecycle: open an attempt, end it (commit or retry), make a closed round durable, or give up.

`RoundLifecycle` is the base of `Federation` (server/federation.py): the transitions `_advance` applies under
the federation's lock, on the state that `Federation.__init__` sets up and its requests change. A round moves
forward in memory only after `_on_round_closed` (the checkpoint) succeeded; until then it stays open and the
save is retried with a growing delay.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import numpy as np

from ..common import serde
from ..common.logs import Event
from ..common.status import IncidentKind
from .aggregate import Aggregator
from .checkpoint import save_advice
from .closing import next_state
from .combine import NonFiniteGlobal
from .config import FederationConfig
from .handouts import Handouts
from .incidents import Incidents
from .state import FederationState
from .updates import CheckedUpdate

WAITING_LOG_INTERVAL_S = 30.0


class RoundLifecycle:
    config: FederationConfig
    _state: FederationState
    _on_round_closed: Callable[[FederationState], None]
    _clock: Callable[[], float]
    _aggregate: Aggregator
    _rng: np.random.Generator
    _log: Callable[..., None]
    _changed: Callable[[], None]
    _payload: bytes
    _sha: str
    _sampled: set[str]
    _attempt: int
    _deadline: float
    _opened_at: float
    _received: dict[str, CheckedUpdate]
    _failed: dict[str, str]  # sampled clients that cannot deliver this attempt -> why
    _handouts: Handouts
    _last_closed: dict[str, str]  # client -> sha of its accepted update in the previous round
    _pending: FederationState | None  # a closed round not yet durable
    _persist_failures: int
    _persist_retry_at: float
    _aborted: str | None
    _waiting_logged_at: float
    incidents: Incidents

    @property
    def round(self) -> int:
        return self._state.round

    @property
    def finished(self) -> bool:
        return self._state.round > self.config.rounds

    @property
    def online_window_s(self) -> float:
        """A client heard from within this window counts as online (and can be sampled)."""
        return max(self.config.round_timeout_s, 10 * self.config.poll_interval_s)

    def _outstanding(self) -> set[str]:
        return self._sampled - self._received.keys() - self._failed.keys()

    def _expected(self) -> int:
        return len(self._sampled) - len(self._failed)

    def _fail(self, client_id: str, reason: str) -> None:
        self._failed[client_id] = reason
        self.incidents.record(self._clock(), self.round, self._attempt, IncidentKind.CLIENT_FAILED, reason, client_id)
        self._log("warning", Event.CLIENT_FAILED_ROUND, client_id=client_id, round=self.round, reason=reason,
                  attempt=self._attempt, expected=self._expected())

    def _set_global(self, tensors: dict[str, np.ndarray]) -> None:
        self._state.global_tensors = tensors
        self._payload = serde.encode(tensors)
        self._sha = serde.sha256(self._payload)

    def _advance(self) -> None:
        now = self._clock()
        if self._aborted:
            return
        if self._pending is not None:
            if now >= self._persist_retry_at:
                self._persist(now)
            return
        answered = len(self._received) + len(self._failed)  # both are disjoint subsets of the sampled
        if self._sampled and (answered >= len(self._sampled) or now >= self._deadline):
            self._end_attempt(now)
        if not self._sampled and self._pending is None and not self._aborted and not self.finished:
            self._open_round(now)

    def _open_round(self, now: float) -> None:
        active = sorted(c for c, r in self._state.clients.items() if now - r.last_seen <= self.online_window_s)
        if len(active) < self.config.min_clients:
            if now - self._waiting_logged_at >= WAITING_LOG_INTERVAL_S:
                self._waiting_logged_at = now
                self._log("warning", Event.WAITING_FOR_CLIENTS, round=self.round, active=len(active),
                          needed=self.config.min_clients, known=len(self._state.clients))
            return
        self._waiting_logged_at = -math.inf
        k = max(math.ceil(self.config.fraction * len(active)), self.config.quorum)
        rng = random.Random(f"{self.config.seed}:{self.round}:{self._attempt}")
        self._sampled = set(rng.sample(active, min(k, len(active))))
        self._received, self._failed = {}, {}
        self._deadline = now + self.config.round_timeout_s
        self._opened_at = now
        self._changed()
        self._log("info", Event.ROUND_STARTED, round=self.round, sampled=sorted(self._sampled), active=len(active),
                  attempt=self._attempt)

    def _end_attempt(self, now: float) -> None:
        """Every sampled client answered (or failed), or the deadline passed: commit if the quorum is met."""
        stragglers = sorted(self._outstanding())
        if len(self._received) < self.config.quorum:
            why = "only failures" if not self._received and not stragglers else "no quorum"
            failures = "; ".join(f"{c}: {r}" for c, r in sorted(self._failed.items())[:3])
            return self._retry(f"{why}: {len(self._received)} of {self.config.quorum} updates needed, "
                               f"{len(self._failed)} failed, {len(stragglers)} silent"
                               + (f" ({failures})" if failures else ""))
        try:
            self._pending = next_state(self._state, self.config, self._aggregate, self._received, self._failed,
                                       stragglers, len(self._sampled), self._attempt, now - self._opened_at, self._rng)
        except NonFiniteGlobal as exc:
            return self._retry(str(exc))
        self._persist(now)

    def _retry(self, reason: str) -> None:
        """Open the round afresh: hand-out counts are per attempt, so a client that delivered (or failed
        transiently) in an earlier attempt is never failed for it in this one."""
        failed_attempt = self._attempt
        self._attempt += 1
        self._handouts.new_attempt(set(self._received))
        self._sampled, self._received, self._failed, self._deadline = set(), {}, {}, math.inf
        self._changed()
        if self._attempt > self.config.max_retries:
            self._aborted = f"round {self.round} failed {self._attempt} times; last: {reason}"
            self.incidents.record(self._clock(), self.round, failed_attempt, IncidentKind.FEDERATION_ABORTED,
                                  self._aborted)
            self._log("error", Event.FEDERATION_ABORTED, round=self.round, attempts=self._attempt, reason=reason,
                      advice="see the client_failed_round events; fix the clients (or the data), then restart "
                             "the coordinator: it resumes at this round")
            return
        self.incidents.record(self._clock(), self.round, failed_attempt, IncidentKind.ROUND_RETRIED, reason)
        self._log("warning", Event.ROUND_RETRIED, round=self.round, attempt=self._attempt, reason=reason,
                  max_retries=self.config.max_retries)

    def _persist(self, now: float) -> None:
        """Make the pending round durable, then (only then) advance to it in memory."""
        pending = self._pending
        assert pending is not None and pending.last_round is not None
        try:
            self._on_round_closed(pending)
        except Exception as exc:  # disk full, I/O error, permissions: never lose the round, never go silent
            self._persist_failures += 1
            delay = min(2.0 ** (self._persist_failures - 1), 30.0)
            self._persist_retry_at = now + delay
            self.incidents.record(now, self.round, self._attempt, IncidentKind.CHECKPOINT_FAILED,
                                  f"{type(exc).__name__}: {exc}")
            self._log("error", Event.CHECKPOINT_FAILED, round=self.round, error=f"{type(exc).__name__}: {exc}",
                      attempt=self._persist_failures, retry_in_s=delay,
                      advice=save_advice(exc))
            return
        if self._persist_failures:
            self._log("warning", Event.CHECKPOINT_RECOVERED, round=self.round, attempts=self._persist_failures + 1)
        summary = pending.last_round
        for client_id, update in self._received.items():
            record = self._state.clients[client_id]
            record.rounds_participated += 1
            record.last_round, record.last_metrics = self.round, update.metrics
        self._last_closed = {c: u.sha256 for c, u in self._received.items()}
        self._sampled, self._received, self._failed, self._attempt, self._deadline = set(), {}, {}, 0, math.inf
        self._pending, self._persist_failures = None, 0
        self._handouts.reset()
        self._set_global(pending.global_tensors)
        self._state.round, self._state.privacy, self._state.last_round = pending.round, pending.privacy, summary
        self._changed()
        fields = {k: v for k, v in summary.to_json().items() if k != "sites"}
        self._log("info", Event.ROUND_COMPLETED, **fields)
        if self.finished:
            self._log("info", Event.FEDERATION_FINISHED, rounds=self.config.rounds)
