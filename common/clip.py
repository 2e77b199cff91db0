"""The whole-update L2 clip: one rule for the coordinator (server/pipeline/combine.py, plain rounds) and the site
(client/secure.py, secure rounds, where the coordinator cannot see the change to clip it).

A change is the update minus the global it started from, all tensors taken as one vector; above `max_norm` it
is scaled down to exactly `max_norm` (the unit DP-FedAvg clips, so a site's effect on the mean is bounded by its
weight share times `max_norm`)."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

# A tensor whose rows are classes (common/spec.py's CLASS_ROW_TENSORS), in a secure round: each row's change is
# clipped to ROW_SHARE x its tensor's bound / sqrt(rows), a few times an even share, so no site can spend its whole
# bound on one class (the coordinator, which cannot see one site's rows, holds the unmasked sum to the same).
ROW_SHARE = 3.0


def l2(array: np.ndarray) -> float:
    # np.square + sum, not np.dot: BLAS may hand a 20k-element dot to its threads, 100x slower on a busy box
    return float(np.sqrt(np.square(array, dtype=np.float64).sum()))


def row_bound(bound: float, rows: int) -> float:
    """The bound on each row's change of a class-row tensor whose whole change is bounded by `bound`."""
    return ROW_SHARE * bound / math.sqrt(max(rows, 1))


def row_norms(change: np.ndarray) -> np.ndarray:
    """The L2 norm of each row of `change` [rows, ...], in float64."""
    return np.sqrt(np.square(change, dtype=np.float64).reshape(len(change), -1).sum(axis=1))


def clip_rows(change: np.ndarray, bound: float | np.ndarray, norms: np.ndarray | None = None) -> np.ndarray:
    """`change` [rows, ...] with each row scaled down to L2 norm <= bound (one for all rows, or one per row;
    `norms`: the rows' norms when already known). The input is not modified."""
    norms = row_norms(change) if norms is None else norms
    factors = np.where(norms > bound, bound / np.where(norms > 0, norms, 1.0), 1.0)
    return change * factors.reshape((-1,) + (1,) * (change.ndim - 1)).astype(change.dtype)


def clip_l2(change: Mapping[str, np.ndarray], max_norm: float | None) -> tuple[dict[str, np.ndarray], float]:
    """(the change scaled to L2 norm <= max_norm over all its tensors together, its norm before); None: no bound.
    The inputs are not modified."""
    norm = float(np.sqrt(sum(l2(d) ** 2 for d in change.values())))
    if max_norm is not None and norm > max_norm:
        scale = max_norm / norm
        return {k: d * np.asarray(scale, d.dtype) for k, d in change.items()}, norm
    return dict(change), norm
