"""The plan of one secure attempt: each sampled site's settings (the threshold, the field, its weight, its clips and
its noise), drawn under a fresh run id, from the coordinator's config (server/round/secure.py runs the attempt)."""

from __future__ import annotations

import secrets
from collections.abc import Mapping

from ...common.secagg.exchange import SecureSettings
from ...common.secagg.field import DEFAULT_MODULUS_BITS, FieldParams
from ...common.secagg.noise import clip_range_for, share_std
from .config import FederationConfig


def settings(config: FederationConfig, attempt: int, sampled: list[str], counts: Mapping[str, int], length: int,
             clipped: tuple[str, ...] = (), signed: bool = False) -> dict[str, SecureSettings]:
    """Each sampled site's settings for one attempt: the threshold, the field, its weight, its clips and noise."""
    n = len(sampled)
    threshold = max(config.secagg_threshold, n // 2 + 1, config.secagg_min_sites)  # survivors needed to unmask
    dp = config.dp
    if dp is not None:  # DP-FedAvg: equal weights, each site clips to the DP clip and adds its noise share
        clip = dp.clip
        std = share_std(dp.noise_multiplier, dp.clip, threshold)
        field = FieldParams(clip_range_for(dp.noise_multiplier, dp.clip, threshold), n, DEFAULT_MODULUS_BITS)
        weights = dict.fromkeys(sampled, 1.0)
    else:
        clip = config.update_clip_norm
        std = 0.0
        field = FieldParams(clip, n, DEFAULT_MODULUS_BITS)
        capped = {c: config.weight(counts[c]) for c in sampled}
        top = max(capped.values())
        weights = {c: w / top for c, w in capped.items()}
    run_id = f"pfeddc/{secrets.token_hex(8)}"  # drawn per attempt: no run, restarted or not, shares an id
    return {c: SecureSettings(run_id, attempt, tuple(sorted(sampled)), threshold, length, field, weights[c], clip, std,
                              clipped, signed) for c in sampled}
