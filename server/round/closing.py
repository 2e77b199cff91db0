"""The state a closing round leads to: combined globals, participation, privacy spent, and its summary.

Participation is counted here, once, on the copies the checkpoint saves; the live records adopt the saved
counts once the round is durable (server/round/rounds.py).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping
from dataclasses import replace

import numpy as np

from ...common.secagg.exchange import unflatten
from ...common.spec import TensorSpec
from ..pipeline.aggregate import Aggregator
from ..pipeline.clipping import TensorClip
from ..pipeline.combine import dp_denominator
from ..pipeline.privacy import PrivacyLedger
from ..pipeline.stages import Step, combine, combine_secure
from ..pipeline.statistics import COUNTS, SUMS
from ..pipeline.updates import CheckedUpdate
from .attempt import Attempt
from .config import FederationConfig
from .secure import SecureRun
from .state import FederationState
from .summary import RoundSummary, SiteRecord


def combine_plain(state: FederationState, config: FederationConfig, aggregate: Aggregator,
                  received: Mapping[str, CheckedUpdate], sampled: int, rng: np.random.Generator) -> Step:
    """The plain round's updates through the round stages (server/pipeline/stages.py). Raises `NonFiniteGlobal`."""
    weights = {c: float(config.weight(u.num_examples)) for c, u in received.items()}
    updates = {c: (u.tensors, weights[c]) for c, u in received.items()}
    return combine(state.global_tensors, updates, config.rules(aggregate, state.change_scale, sampled, rng))


def next_state(state: FederationState, config: FederationConfig, combined: Step,
               received: Mapping[str, CheckedUpdate], failed: Mapping[str, str], stragglers: list[str],
               attempt: int, duration_s: float, aggregator: str) -> FederationState:
    """The candidate state after this round, built without touching `state` (it becomes the federation's only
    once saved): `combined` is the round's passage through the pipeline; `received` the sites it counts."""
    weights = {c: float(config.weight(u.num_examples)) for c, u in received.items()}
    next_global = combined.tensors
    tensor_clip = combined.tensor_clip
    privacy = PrivacyLedger(dict(state.privacy.rounds_by_noise))
    dp = config.dp
    if dp is not None:
        privacy.record(dp.noise_multiplier)
    clients = {c: copy.copy(r) for c, r in state.clients.items()}
    for client_id in received:
        clients[client_id].rounds_participated += 1
    summary = RoundSummary(
        round=state.round, time=time.time(), duration_s=duration_s, attempts=attempt + 1,
        aggregator=aggregator,
        sites={c: SiteRecord(u.num_examples, weights[c], u.metrics) for c, u in received.items()},
        failed=dict(failed), stragglers=tuple(stragglers), clipped=combined.clipped,
        clipped_tensors={**(tensor_clip.clipped if tensor_clip else {}),
                         **({COUNTS: combined.class_capped} if combined.class_capped else {}),
                         **({SUMS: combined.class_clipped} if combined.class_clipped else {})},
        clip_bounds=tensor_clip.bounds if tensor_clip else {},
        dp_epsilon=privacy.epsilon(dp.delta) if dp else None, dp_delta=dp.delta if dp else None,
        global_change={k: float(np.linalg.norm(v - state.global_tensors[k])) for k, v in next_global.items()})
    scale = tensor_clip.scale if tensor_clip else dict(state.change_scale)
    return FederationState(state.round + 1, next_global, clients, privacy, summary, scale, combined.committed,
                           state.classes, retired_keys=dict(state.retired_keys))


class NoQuorum(ValueError):
    """Fewer sites survived a secure round than --quorum."""


def survivors(run: SecureRun) -> dict[str, CheckedUpdate]:
    """The sites a secure round counts as received: its survivors, with their masked inputs' counts and metrics."""
    assert run.result is not None
    return {s: CheckedUpdate("", {}, c.num_examples, c.metrics) for s, c in run.contributions.items()
            if s in run.result.survivors}


def secure_state(state: FederationState, config: FederationConfig, attempt: Attempt, run: SecureRun,
                 spec: list[TensorSpec], now: float) -> tuple[FederationState, str]:
    """The state after a secure round whose sum was unmasked (`attempt.received`: its survivors): the sum over
    their weight (DP: over the sampled count) is committed. Also the relation its class statistics broke, if they
    had to be projected ("" when not)."""
    received = attempt.received
    if len(received) < config.quorum:
        raise NoQuorum(f"secure aggregation: {len(received)} survivors, --quorum {config.quorum}")
    dp = config.dp is not None
    denominator = dp_denominator(len(attempt.sampled), len(received)) if dp else run.survivors_weight()
    combined = combine_secure(state.global_tensors, unflatten(run.total(), spec), denominator,
                              check_statistics=not dp)
    if run.sums.clips:  # the announced per-tensor bounds: the summary's, and the next round's history term
        combined = replace(combined, tensor_clip=TensorClip(dict(run.sums.clips), dict(run.sums.scale),
                                                            {k: v for k, v in run.sums.clipped.items() if v}))
    stragglers = sorted(attempt.sampled - received.keys() - attempt.failed.keys())
    committed = next_state(state, config, combined, received, attempt.failed, stragglers, attempt.number,
                           now - attempt.opened_at, "secagg-dp-fedavg" if dp else "secagg-fedavg")
    return committed, combined.projected


def no_quorum(attempt: Attempt, quorum: int) -> str | None:
    """Why the ended attempt cannot commit (too few updates), or None."""
    if len(attempt.received) >= quorum:
        return None
    stragglers = attempt.outstanding()
    why = "only failures" if not attempt.received and not stragglers else "no quorum"
    failures = "; ".join(f"{c}: {r}" for c, r in sorted(attempt.failed.items())[:3])
    return (f"{why}: {len(attempt.received)} of {quorum} updates needed, {len(attempt.failed)} failed, "
            f"{len(stragglers)} silent" + (f" ({failures})" if failures else ""))


def adopt(live: FederationState, saved: FederationState, received: Mapping[str, CheckedUpdate]) -> None:
    """The live state takes the saved round's values: its global (and its bytes), the participation counted in
    `next_state`, the privacy spent, the per-tensor change scale the next round's adaptive clip is capped by.
    Live records keep what changed meanwhile (last seen, new joins)."""
    for client_id, update in received.items():
        record = live.clients[client_id]
        record.rounds_participated = saved.clients[client_id].rounds_participated
        record.last_round = live.round
        record.last_metrics = update.metrics
    live.global_tensors = saved.global_tensors
    live.encoded = saved.encoded
    live.round = saved.round
    live.privacy = saved.privacy
    live.last_round = saved.last_round
    live.change_scale = saved.change_scale  # the cap's history is live, not only after a restart
