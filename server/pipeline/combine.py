"""The round's stages: bound each change, aggregate, add DP noise, commit the next global. Pure, one signature.

Each stage takes the round's values so far (`Step`) and the round's rules (`Rules`) and returns a new `Step`;
server/pipeline/stages.py lists them in order. A new defence or secure aggregation is one more stage here.

Bounding limits each client's influence, in two parts. First per global tensor, adaptive to the round
(server/pipeline/clipping.py, `--adaptive-clip`, on by default): no change of a tensor beyond a small multiple of the
round's median change of it. Then the fixed whole-update bound (`--update-clip-norm`): the change over all
tensors as one vector is scaled down to L2 norm `clip_norm` (the unit DP-FedAvg clips). With FedAvg a client
of weight w among total W moves the global by at most (w / W) * clip_norm per round, and tensor k by at most
(w / W) * adaptive * s_k.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

import numpy as np

from ...common import serde
from ...common.clip import clip_l2
from ...common.spec import CLASS_ROW_TENSORS
from . import statistics
from .aggregate import Aggregator
from .clipping import Changes, TensorClip, clip_per_tensor
from .privacy import DpSettings
from .statistics import COUNTS, MOMENT, STRUCTURED, SUMS

# moment_moved rescales a site's within-class scatter by at most this factor: honest caps shrink it, clips move it
# by a few percent (1.03x in tests/server/test_class_statistics.py); more is float rounding or a hostile site's.
MAX_SCATTER_GROWTH = 4.0

# Far above what honest local training moves the prompts in a round (lr x steps x the gradient clip, about
# 0.1-3 on the shipped settings) and far below what breaks a backbone: bounds a hostile site, spares honest ones.
DEFAULT_CLIP_NORM = 10.0


class NonFiniteGlobal(ValueError):
    """The aggregate holds NaN or Inf, or what no honest sites could send (`ImpossibleAggregate`): the round must
    not commit it."""


class ImpossibleAggregate(NonFiniteGlobal):
    """A secure round's unmasked class statistics break a relation every honest site's satisfy."""


@dataclass(frozen=True)
class Rules:
    """How this round combines: the federation's settings and what the round itself fixed."""

    aggregate: Aggregator
    clip_norm: float | None = None  # the whole-update bound (None: none)
    adaptive: float | None = None  # the per-tensor factor (None: off)
    previous_scale: Mapping[str, float] = field(default_factory=dict)
    dp: DpSettings | None = None
    sampled: int = 0  # clients sampled in the round: the DP mean's denominator
    rng: np.random.Generator | None = None


@dataclass(frozen=True)
class Step:
    """The round's values as they pass the stages."""

    base: Mapping[str, np.ndarray]  # the current global
    changes: Changes  # client -> tensor -> its change from `base` (bounded after `bound`)
    weights: Mapping[str, float]  # client -> its FedAvg weight
    clipped: tuple[str, ...] = ()  # clients whose whole change was scaled down to the fixed bound
    largest_change: float = 0.0  # L2 norm of the largest change before the fixed bound (after the per-tensor one)
    tensor_clip: TensorClip | None = None  # the per-tensor adaptive bounds, when they applied
    class_capped: tuple[str, ...] = ()  # clients whose weight on some class was capped (server/pipeline/statistics.py)
    class_clipped: tuple[str, ...] = ()  # clients whose mean of some class was pulled toward its center
    change: dict[str, np.ndarray] | None = None  # the aggregate change, from `aggregate` (and `noise`)
    committed: serde.Encoded | None = None  # the next global, from `commit`
    projected: str = ""  # secure rounds: the relation the unmasked class statistics broke (then projected)

    @property
    def tensors(self) -> dict[str, np.ndarray]:
        """The next global (after `commit`)."""
        if self.committed is None:
            raise ValueError("the round's stages did not reach commit")
        return self.committed.tensors


Stage = Callable[[Step, Rules], Step]


