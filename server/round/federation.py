"""The coordinator's domain logic: joins, tasks, submissions, failure reports, the status snapshot.

No gRPC and no I/O besides the checkpoint hook: the servicer translates requests into these calls and
`Refused` into status codes; time comes from an injectable clock. Requests are checked by server/round/admission.py,
updates pass the stages of server/pipeline/stages.py (decode and check before the lock), and the round lifecycle is a
part this class owns (server/round/rounds.py). Log lines are rendered and waiting clients woken after the lock.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from ...common import serde
from ...common.logs import Event, get_logger
from ...common.messages import (
    MAX_FAILURE_DETAIL_CHARS,
    Code,
    FailureReason,
    Metrics,
    Refused,
    SubmitResult,
    Task,
)
from ...common.secagg.exchange import SecureAnswer, SecureStep
from ...common.spec import TensorSpec
from ..pipeline.aggregate import Aggregator, make_aggregator
from ..pipeline.stages import accept
from .admission import check_classes, check_join, register
from .config import FederationConfig
from .longpoll import ChangeFeed
from .rounds import Rounds
from .section import Section
from .state import ClientRecord, FederationState, RoundView
from .summary import RoundSummary

__all__ = ["ClientRecord", "Federation", "FederationConfig", "FederationState", "RoundView"]
log = get_logger("coordinator")
CLOSE_MARGIN_S = 0.5  # a call this near the deadline that closes the round or stage runs off the event loop


class Federation:
    def __init__(
        self,
        config: FederationConfig,
        spec: list[TensorSpec],
        state: FederationState,
        save: Callable[[FederationState], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        aggregate: Aggregator | None = None,
        changes: ChangeFeed | None = None,
        rng: np.random.Generator | None = None,
        spec_for: Callable[[tuple[str, ...]], list[TensorSpec]] | None = None,
        observe_save: Callable[[float], None] | None = None,
    ) -> None:
        """`save` makes a closed round durable (the checkpoint stage); if it raises, the round stays open and the
        save is retried. `aggregate` defaults to the config's aggregator; `rng` draws DP noise (default: seeded
        from the OS, never from the federation seed). `spec_for`: the spec of a class list, when the federation
        gathers its list from the sites' Joins (it is fixed as round 1 opens). `observe_save` is told each
        checkpoint's wall time (the metrics)."""
        serde.validate(state.global_tensors, spec)
        self.config = config
        self._state = state
        self._clock = clock
        self.changes = changes or ChangeFeed()
        self._section = Section(self.changes, log)
        self._critical = self._section.hold
        self._log = self._section.log
        self._rounds = Rounds(config, state, save or (lambda _s: None), clock,
                              aggregate or make_aggregator(config.aggregator, config.trim),
                              rng or np.random.default_rng(), self._section.log, self._section.changed, spec,
                              spec_for, observe_save)
        self.incidents = self._rounds.incidents
        self._joins_by_peer: dict[str, int] = {}  # new ids registered per peer address (open mode), in memory

    # ----- reads: none of them advances the round
    @property
    def spec(self) -> list[TensorSpec]:
        """The global tensors every update must hold (the class head's join once the class list is fixed)."""
        return self._rounds.spec

    @property
    def classes(self) -> tuple[str, ...]:
        """The federation's class list (empty while gathered, or when the method shares none)."""
        return self._state.classes

    @property
    def classes_pending(self) -> bool:
        return self._rounds.classes.pending

    @property
    def round(self) -> int:
        return self._rounds.round

    @property
    def finished(self) -> bool:
        return self._rounds.finished

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

    def snapshot(self) -> RoundView:
        """A consistent copy of the open round and the client registry, for the status view and metrics."""
        with self._critical():
            return self._rounds.view(self._clock())

    def backoff_left(self, client_id: str) -> float:
        """Seconds before `client_id` may be handed the open round again (for a held call to wait out). Without
        the lock: the event loop asks, and must not wait on a round closing (a set and a dict lookup, each atomic)."""
        return self._rounds.backoff_left(client_id)

    # ----- requests
    def join(self, client_id: str, num_examples: int, spec: list[TensorSpec], secret: str | None = None,
             peer: str | None = None, capabilities: frozenset[str] = frozenset(),
             class_names: tuple[str, ...] = (), signing_key: bytes = b"") -> int:
        """Register or re-register a client; returns its FedAvg weight (the declared count, capped).
        `peer`: the caller's address in open mode beyond loopback, whose new ids are counted and capped.
        `class_names`: its data's classes (gathered into the class list; refused when outside a fixed one).
        `signing_key`: the key it signs secure rounds with, bound at the first Join that sends one."""
        check_join(self.config, self.spec, client_id, num_examples, spec, secret, capabilities, signing_key)
        with self._critical():
            check_classes(self._state.classes, class_names)
            rejoined = client_id in self._state.clients
            now = self._clock()
            record, evicted = register(self.config, self._state, self._joins_by_peer, client_id,
                                       num_examples, peer, set(self._rounds.attempt.sampled), now, signing_key)
            if evicted is not None:
                self._log("info", Event.CLIENT_EVICTED, client_id=evicted, for_client_id=client_id,
                          advice="it never delivered an update and its trial failed or it was not seen for "
                                 "--client-ttl")
            record.check_secret(secret)
            if self.config.binds_signing_keys:
                record.bind_signing_key(signing_key)
            if secret and record.secret_sha256 is None:
                record.secret_sha256 = serde.sha256(secret.encode())
            record.num_examples = num_examples
            record.class_names = class_names
            record.last_seen = self._clock()
            weight = self.config.weight(num_examples)
            if weight < num_examples:
                self._log("warning", Event.WEIGHT_CAPPED, client_id=client_id, num_examples=num_examples,
                          weight=weight, advice="raise --max-examples-per-client if this site really has that many")
            self._log("info", Event.CLIENT_JOINED, client_id=client_id, num_examples=num_examples, weight=weight,
                      rejoined=rejoined, round=self.round, clients=len(self._state.clients))
            self._rounds.advance()  # enough sites now: the round opens
            return weight

    def authorize(self, client_id: str, secret: str | None) -> None:
        """Open mode: refuse a caller that lacks the join secret bound to `client_id` (if one is bound)."""
        record = self._state.clients.get(client_id)
        if record is not None:
            record.check_secret(secret)

    def task(self, client_id: str) -> Task:
        with self._critical():
            record = self._touch(client_id)
            if self.config.binds_signing_keys and not record.signing_key:
                raise Refused(Code.NOT_FOUND, f"client {client_id!r} bound no signing key (its record is older than "
                                              "signed secure rounds): call Join again, which binds it")
            return self._rounds.hand_out(client_id)

    def try_enter(self) -> bool:
        """Enter the critical section if no other thread holds it (a round closing, a checkpoint being written):
        for the servicer's event loop, which must never wait on it. True: entered, `leave` releases it (and then
        renders the log lines and wakes the held calls, as every holder does)."""
        return self._section.try_enter()

    def leave(self) -> None:
        self._section.leave()

    def when_free(self, callback: Callable[[], None]) -> None:
        """`callback` once the thread that holds the section leaves it (Section.when_free): after a failed
        `try_enter`, ask `try_enter` again before waiting for it."""
        self._section.when_free(callback)

    def closing(self, client_id: str) -> bool:
        """Whether a call from `client_id` now may close the open round or a secure stage, or commit one: its
        message is the last one awaited, the deadline that closes it is near (CLOSE_MARGIN_S: the call may reach
        it while it runs), or a closed round waits to be saved. The servicer then runs it on a worker thread (the
        close's work would hold the event loop). Asked inside the section."""
        rounds = self._rounds
        attempt = rounds.attempt
        deadline = attempt.secure.deadline if attempt.secure is not None else attempt.deadline
        return rounds.pending is not None or self._clock() + CLOSE_MARGIN_S >= deadline or \
            attempt.closes_with(client_id)

    def heartbeat(self, client_id: str) -> int:
        """A running client is alive (training or waiting): refresh its last-seen time; returns the round."""
        with self._critical():
            self._touch(client_id)
            return self.round

    def submit(self, client_id: str, round_: int, payload: bytes, num_examples: int,
               metrics: Metrics) -> SubmitResult:
        """An update: admitted, parsed and checked outside the lock (server/pipeline/stages.py `accept`), then
        taken into the round."""
        if client_id not in self._state.clients:  # before any parsing; checked again under the lock
            raise Refused(Code.NOT_FOUND, f"unknown client {client_id!r}: call Join first")
        if self.config.secure_aggregation:
            raise Refused(Code.FAILED_PRECONDITION, "this federation runs secure aggregation: updates travel "
                                                    "masked through SecureAggregate, never in the clear")
        digest = serde.resubmit_digest(payload)
        with self._critical():
            self._touch(client_id)
            early = self._rounds.admit(client_id, round_, digest, num_examples)
        if early is not None:
            return early
        try:
            update = accept(payload, num_examples, metrics, self.spec, self.config.limits, digest)
        except Refused as exc:
            log.warning(Event.UPDATE_REJECTED, client_id=client_id, round=round_, code=str(exc.code),
                        reason=exc.message)
            raise
        with self._critical():
            self._touch(client_id)
            return self._rounds.accept(update, client_id, round_)

    def secure_step(self, step: SecureStep) -> SecureAnswer:
        """One SecureAggregate call: take the site's stage message (if any), answer what it does next."""
        with self._critical():
            record = self._touch(step.client_id)
            return self._rounds.secure_step(step, record.num_examples)

    def report_failure(self, client_id: str, round_: int, reason: FailureReason, detail: str = "",
                       attempt: int = 0) -> SubmitResult:
        """A sampled client cannot produce an update: stop waiting for it in this attempt of the round. A
        PEER_REFUSED report names the secure attempt it is about: only the open one counts."""
        with self._critical():
            self._touch(client_id)
            why = f"{reason}: {detail[:MAX_FAILURE_DETAIL_CHARS]}" if detail else str(reason)
            if reason == FailureReason.PEER_REFUSED:
                self._rounds.advance()  # an attempt past its deadline ends first
                secure = self._rounds.attempt.secure
                if secure is None or round_ != self.round or attempt != secure.attempt:
                    raise Refused(Code.FAILED_PRECONDITION, f"secure attempt {attempt} of round {round_} has ended: "
                                                            "a refusal in it counts nowhere")
                secure.refusals.record(client_id, detail)  # counted toward blame only beside most other sites'
            return self._rounds.report(client_id, round_, why)

    def tick(self) -> None:
        """Apply time-based transitions (deadlines, checkpoint retries); the app calls this periodically."""
        with self._critical():
            self._rounds.advance()

    def _touch(self, client_id: str) -> ClientRecord:
        record = self._state.clients.get(client_id)
        if record is None:
            raise Refused(Code.NOT_FOUND, f"unknown client {client_id!r}: call Join first")
        record.last_seen = self._clock()
        return record
