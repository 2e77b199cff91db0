"""Who a round samples: the sites heard from recently, less those a secure run named, drawn by the seed.

Pure: the same registry, round and attempt always draw the same sites (a restarted coordinator samples as the
first would have).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass

from .config import FederationConfig
from .state import ClientRecord


@dataclass(frozen=True)
class Draw:
    active: list[str]  # heard from within the online window, sorted
    sampled: frozenset[str]  # empty: too few sites to open the round

    @property
    def enough(self) -> bool:
        return bool(self.sampled)


def online_window_s(config: FederationConfig) -> float:
    """A client heard from within this window counts as online (and can be sampled)."""
    return max(config.round_timeout_s, 10 * config.poll_interval_s)


def draw(config: FederationConfig, clients: Mapping[str, ClientRecord], excluded: set[str], round_: int,
         attempt: int, now: float) -> Draw:
    """The attempt's sample: the fraction of the active sites, at least the minimum the config needs."""
    active = sorted(c for c, r in clients.items() if now - r.last_seen <= online_window_s(config))
    eligible = sorted(set(active) - excluded)  # a site a secure run named sits the round out
    k = min(config.sample_size(len(active)), len(eligible))
    if len(active) < config.min_clients or k < config.min_sample:
        return Draw(active, frozenset())
    rng = random.Random(f"{config.seed}:{round_}:{attempt}")
    return Draw(active, frozenset(rng.sample(eligible, k)))
