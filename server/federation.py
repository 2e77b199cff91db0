"""The coordinator's domain logic: who joined, which round runs, who is sampled, when a round closes.

No gRPC and no I/O besides the checkpoint hook: the servicer translates requests into these calls and
`Refused` into status codes. Time comes from an injectable clock so deadlines are testable.

Under the lock only bookkeeping runs: updates are parsed and checked before it (server/updates.py), log
lines are rendered after it, and waiting clients are woken after it (`changes`). A round advances in memory
only once the checkpoint hook has made it durable; until then the round stays open, the hook is retried and
`durable` is False.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from ..common import serde
from ..common.ids import client_id_problem
from ..common.logs import Event, get_logger
from ..common.messages import (
    MAX_FAILURE_DETAIL_CHARS,
    Action,
    Code,
    FailureReason,
    Metrics,
    Refused,
    SubmitResult,
    Task,
    TrainSettings,
)
from ..common.spec import TensorSpec, spec_difference
from .aggregate import Aggregator, make_aggregator
from .config import FederationConfig
from .handouts import MAX_HANDOUTS
from .history import RoundSummary
from .longpoll import ChangeFeed
from .pipeline import accept
from .rounds import Rounds
from .section import Section
from .state import ClientRecord, FederationState, RoundView

__all__ = ["ClientRecord", "Federation", "FederationConfig", "FederationState", "RoundView"]
log = get_logger("coordinator")


class Federation:
    def __init__(
        self,
        config: FederationConfig,
        spec: list[TensorSpec],
        state: FederationState,
        on_round_closed: Callable[[FederationState], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        aggregate: Aggregator | None = None,
        changes: ChangeFeed | None = None,
        rng: np.random.Generator | None = None,
    ) -> None:
        """`on_round_closed` makes a closed round durable (the checkpoint); if it raises, the round stays open
        and the call is retried. `aggregate` defaults to the config's aggregator; `rng` draws DP noise (default:
        seeded from the OS, never from the federation seed)."""
        serde.validate(state.global_tensors, spec)
        self.config, self.spec = config, spec
        self._state = state
        self._clock = clock
        self.changes = changes or ChangeFeed()
        self._section = Section(self.changes, log)
        self._lock = self._section.lock
        self._critical, self._log = self._section.hold, self._section.log
        self._rounds = Rounds(config, state, on_round_closed or (lambda _s: None), clock,
                              aggregate or make_aggregator(config.aggregator, config.trim),
                              rng or np.random.default_rng(), self._section.log, self._section.changed)
        self.incidents = self._rounds.incidents
        self._joins_by_peer: dict[str, int] = {}  # new ids registered per peer address (open mode), in memory

    # ----- queries
    @property
    def round(self) -> int:
        return self._rounds.round

    @property
    def finished(self) -> bool:
        return self._rounds.finished

    @property
    def online_window_s(self) -> float:
        return self._rounds.online_window_s

    @property
    def global_tensors(self) -> dict[str, np.ndarray]:
        return dict(self._state.global_tensors)

    @property
    def last_round(self) -> RoundSummary | None:
        """The summary of the last committed round (the full history is rounds.jsonl)."""
        return self._state.last_round

    @property
    def durable(self) -> bool:
        """False while a closed round cannot be saved: health reports NOT_SERVING then."""
        return self._rounds.pending is None

    @property
    def aborted(self) -> str | None:
        """Why the federation stopped (a round failed more than --max-retries times), or None."""
        return self._rounds.aborted

    def sampled(self) -> set[str]:
        with self._lock:
            return set(self._rounds.attempt.sampled)

    def snapshot(self) -> RoundView:
        """A consistent copy of the open round and the client registry, for the status view and metrics."""
        with self._critical():
            self._rounds.advance()
            now = self._clock()
            clients = tuple(replace(r, last_seen=now - r.last_seen) for r in self._state.clients.values())
            a = self._rounds.attempt
            deadline = None if not a.sampled else max(0.0, a.deadline - now)
            return RoundView(self.round, self.finished, frozenset(a.sampled), frozenset(a.received), deadline,
                             clients, a.number, dict(a.failed), self.incidents.view(now), self._rounds.aborted)

    # ----- requests
    def join(self, client_id: str, num_examples: int, spec: list[TensorSpec], secret: str | None = None,
             peer: str | None = None) -> int:
        """Register or re-register a client; returns its FedAvg weight (the declared count, capped).
        `peer`: the caller's address in open mode beyond loopback, whose new ids are counted and capped."""
        problem = client_id_problem(client_id)
        if problem:
            raise Refused(Code.INVALID_ARGUMENT, problem)
        if num_examples <= 0:
            raise Refused(Code.INVALID_ARGUMENT, f"num_examples must be > 0, got {num_examples}")
        diff = spec_difference(self.spec, spec)
        if diff:
            raise Refused(Code.FAILED_PRECONDITION, f"model spec differs from the federation's: {diff}")
        if self.config.require_join_secret and not secret:
            raise Refused(Code.UNAUTHENTICATED, "this coordinator runs without client authentication: every Join "
                                                "must carry a join secret (pfeddc-client keeps one in its state dir)")
        with self._critical():
            record = self._state.clients.get(client_id)
            rejoined = record is not None
            if record is None:
                self._check_room(peer)
                record = self._state.clients[client_id] = ClientRecord(client_id, num_examples)
                if peer is not None:
                    self._joins_by_peer[peer] = self._joins_by_peer.get(peer, 0) + 1
            record.check_secret(secret)
            if secret and record.secret_sha256 is None:
                record.secret_sha256 = serde.sha256(secret.encode())
            record.num_examples = num_examples
            record.last_seen = self._clock()
            weight = self.config.weight(num_examples)
            if weight < num_examples:
                self._log("warning", Event.WEIGHT_CAPPED, client_id=client_id, num_examples=num_examples,
                          weight=weight, advice="raise --max-examples-per-client if this site really has that many")
            self._log("info", Event.CLIENT_JOINED, client_id=client_id, num_examples=num_examples, weight=weight,
                      rejoined=rejoined, round=self.round, clients=len(self._state.clients))
            self._rounds.advance()
            return weight

    def authorize(self, client_id: str, secret: str | None) -> None:
        """Open mode: refuse a caller that lacks the join secret bound to `client_id` (if one is bound)."""
        record = self._state.clients.get(client_id)
        if record is not None:
            record.check_secret(secret)

    def task(self, client_id: str) -> Task:
        with self._critical():
            self._touch(client_id)
            self._rounds.advance()
            self._check_running()
            total, now, global_ = self.config.rounds, self._clock(), self._rounds.global_
            if self.finished:
                return Task(Action.FINISHED, self.round - 1, total, global_.payload, global_.sha256)
            if self._rounds.pending is None and self._rounds.attempt.awaits(client_id):
                wait = self._rounds.handouts.wait_left(client_id, now)
                if wait > 0:
                    return Task(Action.WAIT, self.round, total, retry_after_s=wait)
                if self._rounds.handouts.exhausted(client_id):
                    self._rounds.fail(client_id, f"handed round {self.round} {MAX_HANDOUTS} times without an update")
                    self._rounds.advance()
                else:
                    self._rounds.handouts.record(client_id, now)
                    return Task(Action.TRAIN, self.round, total, global_.payload, global_.sha256,
                                self._settings(client_id), deadline_s=max(0.0, self._rounds.attempt.deadline - now))
            return Task(Action.WAIT, self.round, total, retry_after_s=self.config.poll_interval_s)

    def heartbeat(self, client_id: str) -> int:
        """A running client is alive (training or waiting): refresh its last-seen time; returns the round."""
        with self._lock:
            self._touch(client_id)
            return self.round

    def backoff_left(self, client_id: str) -> float:
        """Seconds before `client_id` may be handed the open round again (for a held call to wait out)."""
        with self._lock:
            sampled = client_id in self._rounds.attempt.sampled
            return self._rounds.handouts.wait_left(client_id, self._clock()) if sampled else 0.0

    def submit(self, client_id: str, round_: int, payload: bytes, num_examples: int,
               metrics: Metrics) -> SubmitResult:
        if client_id not in self._state.clients:  # before any parsing; checked again under the lock
            raise Refused(Code.NOT_FOUND, f"unknown client {client_id!r}: call Join first")
        sha = serde.sha256(payload)
        with self._critical():
            early = self._admit(client_id, round_, sha, num_examples)
        if early is not None:
            return early
        try:
            update = accept(payload, num_examples, metrics, self.spec, self.config.limits, sha)
        except Refused as exc:
            log.warning(Event.UPDATE_REJECTED, client_id=client_id, round=round_, code=str(exc.code),
                        reason=exc.message)
            raise
        with self._critical():
            early = self._admit(client_id, round_, sha, num_examples)  # the round may have moved meanwhile
            if early is not None:
                return early
            self._rounds.attempt.received[client_id] = update
            # debug: one line per client per round costs more than the round's work at 500 clients; the round's
            # round_completed event and rounds.jsonl name every accepted client
            self._log("debug", Event.UPDATE_ACCEPTED, client_id=client_id, round=round_, num_examples=num_examples,
                      received=len(self._rounds.attempt.received), expected=self._rounds.attempt.expected())
            result = SubmitResult(False, len(self._rounds.attempt.received), self._rounds.attempt.expected())
            self._rounds.advance()
            if self._rounds.pending is not None and self._rounds.pending.round == round_ + 1:
                raise Refused(Code.UNAVAILABLE, f"round {round_} is aggregated but could not be saved yet: retry "
                                                "(your update is kept)")
            return result

    def report_failure(self, client_id: str, round_: int, reason: FailureReason, detail: str = "") -> SubmitResult:
        """A sampled client cannot produce an update: stop waiting for it in this attempt of the round."""
        with self._critical():
            self._touch(client_id)
            self._rounds.advance()
            self._check_round(round_)
            if client_id in self._rounds.attempt.failed:
                return SubmitResult(True, len(self._rounds.attempt.received), self._rounds.attempt.expected())
            if client_id not in self._rounds.attempt.sampled:
                raise Refused(Code.FAILED_PRECONDITION, f"client {client_id!r} is not sampled in round {self.round}")
            if client_id in self._rounds.attempt.received:
                raise Refused(Code.FAILED_PRECONDITION, f"an update from {client_id!r} for round {round_} was "
                                                        "already accepted")
            self._rounds.fail(client_id, f"{reason}: {detail[:MAX_FAILURE_DETAIL_CHARS]}" if detail else str(reason))
            result = SubmitResult(False, len(self._rounds.attempt.received), self._rounds.attempt.expected())
            self._rounds.advance()
            return result

    def tick(self) -> None:
        """Apply time-based transitions (deadlines, checkpoint retries); the app calls this periodically."""
        with self._critical():
            self._rounds.advance()

    # ----- internals
    def _check_room(self, peer: str | None) -> None:
        if len(self._state.clients) >= self.config.max_clients:
            raise Refused(Code.RESOURCE_EXHAUSTED, f"the federation already has {len(self._state.clients)} clients, "
                                                   "its --max-clients: a new client id cannot join")
        if peer is not None and self._joins_by_peer.get(peer, 0) >= self.config.max_joins_per_peer:
            raise Refused(Code.RESOURCE_EXHAUSTED, f"{self.config.max_joins_per_peer} client ids already joined from "
                                                   "this address (--max-joins-per-peer)")

    def _check_running(self) -> None:
        if self._rounds.aborted:
            raise Refused(Code.FAILED_PRECONDITION, f"the federation stopped: {self._rounds.aborted}")

    def _check_round(self, round_: int) -> None:
        self._check_running()
        if self.finished:
            raise Refused(Code.FAILED_PRECONDITION, f"the federation finished after round {self.config.rounds}")
        if round_ != self.round:
            which = "stale" if round_ < self.round else "future"
            raise Refused(Code.FAILED_PRECONDITION, f"{which} round {round_}: the current round is {self.round}")

    def _admit(self, client_id: str, round_: int, sha: str, num_examples: int) -> SubmitResult | None:
        """A reply for a repeated update, None for one to parse, or `Refused` for one that cannot count."""
        self._touch(client_id)
        self._rounds.advance()
        if round_ == self.round - 1 and self._rounds.last_closed.get(client_id) == sha:
            return SubmitResult(True, len(self._rounds.attempt.received), self._rounds.attempt.expected())
        self._check_round(round_)
        previous = self._rounds.attempt.received.get(client_id)
        if previous is not None:
            if previous.sha256 == sha:
                return SubmitResult(True, len(self._rounds.attempt.received), self._rounds.attempt.expected())
            raise Refused(Code.ALREADY_EXISTS, f"a different update from {client_id!r} for round {round_} "
                                               "was already accepted")
        if self._rounds.pending is not None:
            raise Refused(Code.UNAVAILABLE, f"round {round_} is closed and waiting to be saved: retry")
        if client_id not in self._rounds.attempt.sampled:
            raise Refused(Code.FAILED_PRECONDITION, f"client {client_id!r} is not sampled in round {self.round}")
        if client_id in self._rounds.attempt.failed:
            raise Refused(Code.FAILED_PRECONDITION, f"client {client_id!r} is out of round {round_}: "
                                                    f"{self._rounds.attempt.failed[client_id]}")
        declared = self._state.clients[client_id].num_examples
        if num_examples != declared:
            raise Refused(Code.INVALID_ARGUMENT, f"num_examples {num_examples} differs from the {declared} declared "
                                                 "at Join (join again to change it)")
        return None

    def _touch(self, client_id: str) -> None:
        record = self._state.clients.get(client_id)
        if record is None:
            raise Refused(Code.NOT_FOUND, f"unknown client {client_id!r}: call Join first")
        record.last_seen = self._clock()

    def _settings(self, client_id: str) -> TrainSettings:
        digest = hashlib.sha256(f"{self.config.seed}:{self.round}:{client_id}".encode()).digest()
        return replace(self.config.train, seed=int.from_bytes(digest[:8], "big") & (2**63 - 1))

