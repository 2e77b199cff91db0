"""How a round's accepted updates become the next global prompts: clip, aggregate (or add DP noise), check.

Pure: the federation calls `combine` under its lock with the current global and the round's updates.

Clipping bounds each client's influence: its change from the current global, taken over all its tensors
as one vector, is scaled down to L2 norm `clip_norm` (whole-update clipping, the same unit DP-FedAvg clips,
so one flag means one thing). With FedAvg a client of weight w among total W can then move the global by at
most (w / W) * clip_norm per round, whatever it sends.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from .aggregate import Aggregator
from .privacy import DpSettings, noisy_mean

# Far above what honest local training moves the prompts in a round (lr x steps x the gradient clip, about
# 0.1-3 on the shipped settings) and far below what breaks a backbone: bounds a hostile site, spares honest ones.
DEFAULT_CLIP_NORM = 10.0


class NonFiniteGlobal(ValueError):
    """The aggregate holds NaN or Inf: the round must not commit it."""


@dataclass(frozen=True)
class Combined:
    tensors: dict[str, np.ndarray]
    clipped: tuple[str, ...]  # clients whose change was scaled down
    largest_change: float  # L2 norm of the largest change before clipping


def clip_change(global_: Mapping[str, np.ndarray], update: Mapping[str, np.ndarray],
                max_norm: float | None) -> tuple[dict[str, np.ndarray], float]:
    """The change `update - global` (in the global's dtype), scaled to L2 norm <= `max_norm` over all tensors;
    and its norm before scaling (summed in float64)."""
    delta = {k: np.subtract(update[k], global_[k], dtype=np.asarray(global_[k]).dtype) for k in global_}
    # np.square + sum, not np.dot: BLAS may hand a 20k-element dot to its threads, 100x slower on a busy box
    norm = float(np.sqrt(sum(float(np.square(d, dtype=np.float64).sum()) for d in delta.values())))
    if max_norm is not None and norm > max_norm:
        scale = max_norm / norm
        delta = {k: d * np.asarray(scale, d.dtype) for k, d in delta.items()}
    return delta, norm


def combine(global_: Mapping[str, np.ndarray], updates: Mapping[str, tuple[Mapping[str, np.ndarray], float]],
            aggregate: Aggregator, clip_norm: float | None, dp: DpSettings | None = None, sampled: int = 0,
            rng: np.random.Generator | None = None) -> Combined:
    """The next global from `updates` (client -> (tensors, weight)).

    Without DP: each change is clipped to `clip_norm` (None: not clipped) and `aggregate` combines the clipped
    changes (every aggregator commutes with adding the same global to all its inputs). With DP: changes are
    clipped to `dp.clip` and averaged with equal weights and Gaussian noise over `sampled` clients
    (server/privacy.py); the aggregator must be FedAvg.
    """
    if not updates:
        raise ValueError("combine needs at least one update")
    bound = dp.clip if dp is not None else clip_norm
    changes, clipped, largest = {}, [], 0.0
    for client, (tensors, _weight) in sorted(updates.items()):
        changes[client], norm = clip_change(global_, tensors, bound)
        largest = max(largest, norm)
        if bound is not None and norm > bound:
            clipped.append(client)
    if dp is not None:
        change = noisy_mean(list(changes.values()), dp, max(sampled, len(changes)), rng or np.random.default_rng())
    else:
        change = aggregate([(d, updates[c][1]) for c, d in changes.items()])
    out = {k: (np.asarray(global_[k], np.float64) + change[k]).astype(np.asarray(global_[k]).dtype) for k in global_}
    bad = sorted(k for k, v in out.items() if not np.isfinite(v).all())
    if bad:
        raise NonFiniteGlobal(f"the aggregate of round's updates holds NaN or Inf in {bad}")
    return Combined(out, tuple(clipped), largest)
