"""Who a round samples: the sites heard from recently, less those a secure run named and those whose trial
ran out, drawn by the seed.

A new id is on trial until it delivers an update: once it has stayed silent (neither an update nor a failure
report) through TRIAL_ROUNDS attempts it was sampled in (a fake that joins and heartbeats, or a site that never
finishes a round), it sits out for --client-ttl before it gets another trial, unless the round could not open
without it; meanwhile it can be evicted to make room for a new site (server/round/admission.py). Sites with a
delivery record are never affected.

`draw` is pure: the same registry, round and attempt always draw the same sites (a restarted coordinator samples
as the first would have); `count_silent` is the round owner's, called as an attempt closes.
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


TRIAL_ROUNDS = 2


def trial_failed(record: ClientRecord, now: float, ttl_s: float) -> bool:
    """Silent in TRIAL_ROUNDS attempts it was sampled in, never having delivered, its time out (--client-ttl)
    not over."""
    return record.on_trial() and record.trial_rounds >= TRIAL_ROUNDS and now - record.trial_failed_at < ttl_s


def draw(config: FederationConfig, clients: Mapping[str, ClientRecord], excluded: set[str], round_: int,
         attempt: int, now: float) -> Draw:
    """The attempt's sample: the fraction of the active sites, at least the minimum the config needs."""
    active = sorted(c for c, r in clients.items() if now - r.last_seen <= online_window_s(config))
    failed = {c for c in active if trial_failed(clients[c], now, config.client_ttl_s)}
    if len(active) - len(failed) < config.min_clients or len(set(active) - excluded - failed) < config.min_sample:
        failed = set()  # the round cannot open without them: a small federation keeps its flaky newcomers
    eligible = sorted(set(active) - excluded - failed)  # a site a secure run named sits the round out
    k = min(config.sample_size(len(active) - len(failed)), len(eligible))
    if len(active) - len(failed) < config.min_clients or k < config.min_sample:
        return Draw(active, frozenset())
    rng = random.Random(f"{config.seed}:{round_}:{attempt}")
    return Draw(active, frozenset(rng.sample(eligible, k)))


def count_silent(clients: Mapping[str, ClientRecord], silent: set[str], now: float) -> None:
    """An attempt closed: each id still on trial that neither delivered nor reported a failure in it used one of
    its TRIAL_ROUNDS (the last one, or any after a time out, starts its --client-ttl time out). A site that
    answers, even with a failure, never runs out of trial: the round did not wait for it."""
    for client_id in silent:
        record = clients.get(client_id)
        if record is not None and record.on_trial():
            record.trial_rounds += 1
            if record.trial_rounds >= TRIAL_ROUNDS:
                record.trial_failed_at = now


def evictable(clients: Mapping[str, ClientRecord], busy: set[str], now: float, ttl_s: float) -> str | None:
    """The id to drop for a new one when the registry is full: one that never delivered and either was not seen
    for --client-ttl or failed its trial (the longest unseen first); never one in the open attempt, never one
    with a delivery record, never a newcomer still in its trial."""
    candidates = [r for c, r in clients.items() if c not in busy and r.on_trial()
                  and (now - r.last_seen > ttl_s or trial_failed(r, now, ttl_s))]
    return min(candidates, key=lambda r: (r.last_seen, r.client_id)).client_id if candidates else None
