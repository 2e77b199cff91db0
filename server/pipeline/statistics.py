"""The class head's statistics: what an honest site can send, and how much one site may weigh on a class.

A site sends its class statistics as means over its n training images (client/model/head.py):
counts [C] = n_c / n, sums [C, P] = sum of its unit feature vectors of class c / n, moment [P, P] = sum x x^T / n,
and calibration [2] = (log T, w). FedAvg weighted by n turns them into the pooled statistics, from which every
site computes the federation's discriminant; class c's mean is sum_i n_i sums_ic / sum_i n_i counts_ic.

An honest site's statistics satisfy, whatever its images (`check`, at the per-update `check` stage):
  counts >= 0 and they sum to 1 (all 0: no readable image; between, a site that scales its statistics toward
    zero, as the whole-update clip does toward a zero global, which only lowers its weight);
  |sums_c| <= counts_c (a mean of unit vectors has norm <= 1), so no site adds to a class's mean without
    adding as much to its count: class c's mean is a convex combination of the sites' class means, and a
    declared count, however small, never amplifies (the issue-29 rows divided by a floor share and did);
  moment is symmetric, trace(moment) = sum(counts) (each x x^T has trace 1), its diagonal >= 0, and every
    |moment_ij| <= sqrt(moment_ii moment_jj) (its 2x2 minors are PSD: the O(P^2) part of positive
    semi-definiteness);
  calibration: log T within LOG_TEMPERATURE_RANGE, w within TEXT_WEIGHT_RANGE.
The set of such statistics is convex, so any weighted mean of valid statistics is valid: the same check finds
an unmasked secure aggregate that no set of honest sites could have summed to (`check_aggregate`), and since no
one can tell whose masked input broke it, the round commits its projection onto valid statistics (`project`)
rather than fail (one site could then stop every round).

Where a site's statistics may point, and how much it weighs (`bound_classes`, the round's first stage
combine.bound_classes; not under DP, where a data-dependent bound voids the sensitivity analysis):
1. Each site's mean of class c (sums_c / counts_c) is kept within MEAN_CLIP (2) times the median holder's
   distance of the class's center: the current global's mean of c where it has one, else the holders'
   coordinate-wise median (as the per-tensor adaptive clip bounds a change by the round's median). A mean
   beyond is pulled toward the center along the line between them, so it stays a mean of unit vectors.
2. Site i's weight on class c, w_ic = n_i counts_ic, is capped at CLASS_WEIGHT_CAP (10) times the larger of the
   largest other holder's weight on that class and the round's median holding (median of all w_jc > 0): one
   site, whatever it declares within the caps, has at most 10x the say of the class's next holder on that
   class's mean and prior; a class only it holds gets at most 10x a typical holding (its mean is then its own,
   which any honest sole holder's would be too). The site's counts_c and sums_c are scaled together (its class
   mean is unchanged, only its weight on it).
The clip does most of the work (measured in tests/server/test_class_statistics.py: an attacker among 5 equal
sites moves a class's mean 9.3x an honest site's move unbounded, 3.0x bounded, the same with or without the
cap). The cap is loose on purpose: at 3x it cost an honest federation with skewed labels 3.3 points (the
new-domain benchmark's Twemoji-64, seed 0: 70.9% unbounded, 67.6% at 3x, 70.8% at 10x), pulling classes toward
their minor holders' noisier means. Honest sites are pulled in only where their class mean lies more than twice
as far from the center as the median holder's, and capped only where one holds more than 10x the next holder's
images of a class.

These tensors are exempt from the per-tensor adaptive clip (server/pipeline/clipping.py): clipping counts, sums
and moment by different factors would break the relations above; the structure bounds every value and the cap
bounds every weight. The calibration stays clipped like any tensor. The whole-update clip scales all tensors by
one factor, which keeps the relations.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ...common.messages import Code, Refused
from ...common.spec import LOG_TEMPERATURE_RANGE, TEXT_WEIGHT_RANGE, head_key

COUNTS = head_key("counts")
SUMS = head_key("sums")
MOMENT = head_key("moment")
CALIBRATION = head_key("calibration")
STRUCTURED = frozenset({COUNTS, SUMS, MOMENT})  # bounded here, not by the per-tensor adaptive clip
CLASS_WEIGHT_CAP = 10.0
MEAN_CLIP = 2.0
# float32 means of up to millions of unit vectors: relative error ~1e-6 per element, summed over P <= 4096
TOLERANCE = 1e-3


def check(tensors: Mapping[str, np.ndarray]) -> None:
    """`Refused` naming the first relation an honest site's statistics always satisfy and these do not."""
    problem = violation(tensors)
    if problem:
        raise Refused(Code.INVALID_ARGUMENT, f"update refused: class statistics no honest site can send: {problem}")


