"""The whole-update L2 clip: one rule for the coordinator (server/pipeline/combine.py, plain rounds) and the site
(client/secure.py, secure rounds, where the coordinator cannot see the change to clip it).

A change is the update minus the global it started from, all tensors taken as one vector; above `max_norm` it
is scaled down to exactly `max_norm` (the unit DP-FedAvg clips, so a site's effect on the mean is bounded by its
weight share times `max_norm`)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def l2(array: np.ndarray) -> float:
    # np.square + sum, not np.dot: BLAS may hand a 20k-element dot to its threads, 100x slower on a busy box
    return float(np.sqrt(np.square(array, dtype=np.float64).sum()))


def clip_l2(change: Mapping[str, np.ndarray], max_norm: float | None) -> tuple[dict[str, np.ndarray], float]:
    """(the change scaled to L2 norm <= max_norm over all its tensors together, its norm before); None: no bound.
    The inputs are not modified."""
    norm = float(np.sqrt(sum(l2(d) ** 2 for d in change.values())))
    if max_norm is not None and norm > max_norm:
        scale = max_norm / norm
        return {k: d * np.asarray(scale, d.dtype) for k, d in change.items()}, norm
    return dict(change), norm
