"""The state a closing round leads to: combined globals, participation, privacy spent, and its summary.

Participation is counted here, once, on the copies the checkpoint saves; the live records adopt the saved
counts once the round is durable (server/rounds.py).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping

import numpy as np

from .aggregate import Aggregator
from .config import FederationConfig
from .history import RoundSummary, SiteRecord
from .pipeline import Rules, combine
from .privacy import PrivacyLedger
from .state import FederationState
from .updates import CheckedUpdate


def next_state(state: FederationState, config: FederationConfig, aggregate: Aggregator,
               received: Mapping[str, CheckedUpdate], failed: Mapping[str, str], stragglers: list[str],
               sampled: int, attempt: int, duration_s: float, rng: np.random.Generator) -> FederationState:
    """The candidate state after this round, built without touching `state` (it becomes the federation's only
    once saved). Raises `NonFiniteGlobal` when the aggregate is not finite."""
    weights = {c: float(config.weight(u.num_examples)) for c, u in received.items()}
    updates = {c: (u.tensors, weights[c]) for c, u in received.items()}
    rules = Rules(aggregate, config.update_clip_norm or None, config.adaptive_clip or None, state.change_scale,
                  config.dp, sampled, rng)
    combined = combine(state.global_tensors, updates, rules)
    next_global = combined.tensors
    tensor_clip = combined.tensor_clip
    privacy, dp = PrivacyLedger(dict(state.privacy.rounds_by_noise)), config.dp
    if dp is not None:
        privacy.record(dp.noise_multiplier)
    clients = {c: copy.copy(r) for c, r in state.clients.items()}
    for client_id in received:
        clients[client_id].rounds_participated += 1
    summary = RoundSummary(
        round=state.round, time=time.time(), duration_s=duration_s, attempts=attempt + 1,
        aggregator="dp-fedavg" if dp else str(config.aggregator),
        sites={c: SiteRecord(u.num_examples, weights[c], u.metrics) for c, u in received.items()},
        failed=dict(failed), stragglers=tuple(stragglers), clipped=combined.clipped,
        clipped_tensors=tensor_clip.clipped if tensor_clip else {},
        clip_bounds=tensor_clip.bounds if tensor_clip else {},
        dp_epsilon=privacy.epsilon(dp.delta) if dp else None, dp_delta=dp.delta if dp else None,
        global_change={k: float(np.linalg.norm(v - state.global_tensors[k])) for k, v in next_global.items()})
    scale = tensor_clip.scale if tensor_clip else dict(state.change_scale)
    return FederationState(state.round + 1, next_global, clients, privacy, summary, scale, combined.committed)
