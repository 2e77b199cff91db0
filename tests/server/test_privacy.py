"""DP accounting with dp-accounting: epsilon grows with rounds, shrinks with noise, survives a restart."""

from __future__ import annotations

import pytest

from pfeddc.server.aggregate import AggregatorKind
from pfeddc.server.config import FederationConfig
from pfeddc.server.privacy import DpSettings, PrivacyLedger, epsilon_after, noise_for_epsilon


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
