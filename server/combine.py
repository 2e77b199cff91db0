"""How a round's accepted updates become the next global prompts: clip, aggregate (or add DP noise), check.

Pure: the federation calls `combine` under its lock with the current global and the round's updates.

Clipping bounds each client's influence, in two stages. First per global tensor, adaptive to the round
(server/clipping.py, `--adaptive-clip`, on by default): no change of a tensor beyond a small multiple of the
round's median change of it. Then the fixed whole-update bound (`--update-clip-norm`): the change over all
tensors as one vector is scaled down to L2 norm `clip_norm` (the unit DP-FedAvg clips). With FedAvg a client
of weight w among total W moves the global by at most (w / W) * clip_norm per round, and tensor k by at most
(w / W) * adaptive * s_k.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from .aggregate import Aggregator
from .clipping import TensorClip, clip_per_tensor, l2
from .privacy import DpSettings, noisy_mean

# Far above what honest local training moves the prompts in a round (lr x steps x the gradient clip, about
# 0.1-3 on the shipped settings) and far below what breaks a backbone: bounds a hostile site, spares honest ones.
DEFAULT_CLIP_NORM = 10.0


class NonFiniteGlobal(ValueError):
    """The aggregate holds NaN or Inf: the round must not commit it."""


@dataclass(frozen=True)
class Combined:
    tensors: dict[str, np.ndarray]
    clipped: tuple[str, ...]  # clients whose whole change was scaled down to the fixed bound
    largest_change: float  # L2 norm of the largest change before the fixed bound (after the per-tensor one)
    tensor_clip: TensorClip | None = None  # the per-tensor adaptive bounds, when they applied


def _change(global_: Mapping[str, np.ndarray], update: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: np.subtract(update[k], global_[k], dtype=np.asarray(global_[k]).dtype) for k in global_}


def _scale_to(delta: dict[str, np.ndarray], max_norm: float | None) -> tuple[dict[str, np.ndarray], float]:
    norm = float(np.sqrt(sum(l2(d) ** 2 for d in delta.values())))
    if max_norm is not None and norm > max_norm:
        scale = max_norm / norm
        delta = {k: d * np.asarray(scale, d.dtype) for k, d in delta.items()}
    return delta, norm


def clip_change(global_: Mapping[str, np.ndarray], update: Mapping[str, np.ndarray],
                max_norm: float | None) -> tuple[dict[str, np.ndarray], float]:
    """The change `update - global` (in the global's dtype), scaled to L2 norm <= `max_norm` over all tensors;
    and its norm before scaling (summed in float64)."""
    return _scale_to(_change(global_, update), max_norm)


def combine(global_: Mapping[str, np.ndarray], updates: Mapping[str, tuple[Mapping[str, np.ndarray], float]],
            aggregate: Aggregator, clip_norm: float | None, dp: DpSettings | None = None, sampled: int = 0,
            rng: np.random.Generator | None = None, adaptive: float | None = None,
            previous_scale: Mapping[str, float] | None = None) -> Combined:
    """The next global from `updates` (client -> (tensors, weight)).

    Without DP: each change of each tensor is clipped to `adaptive` x the round's scale of that tensor
    (server/clipping.py; None: not), then each whole change to `clip_norm` (None: not), and `aggregate`
    combines the clipped changes (every aggregator commutes with adding the same global to all its inputs).
    With DP: changes are clipped to `dp.clip` only (a data-dependent bound would void the sensitivity) and
    averaged with equal weights and Gaussian noise over `sampled` clients (server/privacy.py); the aggregator
    must be FedAvg.
    """
    if not updates:
        raise ValueError("combine needs at least one update")
    bound = dp.clip if dp is not None else clip_norm
    raw = {client: _change(global_, tensors) for client, (tensors, _weight) in sorted(updates.items())}
    tensor_clip = None
    if adaptive is not None and dp is None:
        raw, tensor_clip = clip_per_tensor(raw, adaptive, previous_scale or {})
    changes, clipped, largest = {}, [], 0.0
    for client, delta in raw.items():
        changes[client], norm = _scale_to(delta, bound)
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
    return Combined(out, tuple(clipped), largest, tensor_clip)