def violation(tensors: Mapping[str, np.ndarray]) -> str | None:
    """None when the statistics in `tensors` (if any) satisfy every relation in the module's doc, else which."""
    if COUNTS not in tensors:
        return None
    counts = np.asarray(tensors[COUNTS], np.float64)
    sums = np.asarray(tensors[SUMS], np.float64)
    moment = np.asarray(tensors[MOMENT])
    moment = moment if moment.dtype in (np.float32, np.float64) else moment.astype(np.float32)
    total = float(counts.sum())
    if counts.min(initial=0.0) < 0:
        return f"a class count is negative ({counts.min():.3g})"
    if total > 1.0 + TOLERANCE:
        return f"the class counts sum to {total:.6g}, above 1"
    norms = np.sqrt(np.square(sums).sum(axis=1))
    excess = norms - counts * (1 + TOLERANCE) - TOLERANCE / len(counts)
    if excess.max(initial=0.0) > 0:
        c = int(excess.argmax())
        return f"class {c}'s sum has norm {norms[c]:.4g} above its count {counts[c]:.4g}"
    trace = float(np.trace(moment, dtype=np.float64))
    if abs(trace - total) > TOLERANCE:
        return f"the second moment's trace {trace:.6g} differs from the counts' sum {total:.6g}"
    # the P x P checks in the tensor's own float32, one scratch array reused: this runs for every update
    scratch = np.subtract(moment, moment.T)
    np.abs(scratch, out=scratch)
    if scratch.max(initial=0.0) > TOLERANCE:
        return "the second moment is not symmetric"
    diagonal = np.diag(moment).astype(np.float64)
    if diagonal.min(initial=0.0) < -TOLERANCE:
        return f"the second moment has a negative diagonal entry ({diagonal.min():.3g})"
    root = np.sqrt(np.clip(diagonal, 0.0, None)).astype(moment.dtype)
    np.abs(moment, out=scratch)
    scratch -= root[:, None] * root[None, :]
    if scratch.max(initial=0.0) > TOLERANCE:
        return "the second moment has an entry larger than its diagonal allows (not positive semi-definite)"
    if CALIBRATION in tensors:
        log_t, weight = (float(v) for v in np.asarray(tensors[CALIBRATION], np.float64)[:2])
        if not (LOG_TEMPERATURE_RANGE[0] - TOLERANCE <= log_t <= LOG_TEMPERATURE_RANGE[1] + TOLERANCE):
            return f"the calibration's log temperature {log_t:.4g} is outside {LOG_TEMPERATURE_RANGE}"
        if not (TEXT_WEIGHT_RANGE[0] - TOLERANCE <= weight <= TEXT_WEIGHT_RANGE[1] + TOLERANCE):
            return f"the calibration's text weight {weight:.4g} is outside {TEXT_WEIGHT_RANGE}"
    return None


def check_aggregate(tensors: Mapping[str, np.ndarray]) -> str | None:
    """A secure round's unmasked mean: None when some set of honest sites could have sent it, else why not."""
    return violation(tensors)


