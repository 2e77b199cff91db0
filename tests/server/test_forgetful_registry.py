"""Registries that forget (issue 30): ids that join and heartbeat but never deliver get a bounded trial, stop
being sampled, and make room for a new real site in a full registry; sites that deliver are never touched."""

from __future__ import annotations

import numpy as np
import pytest

from pfeddc.common import serde
from pfeddc.common.messages import Action, Code, Metrics, Refused
from pfeddc.common.spec import TensorSpec
from pfeddc.server.round.config import FederationConfig
from pfeddc.server.round.federation import Federation
from pfeddc.server.round.sampling import TRIAL_ROUNDS
from pfeddc.server.round.state import FederationState

SPEC = [TensorSpec("text.global", (2, 4))]
TIMEOUT = 30.0


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def federation(max_clients: int, ttl: float = 3600.0) -> tuple[Federation, Clock]:
    clock = Clock()
    config = FederationConfig(rounds=50, min_clients=2, max_clients=max_clients, round_timeout_s=TIMEOUT,
                              client_ttl_s=ttl, quorum=1)
    state = FederationState(1, {"text.global": np.zeros((2, 4), np.float32)}, {})
    return Federation(config, SPEC, state, clock=clock), clock


def deliver(fed: Federation, client_id: str) -> None:
    task = fed.task(client_id)
    assert task.action == Action.TRAIN, (client_id, task)
    payload = serde.encode({"text.global": np.ones((2, 4), np.float32)})
    fed.submit(client_id, task.round, payload, 10, Metrics())


def round_with_fakes(fed: Federation, clock: Clock, real: list[str], fakes: list[str]) -> set[str]:
    """One round: everyone is heard from, the real sites deliver, the fakes never do; the round's sample."""
    for c in real + fakes:
        fed.heartbeat(c)
    fed.tick()
    round_ = fed.round
    sampled = set(fed.snapshot().sampled)
    for c in real:
        if c in sampled:
            deliver(fed, c)
    if fed.round == round_:  # fakes sampled: the round runs out its time
        clock.now += TIMEOUT + 1
        fed.tick()
    assert fed.round == round_ + 1
    return sampled


def test_fakes_that_never_deliver_stop_being_sampled_and_rounds_go_on() -> None:
    fed, clock = federation(max_clients=50)
    real = ["real-a", "real-b"]
    fakes = [f"fake-{i:02d}" for i in range(40)]
    for c in real + fakes:
        fed.join(c, 10, SPEC)
    samples = [round_with_fakes(fed, clock, real, fakes) for _ in range(TRIAL_ROUNDS + 3)]
    assert all(sum(f in s for s in samples) == TRIAL_ROUNDS for f in fakes)  # their trial: sampled like everyone
    assert samples[-2:] == [set(real), set(real)]  # then only the sites that deliver
    assert fed.round == TRIAL_ROUNDS + 4  # every round committed, with the real sites


def test_a_new_site_joins_a_full_registry_in_place_of_a_failed_trial_and_is_sampled() -> None:
    fed, clock = federation(max_clients=6)
    real = ["real-a", "real-b"]
    fakes = ["fake-0", "fake-1", "fake-2", "fake-3"]
    for c in real + fakes:
        fed.join(c, 10, SPEC)
    with pytest.raises(Refused) as full:  # the fakes are still on trial: no room yet, and none is evicted
        fed.join("newcomer", 10, SPEC)
    assert full.value.code == Code.RESOURCE_EXHAUSTED and "--client-ttl" in full.value.message
    for _ in range(TRIAL_ROUNDS + 1):  # (round 1 opened with the first two sites to join)
        round_with_fakes(fed, clock, real, fakes)
    fed.join("newcomer", 10, SPEC)  # a failed trial makes room
    registry = {c.client_id for c in fed.snapshot().clients}
    assert "newcomer" in registry and len(registry) == 6 and set(real) <= registry
    assert "newcomer" in round_with_fakes(fed, clock, [*real, "newcomer"], [f for f in fakes if f in registry])


def test_ids_unseen_for_the_ttl_expire_and_sites_that_delivered_never_do() -> None:
    fed, clock = federation(max_clients=3, ttl=100.0)
    for c in ("real-a", "real-b"):
        fed.join(c, 10, SPEC)
    round_with_fakes(fed, clock, ["real-a", "real-b"], [])
    fed.join("silent", 10, SPEC)
    clock.now += 101  # nobody heard from: real-a and real-b delivered, silent never did
    fed.join("newcomer", 10, SPEC)
    assert {c.client_id for c in fed.snapshot().clients} == {"real-a", "real-b", "newcomer"}
    with pytest.raises(Refused):  # the newcomer is in its trial and the others delivered: nothing to evict
        fed.join("another", 10, SPEC)


def test_ten_thousand_fake_ids_cost_two_rounds_and_a_new_site_still_joins_and_is_sampled() -> None:
    """Issue 30's figure: 10,000 made-up ids that heartbeat and never deliver, in a registry they fill."""
    fed, clock = federation(max_clients=10_002)
    real = ["real-a", "real-b"]
    fakes = [f"fake-{i:05d}" for i in range(10_000)]
    for c in real + fakes:
        fed.join(c, 10, SPEC)
    samples = [round_with_fakes(fed, clock, real, fakes) for _ in range(TRIAL_ROUNDS + 3)]
    assert [len(s) for s in samples[-2:]] == [2, 2]  # every round committed; the fakes' trials are over
    fed.join("newcomer", 10, SPEC)  # the registry was full: a failed trial made room
    registry = {c.client_id for c in fed.snapshot().clients}
    left = [f for f in fakes if f in registry]
    assert len(left) == 9_999
    sampled = [round_with_fakes(fed, clock, [*real, "newcomer"], left) for _ in range(2)]
    assert "newcomer" in sampled[1]  # the round after the one already open when it joined
