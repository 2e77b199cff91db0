"""The round's state machine: the only code that writes the round's fields.

Transitions, each a named method, run under the federation's lock (server/round/federation.py takes it):
requests `hand_out`, `accept`, `report` and `secure_step`, and `advance`, which applies what time and answers
decide: `_open` an attempt, `_close` it (commit or `_retry`; `_abort` after --max-retries), `_commit` a closed
round once its checkpoint is saved (server/round/saving.py retries a failed save; until then the round stays
open). Reads (`view`, the queries) never advance it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from ...common import serde
from ...common.logs import Event
from ...common.messages import Action, Code, Refused, SubmitResult, Task
from ...common.secagg.exchange import SecureAnswer, SecureStep
from ...common.spec import TensorSpec
from ..pipeline.aggregate import Aggregator
from ..pipeline.stages import NonFiniteGlobal
from ..pipeline.updates import CheckedUpdate
from . import secure
from .admission import admit, check_report, check_running, find_run
from .attempt import Attempt
from .classes import ClassList
from .closing import NoQuorum, adopt, combine_plain, next_state, no_quorum, secure_state, survivors
from .config import FederationConfig
from .handouts import MAX_HANDOUTS, Handouts
from .incidents import IncidentKind, Incidents
from .sampling import count_silent, draw
from .saving import Saver
from .secure import SecureRun
from .state import FederationState, RoundView, round_view

WAITING_LOG_INTERVAL_S = 30.0


class Rounds:
    def __init__(self, config: FederationConfig, state: FederationState, save: Callable[[FederationState], None],
                 clock: Callable[[], float], aggregate: Aggregator, rng: np.random.Generator,
                 log: Callable[..., None], changed: Callable[[], None], spec: list[TensorSpec],
                 spec_for: Callable[[tuple[str, ...]], list[TensorSpec]] | None = None,
                 observe_save: Callable[[float], None] | None = None) -> None:
        """`save`: the checkpoint stage (`observe_save` is told each save's time); `spec_for`: the spec of a class
        list, while the federation gathers its list from the Joins."""
        self.config = config
        self.state = state
        self.classes = ClassList(spec, spec_for, fixed=bool(state.classes))
        self._clock = clock
        self._aggregate = aggregate
        self._rng = rng
        self._log = log
        self._changed = changed
        self.global_: serde.Encoded = state.global_encoded()  # the bytes and digest every task hands out
        self.attempt = Attempt()
        self.handouts = Handouts()
        self.last_closed: dict[str, str] = {}  # client -> digest of its update in the last round
        self.pending: FederationState | None = None  # a closed round not yet durable
        self.aborted: str | None = None
        self.incidents = Incidents(log)
        self._saver = Saver(save, self.incidents, log, observe_save)
        self._waiting_logged_at = -math.inf
        self.ended_secure: SecureRun | None = None  # the last secure run that ended, to answer its late polls
        # site a secure run convicted -> when its exclusion ends (--client-ttl after; checkpointed as time left)
        self.excluded = {c: clock() + min(left, config.client_ttl_s) for c, left in state.convicted.items()}

    # ----- reads
    @property
    def round(self) -> int:
        return self.state.round

    @property
    def finished(self) -> bool:
        return self.state.round > self.config.rounds

    @property
    def spec(self) -> list[TensorSpec]:
        return self.classes.spec

    def view(self, now: float) -> RoundView:
        """A copy of the open round and the registry for the status view."""
        return round_view(self.state, self.attempt, self.finished, self.incidents.view(now), self.aborted, now)

    def backoff_left(self, client_id: str) -> float:
        """Seconds before `client_id` may be handed the open round again (for a held call to wait out)."""
        sampled = client_id in self.attempt.sampled
        return self.handouts.wait_left(client_id, self._clock()) if sampled else 0.0

    # ----- transitions a request makes
    def hand_out(self, client_id: str) -> Task:
        """What `client_id` does now: the round's TRAIN task when it is awaited (the hand-out is counted; after
        MAX_HANDOUTS without an update it fails the attempt instead), WAIT while its backoff runs or it is not
        awaited, FINISHED after the last round."""
        self.advance()
        check_running(self)
        now = self._clock()
        total = self.config.rounds
        global_ = self.global_
        a = self.attempt
        if self.finished:
            return Task(Action.FINISHED, self.round - 1, total, global_.payload, global_.sha256)
        if self.pending is None and a.awaits(client_id):
            wait = self.handouts.wait_left(client_id, now)
            if wait > 0:
                return Task(Action.WAIT, self.round, total, retry_after_s=wait)
            if not self.handouts.exhausted(client_id):
                self.handouts.record(client_id, now)
                return Task(Action.TRAIN, self.round, total, global_.payload, global_.sha256,
                            self.config.settings_for(self.round, client_id), deadline_s=max(0.0, a.deadline - now),
                            secure=a.secure.plan[client_id] if a.secure else None)
            self._fail(client_id, f"handed round {self.round} {MAX_HANDOUTS} times without an update")
            self.advance()
        return Task(Action.WAIT, self.round, total, retry_after_s=self.config.poll_interval_s)

    def admit(self, client_id: str, round_: int, sha: str, num_examples: int) -> SubmitResult | None:
        """Before an update is parsed: the reply to a repeat, None when it may count, or `Refused`."""
        self.advance()
        return admit(self, client_id, round_, sha, num_examples)

    def accept(self, update: CheckedUpdate, client_id: str, round_: int) -> SubmitResult:
        """A parsed update joins the open attempt (admitted again: the round may have moved while it was
        parsed); the round closes when it was the last one awaited."""
        early = self.admit(client_id, round_, update.digest, update.num_examples)
        if early is not None:
            return early
        a = self.attempt
        a.received[client_id] = update
        # debug: one line per client per round costs more than the round's work at 500 clients; the round's
        # round_completed event and rounds.jsonl name every accepted client
        self._log("debug", Event.UPDATE_ACCEPTED, client_id=client_id, round=round_, num_examples=update.num_examples,
                  received=len(a.received), expected=a.expected())
        result = SubmitResult(False, len(a.received), a.expected())
        self.advance()
        if self.pending is not None and self.pending.round == round_ + 1:
            raise Refused(Code.UNAVAILABLE, f"round {round_} is aggregated but could not be saved yet: retry (your "
                                            "update is kept)")
        return result

    def report(self, client_id: str, round_: int, reason: str) -> SubmitResult:
        """A sampled client cannot produce an update: stop waiting for it in this attempt of the round."""
        self.advance()
        repeated = check_report(self, client_id, round_)
        if repeated is not None:
            return repeated
        self._fail(client_id, reason)
        result = SubmitResult(False, len(self.attempt.received), self.attempt.expected())
        self.advance()
        return result

    def secure_step(self, step: SecureStep, weight: int) -> SecureAnswer:
        """One SecureAggregate call: its stage message (if any) for the open run, the answer of what comes next."""
        self.advance()
        run = find_run(self, step)
        if step.message is not None and self.attempt.secure is run:  # an ended run takes no message
            run.receive(step, weight)
            self.advance()  # the last expected message closes its stage now
        return run.answer(step.client_id)

    # ----- what time and answers decide
    def advance(self) -> None:
        now = self._clock()
        a = self.attempt
        if self.aborted:
            return
        if self.pending is not None:
            if self._saver.due(now):
                self._commit(now)
            return
        if a.secure is not None:
            self._advance_secure(now, a.secure)
        elif a.sampled and (len(a.received) + len(a.failed) >= len(a.sampled) or now >= a.deadline):
            self._close(now)
        if not self.attempt.sampled and self.pending is None and not self.aborted and not self.finished:
            self._open(now)

    def _open(self, now: float) -> None:
        excluded = {c for c, end in self.excluded.items() if end > now}  # an ended exclusion frees the site now
        sample = draw(self.config, self.state.clients, excluded, self.round, self.attempt.number, now)
        if not sample.enough:
            if now - self._waiting_logged_at >= WAITING_LOG_INTERVAL_S:
                self._waiting_logged_at = now
                self._log("warning", Event.WAITING_FOR_CLIENTS, round=self.round, active=len(sample.active),
                          needed=self.config.min_clients, known=len(self.state.clients))
            return
        self._waiting_logged_at = -math.inf
        if self.classes.agree(self.state, sample.active, self.config.seed, self._log):  # gathered from the Joins
            self.global_ = self.state.global_encoded()
        number = self.attempt.number
        sampled = sample.sampled
        deadline = now + self.config.round_timeout_s
        run = None
        if self.config.secure_aggregation:
            records = {c: self.state.clients[c] for c in sampled}
            run = secure.open_run(self.config, self.round, number, sorted(sampled),
                                  {c: r.num_examples for c, r in records.items()}, self.spec,
                                  self.state.change_scale, deadline, self._log,
                                  {c: r.signing_key for c, r in records.items()})
        self.attempt = Attempt(number, set(sampled), deadline=deadline, opened_at=now, secure=run)
        self._changed()
        self._log("info", Event.ROUND_STARTED, round=self.round, sampled=sorted(sampled), active=len(sample.active),
                  attempt=number)

    def _close(self, now: float) -> None:
        """Every sampled client answered (or failed), or the deadline passed: commit if the quorum is met."""
        a = self.attempt
        count_silent(self.state.clients, a.outstanding(), now)
        short = no_quorum(a, self.config.quorum)
        if short is not None:
            return self._retry(short)
        try:
            combined = combine_plain(self.state, self.config, self._aggregate, a.received, len(a.sampled), self._rng)
            aggregator = "dp-fedavg" if self.config.dp is not None else str(self.config.aggregator)
            self.pending = next_state(self.state, self.config, combined, a.received, a.failed,
                                      sorted(a.outstanding()), a.number, now - a.opened_at, aggregator)
        except NonFiniteGlobal as exc:
            return self._retry(str(exc))
        self._commit(now)

    def _advance_secure(self, now: float, run: SecureRun) -> None:
        """Close the protocol's stages as they complete or time out; commit its sum, or retry the round."""
        if not run.advance(now, set(self.attempt.failed)):
            stall = run.stalled(now, set(self.attempt.failed))
            if stall is not None:
                stage, missing = stall
                self.incidents.record(now, self.round, self.attempt.number, IncidentKind.STAGE_STALLED,
                                      f"secure stage {stage} waits on {', '.join(missing)}, a stage timeout after "
                                      f"the others answered; it closes without them at {run.deadline - now:.0f} s",
                                      attempt=self.attempt.number, stage=str(stage), waiting_on=missing)
                self._changed()
            return
        self._changed()
        if run.failure is not None:
            for site in run.blame:
                self.excluded[site] = now + self.config.client_ttl_s
                self._fail(site, run.failure)
            return self._retry(f"secure aggregation: {run.failure}")
        if run.result is not None:
            self.attempt.received = survivors(run)
            count_silent(self.state.clients, self.attempt.outstanding(), now)
            try:
                self.pending, projected = secure_state(self.state, self.config, self.attempt, run, self.spec, now)
            except (NonFiniteGlobal, NoQuorum) as exc:
                return self._retry(str(exc))
            for why in run.bounded(projected):
                self.incidents.record(now, self.round, self.attempt.number, IncidentKind.AGGREGATE_BOUNDED, why,
                                      attempt=self.attempt.number)
            self._commit(now)

    def _fail(self, client_id: str, reason: str) -> None:
        self.attempt.failed[client_id] = reason
        self.incidents.record(self._clock(), self.round, self.attempt.number, IncidentKind.CLIENT_FAILED, reason,
                              client_id, attempt=self.attempt.number, expected=self.attempt.expected())

    def _retry(self, reason: str) -> None:
        """Open the round afresh: hand-out counts are per attempt, so a client that delivered (or failed
        transiently) in an earlier attempt is never failed for it in this one."""
        failed_attempt = self.attempt.number
        if self.attempt.secure is not None:
            self.attempt.secure.failure = self.attempt.secure.failure or reason
            self.ended_secure = self.attempt.secure
        self.handouts.new_attempt(set(self.attempt.received))
        self.attempt = Attempt(failed_attempt + 1)
        self._changed()
        if self.attempt.number > self.config.max_retries:
            return self._abort(failed_attempt, reason)
        self.incidents.record(self._clock(), self.round, failed_attempt, IncidentKind.ROUND_RETRIED, reason,
                              attempt=self.attempt.number, max_retries=self.config.max_retries)

    def _abort(self, failed_attempt: int, reason: str) -> None:
        self.aborted = f"round {self.round} failed {self.attempt.number} times; last: {reason}"
        self.incidents.record(self._clock(), self.round, failed_attempt, IncidentKind.FEDERATION_ABORTED,
                              self.aborted, attempts=self.attempt.number,
                              advice="see the client_failed_round events; fix the clients (or the data), then "
                                     "restart the coordinator: it resumes at this round")

    def _commit(self, now: float) -> None:
        """Make the pending round durable, then (only then) advance to it in memory."""
        pending = self.pending
        assert pending is not None and pending.last_round is not None
        pending.convicted = {c: end - now for c, end in self.excluded.items() if end > now}
        if not self._saver.save(pending, self.round, self.attempt.number, now):
            return
        adopt(self.state, pending, self.attempt.received)
        self.global_ = self.state.global_encoded()
        self.last_closed = {c: u.digest for c, u in self.attempt.received.items()}
        if self.attempt.secure is not None:
            self.attempt.secure.committed = True
            self.ended_secure = self.attempt.secure
        self.attempt = Attempt()
        self.pending = None
        self.excluded = {c: end for c, end in self.excluded.items() if end > now}
        self.handouts.reset()
        self._changed()
        self._log("info", Event.ROUND_COMPLETED,
                  **{k: v for k, v in pending.last_round.to_json().items() if k != "sites"})
        if self.finished:
            self._log("info", Event.FEDERATION_FINISHED, rounds=self.config.rounds)