def _change(global_: Mapping[str, np.ndarray], update: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: np.subtract(update[k], global_[k], dtype=np.asarray(global_[k]).dtype) for k in global_}


def start(global_: Mapping[str, np.ndarray], updates: Mapping[str, tuple[Mapping[str, np.ndarray], float]]) -> Step:
    """The first `Step`: each update (client -> (tensors, weight)) as its change from the global."""
    if not updates:
        raise ValueError("combine needs at least one update")
    changes = {client: _change(global_, tensors) for client, (tensors, _weight) in sorted(updates.items())}
    return Step(global_, changes, {c: w for c, (_t, w) in updates.items()})


def bound_classes(step: Step, rules: Rules) -> Step:
    """The class head's statistics: each site's class means clipped toward each class's center, its weight and
    its pull on each class capped (server/pipeline/statistics.py), as changes from the global; a site whose
    counts or means moved gets the second moment its images would have after the move (`moment_moved`)."""
    if COUNTS not in step.base or rules.dp is not None:  # under DP: a data-dependent bound voids the sensitivity
        return step
    base = (np.asarray(step.base[COUNTS], np.float64), np.asarray(step.base[SUMS], np.float64))
    stats = {c: (base[0] + d[COUNTS], base[1] + d[SUMS]) for c, d in step.changes.items()}
    bounded = statistics.bound_classes(stats, step.weights, base if float(base[0].sum()) > 0 else None)
    changes = {}
    for client, delta in step.changes.items():
        counts, sums = bounded.statistics[client]
        changes[client] = {**delta, COUNTS: (counts - base[0]).astype(delta[COUNTS].dtype),
                           SUMS: (sums - base[1]).astype(delta[SUMS].dtype)}
        if client in bounded.capped or client in bounded.clipped:  # the rules moved its counts or means
            moment = np.asarray(step.base[MOMENT], np.float64) + delta[MOMENT]
            moved = moment_moved(moment, *stats[client], counts, sums)
            changes[client][MOMENT] = (moved - step.base[MOMENT]).astype(delta[MOMENT].dtype)
    return replace(step, changes=changes, class_capped=bounded.capped, class_clipped=bounded.clipped)


