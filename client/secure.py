"""A site's part of a secure round: its change clipped, weighted and masked, through the five exchanges.

The TRAIN task of a secure federation carries `SecureSettings`. After training, the site computes its change
from the round's global, sends its keys with the L2 norm of its change of each tensor the coordinator bounds one
by one (--adaptive-clip; none under DP), clips each such tensor's change to the bound announced with the keys and
the whole change (the spec's tensors as one vector) to `clip_norm`, adds its share of the DP noise when the
federation runs DP (from the operating system's entropy), and drives a `SecAggSite` through the rest: shares,
their check, masked input, reveal. Each call is held by the coordinator until its stage closes, so a
round costs five calls (plus polls while a slow site is awaited). The coordinator never sees the change itself.
"""

from __future__ import annotations

import contextlib
import math
import random
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from ..common.clip import clip_l2, clip_rows, l2, row_bound
from ..common.logs import Event, get_logger
from ..common.messages import MAX_HOLD_S, FailureReason, Metrics, Refused, Task
from ..common.secagg.exchange import (
    Contribution,
    SecureAnswer,
    SecureSettings,
    SecureStep,
    StageMessage,
    Status,
    flatten,
)
from ..common.secagg.identity import Identity, PeerCheck
from ..common.secagg.noise import add_noise_share
from ..common.secagg.protocol import (
    ChecksPassed,
    KeysAnnounced,
    PeerRefused,
    SecAggError,
    SharesDelivered,
    UnmaskRequest,
)
from ..common.spec import CLASS_ROW_TENSORS, TensorSpec
from .connection import Backoff, Connection
from .secagg_site import SecAggSite

log = get_logger("client")
T = TypeVar("T")


@dataclass(frozen=True)
class SecureOutcome:
    committed: bool  # the round's sum, with this site's change in it, was committed
    reason: str = ""  # why not
    next_task: Task | None = None  # the next task, asked for in the round's last call (None: ask GetTask)


# A PENDING answer faster than this was not held by the coordinator; the next poll waits (connection's policy).
QUICK_ANSWER_S = 1.0
POLL_BACKOFF = Backoff(initial_s=0.1, max_s=1.0, max_attempts=0)  # well within a stage deadline
_rng = random.Random()


class Abandoned(Exception):
    pass


def change_norms(base: Mapping[str, np.ndarray], update: Mapping[str, np.ndarray],
                 settings: SecureSettings) -> dict[str, float]:
    """The L2 norm of this site's change of each tensor the coordinator bounds one by one, sent with its keys: the
    median of the sites' norms sets each tensor's bound. None under DP (a data-dependent bound voids its analysis)."""
    if settings.clipped_tensors and settings.noise_std > 0:
        raise Abandoned("the coordinator asked for change norms in a DP round: refused (they would be released "
                        "outside the privacy accounting)")
    unknown = sorted(set(settings.clipped_tensors) - set(update))
    if unknown:
        raise Abandoned(f"the coordinator bounds tensors this site's model does not share: {unknown[:5]}")
    return {k: l2(np.asarray(update[k], np.float64) - np.asarray(base[k], np.float64))
            for k in settings.clipped_tensors}


def change_vector(base: Mapping[str, np.ndarray], update: Mapping[str, np.ndarray], spec: list[TensorSpec],
                  settings: SecureSettings, tensor_clips: Mapping[str, float] | None = None,
                  rng: np.random.Generator | None = None) -> np.ndarray:
    """The site's change as the protocol sums it: each bounded tensor's change clipped to the bound announced with
    the keys (`tensor_clips`, exactly one per `settings.clipped_tensors`), the whole to `settings.clip_norm`, plus its
    DP noise share (`rng`: tests only; the noise must come from the OS), before weighting."""
    clips = dict(tensor_clips or {})
    bad = sorted(k for k, v in clips.items() if not (math.isfinite(v) and v >= 0))
    if set(clips) != set(settings.clipped_tensors) or bad or not set(clips) <= {s.name for s in spec}:
        raise Abandoned(f"the coordinator announced bounds for {sorted(clips)[:5]} (invalid: {bad[:5]}), not for the "
                        f"round's bounded tensors {list(settings.clipped_tensors)[:5]}")
    change = {s.name: np.asarray(update[s.name], np.float64) - np.asarray(base[s.name], np.float64) for s in spec}
    for name, bound in clips.items():
        change[name] = clip_l2({name: change[name]}, bound)[0][name]
        if name in CLASS_ROW_TENSORS:  # no site's whole bound on one class (common/clip.py)
            change[name] = clip_rows(change[name], row_bound(bound, len(change[name])))
    whole = clip_l2({"change": flatten(change, spec)}, settings.clip_norm)[0]["change"]
    return add_noise_share(whole, settings.noise_std, settings.clip_norm, rng) if settings.noise_std > 0 else whole


