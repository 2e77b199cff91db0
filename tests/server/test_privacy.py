"""DP accounting with dp-accounting: epsilon grows with rounds, shrinks with noise, survives a restart."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pfeddc.common import serde
from pfeddc.common.messages import Metrics
from pfeddc.common.spec import TensorSpec
from pfeddc.server.ops.checkpoint import ROUNDS_FILE, Checkpoint
from pfeddc.server.pipeline.aggregate import AggregatorKind
from pfeddc.server.pipeline.privacy import DpSettings, PrivacyLedger, epsilon_after, noise_for_epsilon
from pfeddc.server.round.config import FederationConfig
from pfeddc.server.round.federation import Federation, FederationState


def test_privacy_epsilon_grows_with_rounds_and_shrinks_with_noise() -> None:
    assert epsilon_after(0, 1.0) == 0.0
    assert epsilon_after(10, 1.0) < epsilon_after(20, 1.0)
    assert epsilon_after(10, 4.0) < epsilon_after(10, 1.0)


def test_privacy_ledger_round_trips_and_composes_mixed_noise() -> None:
    ledger = PrivacyLedger()
    for sigma in (1.0, 1.0, 2.0):
        ledger.record(sigma)
    back = PrivacyLedger.from_json(ledger.to_json())
    assert back == ledger
    assert epsilon_after(2, 1.0) < back.epsilon(1e-5) < epsilon_after(3, 1.0)
    with pytest.raises(ValueError, match="impossible"):
        PrivacyLedger.from_json([[-1.0, 3]])


@pytest.mark.parametrize("target", [1.0, 4.0, 8.0])
def test_privacy_noise_for_epsilon_meets_the_target(target: float) -> None:
    sigma = noise_for_epsilon(target, rounds=10)
    assert epsilon_after(10, sigma) == pytest.approx(target, rel=1e-3)


@pytest.mark.parametrize("kind", [AggregatorKind.MEDIAN, AggregatorKind.TRIMMED_MEAN])
def test_privacy_refused_with_a_robust_aggregator_with_the_reason(kind: AggregatorKind) -> None:
    with pytest.raises(ValueError, match="privacy accounting covers the clipped, noised mean"):
        FederationConfig(rounds=3, aggregator=kind, dp=DpSettings(1.0, 1.0))


def test_privacy_epsilon_is_recorded_every_round_and_survives_a_restart(tmp_path: Path) -> None:
    dp = DpSettings(noise_multiplier=2.0, clip=0.5)
    spec = [TensorSpec("text.global", (4, 8))]
    metrics = Metrics(train_loss=0.5, accuracy_before=0.5, accuracy_after=0.5, num_test_examples=4)

    def federation() -> Federation:
        checkpoint = Checkpoint(tmp_path)
        state = checkpoint.load(spec, 5) or FederationState(1, {"text.global": np.zeros((4, 8), np.float32)}, {})
        checkpoint.save(state)
        fed = Federation(FederationConfig(rounds=5, min_clients=2, dp=dp), spec, state,
                         save=checkpoint.save, rng=np.random.default_rng(0))
        for cid in ("a", "b"):
            fed.join(cid, 10, spec)
        return fed

    fed = federation()
    spent = []
    for _ in range(2):
        for cid in ("a", "b"):
            fed.submit(cid, fed.round, serde.encode({"text.global": np.ones((4, 8), np.float32)}), 10, metrics)
        assert fed.last_round is not None and fed.last_round.aggregator == "dp-fedavg"
        spent.append(fed.last_round.dp_epsilon)
    assert spent == pytest.approx([epsilon_after(1, 2.0), epsilon_after(2, 2.0)], rel=1e-4)
    fed = federation()  # a restart: the ledger comes back from the checkpoint
    for cid in ("a", "b"):
        fed.submit(cid, 3, serde.encode({"text.global": np.ones((4, 8), np.float32)}), 10, metrics)
    lines = [json.loads(x) for x in (tmp_path / ROUNDS_FILE).read_text().splitlines()]
    assert [r["dp_epsilon"] for r in lines] == pytest.approx([epsilon_after(r, 2.0) for r in (1, 2, 3)], rel=1e-4)