def moment_moved(moment: np.ndarray, counts: np.ndarray, sums: np.ndarray, new_counts: np.ndarray,
                 new_sums: np.ndarray) -> np.ndarray:
    """A site's second moment once the bounds moved its statistics from (counts, sums) to (new_counts, new_sums):
    images the weight cap took off a class leave with that class's mean, a class mean the clips pulled toward its
    center takes its images along, and the site's own within-class scatter W = moment - sum_c n_c mu_c mu_c^T
    stays in shape, scaled so the trace is the new counts' sum (unit vectors):
        sum_c n'_c mu'_c mu'_c^T + W (sum_c n'_c (1 - |mu'_c|^2)) / trace(W).
    The means' part is exact; the scatter is the site's whole one rescaled (a cap on one class takes its share off
    every class's spread alike). Left as it was, the moment would count a clipped mean's displacement as
    within-class spread, which inflated the pooled covariance along it (few-shot digits-uci 10x2, seed 0: 80.5%
    against 90.0%), and scaling the whole moment for a cap deflated the covariance of the classes kept (new-domain
    uci, seed 2: 82.2% against 98.4%). Where the scatter would grow more than MAX_SCATTER_GROWTH-fold (a site with
    almost none, whose float rounding or hostile asymmetry the factor would magnify), or the result breaks a
    relation honest statistics keep, the moment is scaled whole by the counts' new total, as before."""
    def outer(n: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        held = n > 0
        means = np.zeros_like(s)
        means[held] = s[held] / n[held, None]
        return (means.T * n) @ means, np.square(means).sum(axis=1)

    between, _ = outer(counts, sums)
    new_between, new_norms = outer(new_counts, new_sums)
    within = moment - between
    within = (within + within.T) / 2  # the check lets a site's moment be asymmetric by its tolerance: not scaled up
    spread = float(np.trace(within))
    target = float((new_counts * (1.0 - new_norms)).sum())
    whole = moment * (float(new_counts.sum()) / float(counts.sum()))
    if not 0 < target <= MAX_SCATTER_GROWTH * spread:
        return whole
    out = new_between + within * (target / spread)
    root = np.sqrt(np.clip(np.diag(out), 0.0, None))
    if (np.diag(out).min() < 0 or (np.abs(out) - np.outer(root, root)).max() > 1e-9
            or abs(float(np.trace(out)) - float(new_counts.sum())) > statistics.TOLERANCE):  # no images make these
        return whole
    return out


def bound(step: Step, rules: Rules) -> Step:
    """Without DP: each tensor's change to `adaptive` x the round's scale of it, then the whole change to
    `clip_norm`. With DP: the whole change to `dp.clip` only (a data-dependent bound voids the sensitivity)."""
    limit = rules.dp.clip if rules.dp is not None else rules.clip_norm
    raw = step.changes
    tensor_clip = None
    if rules.adaptive is not None and rules.dp is None:  # the class statistics are bounded by their structure
        raw, tensor_clip = clip_per_tensor(raw, rules.adaptive, rules.previous_scale, exempt=STRUCTURED,
                                           rows=CLASS_ROW_TENSORS)
    changes = {}
    clipped = []
    largest = 0.0
    for client, delta in raw.items():
        changes[client], norm = clip_l2(delta, limit)
        largest = max(largest, norm)
        if limit is not None and norm > limit:
            clipped.append(client)
    return replace(step, changes=changes, clipped=tuple(clipped), largest_change=largest, tensor_clip=tensor_clip)


def dp_denominator(sampled: int, received: int) -> float:
    """DP-FedAvg's mean is over the sampled count (fixed before anyone answers, so it reveals no one's absence)."""
    return float(max(sampled, received))


def aggregate(step: Step, rules: Rules) -> Step:
    """Without DP: the aggregator over the bounded changes (every aggregator commutes with adding the same
    global to all its inputs). With DP: their equal-weight sum over the `sampled` clients (DP-FedAvg)."""
    if rules.dp is None:
        return replace(step, change=rules.aggregate([(d, step.weights[c]) for c, d in step.changes.items()]))
    denominator = dp_denominator(rules.sampled, len(step.changes))
    deltas = list(step.changes.values())
    total = {name: np.sum([np.asarray(d[name], dtype=np.float64) for d in deltas], axis=0)
             for name in sorted(deltas[0])}
    return replace(step, change={name: t / denominator for name, t in total.items()})


def noise(step: Step, rules: Rules) -> Step:
    """With DP: Gaussian noise of standard deviation `noise_multiplier * clip`, over the same denominator
    (server/pipeline/privacy.py); from the operating system's entropy unless `rules.rng` says otherwise."""
    if rules.dp is None or step.change is None:
        return step
    dp = rules.dp
    rng = rules.rng or np.random.default_rng()
    denominator = dp_denominator(rules.sampled, len(step.changes))
    return replace(step, change={name: c + rng.normal(0.0, dp.noise_multiplier * dp.clip, size=c.shape) / denominator
                                 for name, c in step.change.items()})


def commit(step: Step, rules: Rules) -> Step:
    """The next global, in the global's dtypes, refused when not finite; encoded here, once, for the
    checkpoint and every task."""
    assert step.change is not None, "commit runs after aggregate"
    base = step.base
    change = step.change
    out = {k: (np.asarray(base[k], np.float64) + change[k]).astype(np.asarray(base[k]).dtype) for k in base}
    bad = sorted(k for k, v in out.items() if not np.isfinite(v).all())
    if bad:
        raise NonFiniteGlobal(f"the aggregate of round's updates holds NaN or Inf in {bad}")
    return replace(step, committed=serde.Encoded.of(out))
