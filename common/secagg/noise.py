"""Distributed Gaussian noise: each site adds its share, so the survivors' sum carries the noise DP accounts for.

Central DP-FedAvg (server/pipeline/privacy.py) adds N(0, (sigma C)^2) to the sum of the changes, each clipped to
L2 norm C and weighted 1. Under secure aggregation nobody sees that sum before it is noised, so each site adds
N(0, (sigma C)^2 / t) to its own clipped change before masking (weight 1), t being the round's threshold: the
noises of any s >= t survivors sum to variance (s / t)(sigma C)^2 >= (sigma C)^2, so the accountant's epsilon
remains an upper bound. A round where all n sampled sites survive carries n / t times the noise it needs.

The noise comes from the operating system's entropy unless a generator is passed (tests only): noise that can
be reproduced can be subtracted. The field's clip range must leave room for it (`clip_range_for`).
"""

from __future__ import annotations

import math

import numpy as np

TAIL_SIGMAS = 6.0  # a coordinate's noise exceeds 6 standard deviations with probability 2e-9


def share_std(noise_multiplier: float, clip: float, threshold: int) -> float:
    """The standard deviation of one site's noise share."""
    if not (noise_multiplier > 0 and clip > 0 and threshold >= 1):
        raise ValueError(f"need noise_multiplier > 0, clip > 0, threshold >= 1; got {noise_multiplier}, {clip}, "
                         f"{threshold}")
    return noise_multiplier * clip / math.sqrt(threshold)


def clip_range_for(noise_multiplier: float, clip: float, threshold: int) -> float:
    """A field clip range that a clipped change plus its noise share stays inside but for a 2e-9 tail."""
    return clip + TAIL_SIGMAS * share_std(noise_multiplier, clip, threshold)


def add_noise_share(change: np.ndarray, std: float, clip: float, rng: np.random.Generator | None = None) -> np.ndarray:
    """`change` (already clipped to L2 norm `clip`) plus this site's share of the round's Gaussian noise, of
    standard deviation `std` (`share_std`: the coordinator announces it)."""
    x = np.asarray(change, dtype=np.float64)
    norm = float(np.sqrt(np.square(x).sum()))
    if norm > clip * (1 + 1e-6):
        raise ValueError(f"the change's L2 norm {norm:.6g} exceeds the DP clip {clip}: clip it before adding noise")
    return x + (rng or np.random.default_rng()).normal(0.0, std, size=x.shape)
