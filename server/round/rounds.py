"""The round lifecycle: open an attempt, end it (commit or retry), make a closed round durable, or give up.

`Rounds` is a part `Federation` (server/round/federation.py) owns: it holds the round's state as values (the
`FederationState`, the open `Attempt`, the pending round, the encoded global) and applies the transitions
`advance` makes under the federation's lock. A round moves forward in memory only once its checkpoint is saved
(server/round/saving.py retries a failed save); until then it stays open.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import numpy as np

from ...common import serde
from ...common.logs import Event
from ...common.messages import Action, Task
from ...common.secagg.exchange import vector_length
from ...common.spec import TensorSpec
from ..pipeline.aggregate import Aggregator
from ..pipeline.stages import NonFiniteGlobal
from . import classes, secure
from .attempt import Attempt
from .closing import NoQuorum, combine_plain, next_state, secure_state
from .config import FederationConfig
from .handouts import MAX_HANDOUTS, Handouts
from .incidents import IncidentKind, Incidents
from .saving import Saver
from .secure import SecureRun
from .state import FederationState, RoundView, round_view

WAITING_LOG_INTERVAL_S = 30.0


class Rounds:
    def __init__(self, config: FederationConfig, state: FederationState,
                 on_round_closed: Callable[[FederationState], None], clock: Callable[[], float],
                 aggregate: Aggregator, rng: np.random.Generator, log: Callable[..., None],
                 changed: Callable[[], None], spec: list[TensorSpec],
                 spec_for: Callable[[tuple[str, ...]], list[TensorSpec]] | None = None) -> None:
        """`spec_for`: the spec for a class list, while the federation gathers its list from the Joins."""
        self.config, self.state, self.spec = config, state, spec
        self.spec_for = spec_for if not state.classes else None
        self._clock, self._aggregate, self._rng = clock, aggregate, rng
        self._log, self._changed = log, changed
        self.global_: serde.Encoded = state.global_encoded()  # the bytes and digest every task hands out
        self.attempt = Attempt()
        self.handouts = Handouts()
        self.last_closed: dict[str, str] = {}  # client -> sha of its accepted update in the previous round
        self.pending: FederationState | None = None  # a closed round not yet durable
        self.aborted: str | None = None
        self.incidents = Incidents()
        self._saver = Saver(on_round_closed, self.incidents, log)
        self._waiting_logged_at = -math.inf
        self.ended_secure: SecureRun | None = None  # the last secure run that ended, to answer its late polls
        self.excluded: set[str] = set()  # sites a secure run named as faulty: left out of the round's next attempts

    @property
    def round(self) -> int:
        return self.state.round

    @property
    def finished(self) -> bool:
        return self.state.round > self.config.rounds

    @property
    def classes_pending(self) -> bool:
        """The class list is still gathered from the Joins (fixed as round 1 opens)."""
        return self.spec_for is not None

    @property
    def online_window_s(self) -> float:
        """A client heard from within this window counts as online (and can be sampled)."""
        return max(self.config.round_timeout_s, 10 * self.config.poll_interval_s)

    def view(self, now: float) -> RoundView:
        """A copy of the open round and the registry for the status view."""
        return round_view(self.state, self.attempt, self.finished, self.incidents.view(now), self.aborted, now)

    def hand_out(self, client_id: str, now: float) -> Task:
        """What `client_id` does now: the round's TRAIN task when it is awaited (the hand-out is counted; after
        MAX_HANDOUTS without an update it fails the attempt instead), WAIT while its backoff runs or it is not
        awaited, FINISHED after the last round."""
        total, global_, a = self.config.rounds, self.global_, self.attempt
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
            self.fail(client_id, f"handed round {self.round} {MAX_HANDOUTS} times without an update")
            self.advance()
        return Task(Action.WAIT, self.round, total, retry_after_s=self.config.poll_interval_s)

    def fail(self, client_id: str, reason: str) -> None:
        self.attempt.failed[client_id] = reason
        self.incidents.record(self._clock(), self.round, self.attempt.number, IncidentKind.CLIENT_FAILED, reason,
                              client_id)
        self._log("warning", Event.CLIENT_FAILED_ROUND, client_id=client_id, round=self.round, reason=reason,
                  attempt=self.attempt.number, expected=self.attempt.expected())

    def advance(self) -> None:
        now, a = self._clock(), self.attempt
        if self.aborted:
            return
        if self.pending is not None:
            if self._saver.due(now):
                self._persist(now)
            return
        answered = len(a.received) + len(a.failed)  # both are disjoint subsets of the sampled
        if a.secure is not None:
            self._advance_secure(now, a.secure)
        elif a.sampled and (answered >= len(a.sampled) or now >= a.deadline):
            self._end_attempt(now)
        if not self.attempt.sampled and self.pending is None and not self.aborted and not self.finished:
            self._open_round(now)

    def _open_round(self, now: float) -> None:
        clients = self.state.clients
        active = [c for c, r in clients.items() if now - r.last_seen <= self.online_window_s]
        eligible = sorted(set(active) - self.excluded)  # a site a secure run named sits the round out
        k = min(self.config.sample_size(len(active)), len(eligible))
        if len(active) < self.config.min_clients or k < self.config.min_sample:
            if now - self._waiting_logged_at >= WAITING_LOG_INTERVAL_S:
                self._waiting_logged_at = now
                self._log("warning", Event.WAITING_FOR_CLIENTS, round=self.round, active=len(active),
                          needed=self.config.min_clients, known=len(clients))
            return
        self._waiting_logged_at = -math.inf
        if self.spec_for is not None:  # the class list, from the classes the active sites named at Join
            self.spec = classes.agree(self.state, sorted(active), self.spec_for, self.config.seed, self._log)
            self.spec_for, self.global_ = None, self.state.global_encoded()
        number = self.attempt.number
        rng = random.Random(f"{self.config.seed}:{self.round}:{number}")
        sampled = set(rng.sample(eligible, k))
        deadline = now + self.config.round_timeout_s
        run = None
        if self.config.secure_aggregation:
            plan = secure.settings(self.config, number, sorted(sampled),
                                   {c: clients[c].num_examples for c in sampled}, vector_length(self.spec))
            run = SecureRun(self.round, plan, deadline, self.config.secagg_stage_timeout_s, self._log)
        self.attempt = Attempt(number, sampled, deadline=deadline, opened_at=now, secure=run)
        self._changed()
        self._log("info", Event.ROUND_STARTED, round=self.round, sampled=sorted(sampled), active=len(active),
                  attempt=number)

    def _end_attempt(self, now: float) -> None:
        """Every sampled client answered (or failed), or the deadline passed: commit if the quorum is met."""
        a = self.attempt
        stragglers = sorted(a.outstanding())
        if len(a.received) < self.config.quorum:
            why = "only failures" if not a.received and not stragglers else "no quorum"
            failures = "; ".join(f"{c}: {r}" for c, r in sorted(a.failed.items())[:3])
            return self._retry(f"{why}: {len(a.received)} of {self.config.quorum} updates needed, "
                               f"{len(a.failed)} failed, {len(stragglers)} silent"
                               + (f" ({failures})" if failures else ""))
        try:
            combined = combine_plain(self.state, self.config, self._aggregate, a.received, len(a.sampled), self._rng)
            self.pending = next_state(self.state, self.config, combined, a.received, a.failed, stragglers,
                                      a.number, now - a.opened_at, self._aggregator_name())
        except NonFiniteGlobal as exc:
            return self._retry(str(exc))
        self._persist(now)

    def _advance_secure(self, now: float, run: SecureRun) -> None:
        """Close the protocol's stages as they complete or time out; commit its sum, or retry the round."""
        if not run.advance(now, set(self.attempt.failed)):
            return
        self._changed()
        if run.failure is not None:
            if run.blame is not None:
                self.excluded.add(run.blame)
                self.fail(run.blame, run.failure)
            return self._retry(f"secure aggregation: {run.failure}")
        if run.result is not None:
            try:
                self.pending = secure_state(self.state, self.config, self.attempt, run, self.spec, now)
            except (NonFiniteGlobal, NoQuorum) as exc:
                return self._retry(str(exc))
            self._persist(now)

    def _aggregator_name(self) -> str:
        return "dp-fedavg" if self.config.dp is not None else str(self.config.aggregator)

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
            self.aborted = f"round {self.round} failed {self.attempt.number} times; last: {reason}"
            self.incidents.record(self._clock(), self.round, failed_attempt, IncidentKind.FEDERATION_ABORTED,
                                  self.aborted)
            self._log("error", Event.FEDERATION_ABORTED, round=self.round, attempts=self.attempt.number,
                      reason=reason, advice="see the client_failed_round events; fix the clients (or the data), "
                                            "then restart the coordinator: it resumes at this round")
            return
        self.incidents.record(self._clock(), self.round, failed_attempt, IncidentKind.ROUND_RETRIED, reason)
        self._log("warning", Event.ROUND_RETRIED, round=self.round, attempt=self.attempt.number, reason=reason,
                  max_retries=self.config.max_retries)

    def _persist(self, now: float) -> None:
        """Make the pending round durable, then (only then) advance to it in memory."""
        pending = self.pending
        assert pending is not None and pending.last_round is not None
        if not self._saver.save(pending, self.round, self.attempt.number, now):
            return
        self._adopt(pending)
        self.last_closed = {c: u.sha256 for c, u in self.attempt.received.items()}
        if self.attempt.secure is not None:
            self.attempt.secure.committed, self.ended_secure = True, self.attempt.secure
        self.attempt, self.pending, self.excluded = Attempt(), None, set()
        self.handouts.reset()
        self._changed()
        summary = pending.last_round
        self._log("info", Event.ROUND_COMPLETED, **{k: v for k, v in summary.to_json().items() if k != "sites"})
        if self.finished:
            self._log("info", Event.FEDERATION_FINISHED, rounds=self.config.rounds)

    def _adopt(self, saved: FederationState) -> None:
        """The live state takes the saved round's values: its global (and its bytes), the participation counted
        in `next_state`, the privacy spent, the per-tensor change scale the next round's adaptive clip is capped
        by. Live records keep what changed meanwhile (last seen, new joins)."""
        for client_id, update in self.attempt.received.items():
            record = self.state.clients[client_id]
            record.rounds_participated = saved.clients[client_id].rounds_participated
            record.last_round, record.last_metrics = self.round, update.metrics
        self.state.global_tensors, self.state.encoded = saved.global_tensors, saved.encoded
        self.global_ = self.state.global_encoded()
        self.state.round, self.state.privacy, self.state.last_round = saved.round, saved.privacy, saved.last_round
        self.state.change_scale = saved.change_scale  # the cap's history is live, not only after a restart