def project(tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Statistics an honest set of sites could have sent, near `tensors`' (a secure aggregate that breaks a
    relation: no one can tell which site's input did, so the round commits this instead of failing, which would
    let one site stop the federation): counts made non-negative and at most a distribution; each class's sum
    scaled to within its count; the moment made symmetric with a non-negative diagonal, scaled to the counts'
    sum, each entry within its diagonal's bound; the calibration within its ranges. Statistics that satisfy
    every relation come back unchanged, in their own dtypes."""
    counts = np.clip(np.asarray(tensors[COUNTS], np.float64), 0.0, None)
    if counts.sum() > 1.0:
        counts /= counts.sum()
    sums = np.asarray(tensors[SUMS], np.float64).copy()
    norms = np.sqrt(np.square(sums).sum(axis=1))
    over = norms > counts
    sums[over] *= (counts[over] / norms[over])[:, None]
    raw = np.asarray(tensors[MOMENT], np.float64)
    moment = (raw + raw.T) / 2
    np.fill_diagonal(moment, np.clip(np.diag(moment), 0.0, None))
    trace = float(np.trace(moment))
    total = float(counts.sum())
    moment = moment * (total / trace) if trace > 0 else np.eye(len(moment)) * (total / len(moment))
    root = np.sqrt(np.diag(moment))
    moment = np.clip(moment, -np.outer(root, root), np.outer(root, root))
    out = {COUNTS: counts, SUMS: sums, MOMENT: moment}
    if CALIBRATION in tensors:
        calibration = np.asarray(tensors[CALIBRATION], np.float64).copy()
        calibration[0] = np.clip(calibration[0], *LOG_TEMPERATURE_RANGE)
        calibration[1] = np.clip(calibration[1], *TEXT_WEIGHT_RANGE)
        out[CALIBRATION] = calibration
    return {name: value.astype(np.asarray(tensors[name]).dtype) for name, value in out.items()}


def class_weight_scales(counts: Mapping[str, np.ndarray], weights: Mapping[str, float]) -> dict[str, np.ndarray]:
    """client -> [C] factors in (0, 1] for its counts and sums rows (client -> its counts, its FedAvg weight),
    from the rule in the module's doc."""
    clients = sorted(counts)
    if not clients:
        return {}
    holding = np.stack([np.clip(np.asarray(counts[c], np.float64), 0.0, None) * float(weights[c]) for c in clients])
    held = holding[holding > 0]
    typical = float(np.median(held)) if held.size else 0.0
    scales = {}
    for i, client in enumerate(clients):
        others = np.delete(holding, i, axis=0)
        next_holder = others.max(axis=0) if len(others) else np.zeros(holding.shape[1])
        cap = CLASS_WEIGHT_CAP * np.maximum(next_holder, typical)
        mine = holding[i]
        scales[client] = np.where(mine > cap, cap / np.where(mine > 0, mine, 1.0), 1.0)
    return scales


@dataclass(frozen=True)
class ClassBounds:
    """What `bound_classes` did: the sites' bounded (counts, sums), and who was capped or clipped on which class."""

    statistics: dict[str, tuple[np.ndarray, np.ndarray]]
    capped: tuple[str, ...]  # sites whose weight on some class was capped
    clipped: tuple[str, ...]  # sites whose mean of some class was pulled toward the class's center


def bound_classes(statistics: Mapping[str, tuple[np.ndarray, np.ndarray]], weights: Mapping[str, float],
                  base: tuple[np.ndarray, np.ndarray] | None) -> ClassBounds:
    """Each site's (counts [C], sums [C, P]) with its class means clipped toward each class's center and its
    weight on each class capped (the module's doc); `base`: the current global's (counts, sums)."""
    clients = sorted(statistics)
    counts = {c: np.clip(np.asarray(statistics[c][0], np.float64), 0.0, None) for c in clients}
    sums = {c: np.asarray(statistics[c][1], np.float64) for c in clients}
    clipped = clip_class_means(counts, sums, base)
    scales = class_weight_scales(counts, weights)
    out = {}
    for c in clients:
        scale = scales[c]
        out[c] = (counts[c] * scale, sums[c] * scale[:, None])
    capped = tuple(c for c in clients if bool((scales[c] < 1.0).any()))
    return ClassBounds(out, capped, clipped)


def clip_class_means(counts: Mapping[str, np.ndarray], sums: dict[str, np.ndarray],
                     base: tuple[np.ndarray, np.ndarray] | None) -> tuple[str, ...]:
    """In place on `sums`: each site's mean of class c kept within MEAN_CLIP x the median holder's distance of
    the class's center (the current global's mean of c where it has one, else the holders' coordinate-wise
    median); returns the sites pulled in. A pulled mean lies between the center and the site's own, so it is a
    mean of unit vectors still."""
    clients = sorted(counts)
    pulled = set()
    classes = len(next(iter(counts.values()))) if clients else 0
    for k in range(classes):
        holders = [c for c in clients if counts[c][k] > 0]
        if len(holders) < 2:
            continue
        means = {c: sums[c][k] / counts[c][k] for c in holders}
        if base is not None and base[0][k] > 0:
            center = np.asarray(base[1][k], np.float64) / float(base[0][k])
        else:
            center = np.median(np.stack([means[c] for c in holders]), axis=0)
            center /= max(1.0, float(np.linalg.norm(center)))  # a mean of unit vectors, like every site's
        distance = {c: float(np.linalg.norm(means[c] - center)) for c in holders}
        limit = MEAN_CLIP * float(np.median(list(distance.values())))
        for c in holders:
            if distance[c] > limit:
                pulled.add(c)
                mean = center + (means[c] - center) * (limit / distance[c])
                sums[c][k] = mean * counts[c][k]
    return tuple(sorted(pulled))