def contribute(conn: Connection, settings: SecureSettings, round_: int, base: Mapping[str, np.ndarray],
               update: Mapping[str, np.ndarray], spec: list[TensorSpec], num_examples: int,
               stop: threading.Event | None = None, identity: Identity | None = None,
               verifier: PeerCheck | None = None, next_task_wait_s: float = MAX_HOLD_S) -> SecureOutcome:
    """Send this site's change through the round's secure aggregation; the outcome says if it was counted. No
    metrics go with it (its accuracy and loss would tell the coordinator about its data in the clear); the
    example count is the one its Join declared (the weights need it). `identity`: what this site signs its
    messages with (its client certificate; by default the key its Join bound, `conn.signing_key`); `verifier`: how
    it checks its peers' (common/secagg/identity.py; none: it trusts the coordinator's relay).
    `next_task_wait_s`: the reveal's call, once the round commits, waits up to this long for the next task and
    returns it in the outcome (0: the caller asks GetTask, as sites before it did)."""
    config = settings.round_config(round_)
    site = SecAggSite(conn.client_id, config, identity=identity or conn.signing_key, verifier=verifier,
                      everyone_signs=settings.signed)
    stop = stop or threading.Event()

    def send(message: StageMessage, norms: Mapping[str, float] | None = None, ask_next_s: float = 0.0
             ) -> tuple[SecureAnswer, Task | None]:
        """The stage's answer once it is not PENDING, and the next task when `ask_next_s` asked for it."""
        step = SecureStep(conn.client_id, round_, settings.attempt, message, change_norms=norms or {},
                          next_task_wait_s=ask_next_s)
        answer, following = conn.secure_with_task(step, config.rid)
        polls = 0
        while answer.status == Status.PENDING and not stop.is_set():
            asked = time.monotonic()
            answer, following = conn.secure_with_task(SecureStep(conn.client_id, round_, settings.attempt,
                                                                 next_task_wait_s=ask_next_s), config.rid)
            if answer.status == Status.PENDING and time.monotonic() - asked < QUICK_ANSWER_S:
                # not held (the coordinator had no slot left): back off with jitter instead of asking at once
                if stop.wait(POLL_BACKOFF.delay(polls, _rng)):
                    break
                polls += 1
            else:
                polls = 0
        return answer, following

    try:
        keys, _ = send(site.advertise(), change_norms(base, update, settings))
        announced = _next(keys, KeysAnnounced, stop)
        vector = change_vector(base, update, spec, settings, keys.tensor_clips)
        delivered = _next(send(site.share_keys(announced))[0], SharesDelivered, stop)
        passed = _next(send(site.check_shares(delivered))[0], ChecksPassed, stop)
        masked = site.masked_input(passed, vector, settings.weight)
        request = _next(send(Contribution.of(masked, config.field, num_examples, Metrics()))[0], UnmaskRequest, stop)
        done, following = send(site.unmask(request), ask_next_s=next_task_wait_s)  # the next task, same call
        outcome = SecureOutcome(True, next_task=following) if done.status == Status.DONE else \
            SecureOutcome(False, _why(done, stop))
    except PeerRefused as exc:
        log.warning(Event.SECAGG_PEER_REFUSED, client_id=conn.client_id, round=round_, peer=exc.site_id,
                    reason=str(exc))
        with contextlib.suppress(Refused):  # say whom: a peer most sites refuse is left out of the retry
            conn.report_failure(round_, FailureReason.PEER_REFUSED, exc.site_id or "", settings.attempt)
        outcome = SecureOutcome(False, str(exc))
    except (Abandoned, SecAggError) as exc:
        outcome = SecureOutcome(False, str(exc))
    log.info(Event.SECAGG_ROUND_DONE, client_id=conn.client_id, round=round_, attempt=settings.attempt,
             committed=outcome.committed, reason=outcome.reason)
    return outcome


def _next(answer: SecureAnswer, kind: type[T], stop: threading.Event) -> T:
    """The next stage's input the answer must carry; `Abandoned` otherwise."""
    if answer.status == Status.NEXT and isinstance(answer.next, kind):
        return answer.next
    raise Abandoned(_why(answer, stop))


def _why(answer: SecureAnswer, stop: threading.Event) -> str:
    return answer.reason or ("stopped" if stop.is_set() else f"the coordinator answered {answer.status}")
