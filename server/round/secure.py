"""One attempt of a secure round on the coordinator: the protocol's coordinator, closed stage by stage.

`SecureRun` wraps `common.secagg.coordinator.SecAggCoordinator` for one round attempt. It takes each site's stage
message (`receive`), tells each site what comes next (`answer`: held by the servicer while PENDING), and closes a
stage (`advance`) when every site expected at it has answered or its deadline passed: the keys stage at the round's
deadline (sites send their keys once they finished training), every later stage `secagg_stage_timeout_s` after the
previous one closed. A stage closing with fewer sites than the threshold, a judged complaint (the accused or the
false accuser convicted on the evidence), or a dealer whose shares do not reconstruct, ends the run with `failure`
(and `blame`): the round lifecycle (server/round/rounds.py) retries it with fresh keys, without the blamed sites.
What the unmasked sum may be is server/round/secure_bounds.py's.

Nothing here is saved: keys, bundles and masked vectors live in memory for one attempt. A restarted coordinator
starts the round's protocol again under a new run id (drawn afresh for every attempt): no mask is ever reused.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np

from ...common.logs import Event
from ...common.messages import Code, Refused
from ...common.secagg.exchange import (
    Contribution,
    SecureAnswer,
    SecureSettings,
    SecureStep,
    Status,
    segments,
    vector_length,
)
from ...common.secagg.identity import PeerCheck, coordinator_check
from ...common.secagg.protocol import (
    AccusationError,
    AdvertiseKeys,
    AggregateResult,
    ChecksPassed,
    InconsistentSiteError,
    KeysAnnounced,
    ProtocolError,
    ShareKeys,
    SharesChecked,
    SharesDelivered,
    Stage,
    TooFewSitesError,
    UnmaskRequest,
    UnmaskResponse,
)
from ...common.spec import TensorSpec, class_rows
from ..pipeline.statistics import STRUCTURED
from ..pipeline.updates import check_metrics
from .config import FederationConfig
from .refusals import Refusals
from .secagg_coordinator import SecAggCoordinator
from .secure_bounds import SumBounds
from .secure_plan import settings

ORDER = list(Stage)


def open_run(config: FederationConfig, round_: int, attempt: int, sampled: list[str], counts: Mapping[str, int],
             spec: list[TensorSpec], previous_scale: Mapping[str, float], deadline: float,
             log: Callable[..., None], signing_keys: Mapping[str, bytes] | None = None) -> SecureRun:
    """One attempt: the sampled sites' settings, the check of their signatures (identity.coordinator_check) and
    `--adaptive-clip`'s per-tensor bounds on all but the class statistics (closing.secure_state), none under DP."""
    clipped = tuple(sorted(s.name for s in spec if s.name not in STRUCTURED)) \
        if config.adaptive_clip and config.dp is None else ()
    verifier = coordinator_check(config.signing_ca, {c: (signing_keys or {}).get(c, b"") for c in sampled})
    plan = settings(config, attempt, sampled, counts, vector_length(spec), clipped, all(map(verifier.knows, sampled)))
    parts = {k: v for k, v in segments(spec).items() if k in clipped}
    return SecureRun(round_, plan, deadline, config.secagg_stage_timeout_s, log, verifier,
                     SumBounds(config.adaptive_clip, config.update_clip_norm, previous_scale, parts, class_rows(spec)))


class SecureRun:
    def __init__(self, round_: int, plan: Mapping[str, SecureSettings], first_deadline: float,
                 stage_timeout_s: float, log: Callable[..., None], verifier: PeerCheck | None = None,
                 sums: SumBounds | None = None) -> None:
        """`verifier`: every advert and check of each site it knows must be signed by that site (identity.py);
        `sums`: the per-tensor bounds of the attempt (none: the whole-vector bound only)."""
        any_site = next(iter(plan.values()))
        self.round = round_
        self.attempt = any_site.attempt
        self.plan = dict(plan)
        self.config = any_site.round_config(round_)
        self.core = SecAggCoordinator(self.config, verifier)
        self.deadline = first_deadline
        self._stage_timeout_s = stage_timeout_s
        self._log = log
        self.sent: dict[str, Stage] = {}  # the last stage each site sent a message at
        self._answered: dict[Stage, int] = {}  # how many sites sent a message at each stage
        self._expecting: tuple[Stage, frozenset[str]] | None = None  # the open stage's `_expected()`, kept
        self.contributions: dict[str, Contribution] = {}  # masked inputs with their counts and metrics
        self._announced: KeysAnnounced | None = None
        self._delivered: dict[str, SharesDelivered] = {}
        self._passed: ChecksPassed | None = None
        self._unmask: UnmaskRequest | None = None
        self.result: AggregateResult | None = None
        self.sums = sums or SumBounds()
        self.committed = False  # set by the round lifecycle once the round is durable
        self._first_answer_at: float | None = None  # when the open stage got its first message
        self._stall_reported: Stage | None = None
        self.failure: str | None = None
        self.blame: tuple[str, ...] = ()  # the sites the failure names (restart without them)
        self.refusals = Refusals(self.config.sampled)  # whom sites refused to share with (ReportFailure)

    @property
    def stage(self) -> Stage:
        return self.core.stage

    def receive(self, step: SecureStep, declared: int) -> None:
        """A site's message for its stage; `declared`: its Join count. Refused (nothing changes) when it does
        not fit."""
        msg = step.message
        site = step.client_id
        core = self.core
        stage = _stage_of(msg)
        if self.failure is not None or ORDER.index(stage) < ORDER.index(self.stage):
            return  # too late or over: `answer` tells the site
        try:
            if isinstance(msg, AdvertiseKeys):
                norms = self.sums.check(step.change_norms)
                core.receive_advertise(msg)
                self.sums.keep(site, norms)
            elif isinstance(msg, ShareKeys):
                core.receive_shares(msg)
            elif isinstance(msg, SharesChecked):
                core.receive_check(msg)
            elif isinstance(msg, Contribution):
                check_metrics(msg.metrics)  # as a plain update's: the round summary records them
                if msg.num_examples != declared:
                    raise Refused(Code.INVALID_ARGUMENT, f"num_examples {msg.num_examples} differs from the "
                                                         f"{declared} declared at Join (join again to change it)")
                try:
                    masked = msg.read(site, self.config.field, self.config.length)
                except ValueError as exc:
                    raise Refused(Code.INVALID_ARGUMENT, f"secure aggregation: a masked input that does not fit "
                                                         f"the round's field: {exc}") from None
                core.receive_masked(masked)
                self.contributions[site] = msg
            elif isinstance(msg, UnmaskResponse):
                core.receive_unmask(msg)
                if site in core.excluded:
                    self._log("warning", Event.SECAGG_SITE_EXCLUDED, round=self.round, attempt=self.attempt,
                              client_id=site, reason=core.excluded[site])
        except ProtocolError as exc:
            if self.sent.get(site) == stage:
                return  # a retried call that already counted
            raise Refused(Code.FAILED_PRECONDITION, f"secure aggregation: {exc}") from None
        if self.sent.get(site) is not stage:
            self._answered[stage] = self._answered.get(stage, 0) + 1
        self.sent[site] = stage

    def answer(self, site: str) -> SecureAnswer:
        """What `site` is told now: PENDING while its stage is open, else its next input (or DONE/ABANDONED)."""
        if self.failure is not None:
            return SecureAnswer(Status.ABANDONED, reason=self.failure)
        sent = self.sent.get(site)
        if sent is None:
            if self.stage is not Stage.ADVERTISE:
                return SecureAnswer(Status.ABANDONED, reason=f"the keys stage of round {self.round} closed without "
                                                             "this site's keys")
            raise Refused(Code.FAILED_PRECONDITION, "send this round's keys first")
        behind = ORDER.index(self.stage) - ORDER.index(sent)
        if behind == 0:
            return SecureAnswer(Status.PENDING)
        if behind == 1:  # the stage it answered closed; the next one is open
            nxt: KeysAnnounced | SharesDelivered | ChecksPassed | UnmaskRequest | None = {
                Stage.ADVERTISE: self._announced, Stage.SHARE_KEYS: self._delivered.get(site),
                Stage.CHECK_SHARES: self._passed if self._passed and site in self._passed.checked else None,
                Stage.MASKED_INPUT: self._unmask if self._unmask and site in self._unmask.survivors else None,
            }.get(sent)
            if nxt is not None:
                return SecureAnswer(Status.NEXT, nxt, tensor_clips=self.sums.clips if sent is Stage.ADVERTISE else {})
            if sent is Stage.UNMASK and self.result is not None:
                return SecureAnswer(Status.DONE) if self.committed else SecureAnswer(Status.PENDING)
        why = self.core.excluded.get(site) or self.core.guilty.get(site) or \
            "its message for the next stage did not arrive before it closed"
        return SecureAnswer(Status.ABANDONED, reason=f"left out of round {self.round}: {why}")

    def advance(self, now: float, failed: set[str]) -> bool:
        """Close the open stage if everyone expected answered or its deadline passed; True when one closed."""
        if self.failure is not None or self.result is not None:
            return False
        if self._waiting_on(failed) > 0 and now < self.deadline:
            return False
        closing = self.stage
        answered = self._answered.get(closing, 0)
        expected = len(self._expected() - failed)
        guilty: dict[str, str] = {}
        try:
            if closing is Stage.ADVERTISE:
                self._announced = self.core.announce()
                self.sums.announce(self._announced.keys)
            elif closing is Stage.SHARE_KEYS:
                self._delivered = self.core.deliver()
            elif closing is Stage.CHECK_SHARES:
                self._passed = self.core.passed()
            elif closing is Stage.MASKED_INPUT:
                self._unmask = self.core.unmask_request()
                for site, why in self.core.excluded.items():
                    self._log("warning", Event.SECAGG_SITE_EXCLUDED, round=self.round, attempt=self.attempt,
                              client_id=site, reason=why)
            else:
                self.result = self.core.finish()
        except TooFewSitesError as exc:
            guilty = self.refusals.blamed()  # sites that left because most peers refused one of them
            self.failure = str(exc) + (f"; left out: {', '.join(guilty)}, refused by most peers" if guilty else "")
        except AccusationError as exc:
            self.failure = f"a complaint was judged on its evidence: {exc}"
            guilty = exc.guilty
        except InconsistentSiteError as exc:
            self.failure = str(exc)
            guilty = {exc.site_id: str(exc)}
        self.blame = tuple(sorted(guilty))
        for site, why in sorted(guilty.items()):
            self._log("warning", Event.SECAGG_SITE_EXCLUDED, round=self.round, attempt=self.attempt, client_id=site,
                      reason=why)
        self.deadline = now + self._stage_timeout_s
        self._first_answer_at = None
        self._log("info", Event.SECAGG_STAGE_CLOSED, round=self.round, attempt=self.attempt, stage=str(closing),
                  answered=answered, expected=expected, failure=self.failure, signed=self.core.signed)
        return True

    def stalled(self, now: float, failed: set[str]) -> tuple[Stage, list[str]] | None:
        """The open stage and the sites it waits on, once per stage, when it has waited on them longer than a
        stage's timeout since its first message was seen (a site stopped mid-protocol, or is far slower than the
        others; the keys stage included, which otherwise waits for the round's deadline); None otherwise."""
        if self.failure is not None or self.result is not None or self._stall_reported is self.stage:
            return None
        if not self._answered.get(self.stage):
            return None
        if self._first_answer_at is None:
            self._first_answer_at = now
        if now - self._first_answer_at < self._stage_timeout_s:
            return None
        missing = sorted(s for s in self._expected() - failed if self.sent.get(s) is not self.stage)
        if not missing:
            return None
        self._stall_reported = self.stage
        return self.stage, missing

    def closes_with(self, site: str, failed: set[str]) -> bool:
        """Whether the open stage waits on `site` alone: its message would close the stage (the stage's work).
        Asked for every call the event loop takes."""
        if self.failure is not None or self.result is not None or self.sent.get(site) is self.stage:
            return False
        return site in self._expected() and self._waiting_on(failed) <= 1

    def _waiting_on(self, failed: set[str]) -> int:
        """How many sites the open stage still waits on (expected, not failed, not answered), in O(sites failed)
        for every call: each site that answered was expected (the protocol refuses the others' messages)."""
        stage = self.stage
        expected = self._expected()
        gone = expected & failed
        answered_gone = sum(1 for s in gone if self.sent.get(s) is stage)
        return len(expected) - len(gone) - (self._answered.get(stage, 0) - answered_gone)

    def _expected(self) -> frozenset[str]:
        """The sites the open stage expects a message from (fixed while it is open)."""
        stage = self.stage
        if self._expecting is None or self._expecting[0] is not stage:
            self._expecting = (stage, frozenset({
                Stage.ADVERTISE: self.config.sampled, Stage.SHARE_KEYS: self.core.keys,
                Stage.CHECK_SHARES: self._delivered, Stage.MASKED_INPUT: self._passed.checked if self._passed else (),
            }.get(stage, self._unmask.survivors if self._unmask else ())))
        return self._expecting[1]

    def total(self) -> np.ndarray:
        """The unmasked sum of the survivors' weighted changes (after `advance` produced a result), each bounded
        tensor's part and the whole never longer than the survivors could send honestly (server/round/
        secure_bounds.py: under DP, the whole's bound allows six standard deviations of the noise's norm)."""
        assert self.result is not None and np.isfinite(self.result.total).all()
        survivors = [self.plan[s] for s in self.result.survivors]
        clips = math.fsum(s.weight * s.clip_norm for s in survivors)
        noise = math.sqrt(math.fsum(s.noise_std ** 2 for s in survivors))
        return self.sums.hold(self.result.total, (s.weight for s in survivors), clips,
                              self.result.error_bound + 6 * noise)

    def bounded(self, projected: str) -> list[str]:
        """What the committed aggregate had to be bounded for (after `total`): the operator's incidents. A
        survivor masked values outside its range, or (`projected`: the relation `closing.secure_state` found
        broken) class statistics no honest sites can send."""
        return self.sums.findings() + ([f"the unmasked class statistics break a relation every honest site's keep "
                                        f"({projected}): committed their projection onto statistics honest sites "
                                        "could send"] if projected else [])

    def survivors_weight(self) -> float:
        assert self.result is not None
        return math.fsum(self.plan[s].weight for s in self.result.survivors)


def _stage_of(msg: object) -> Stage:
    for kind, stage in ((AdvertiseKeys, Stage.ADVERTISE), (ShareKeys, Stage.SHARE_KEYS),
                        (SharesChecked, Stage.CHECK_SHARES), (Contribution, Stage.MASKED_INPUT),
                        (UnmaskResponse, Stage.UNMASK)):
        if isinstance(msg, kind):
            return stage
    raise Refused(Code.INVALID_ARGUMENT, "a secure-aggregation message is needed here")
