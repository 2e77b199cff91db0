"""Central differential privacy for the global prompts: DP-FedAvg and its privacy accounting.

The mechanism (McMahan et al., "Learning differentially private recurrent language models", 2018): each
client's change from the current global is clipped to L2 norm `clip`, the clipped changes are summed with
equal weight, Gaussian noise of standard deviation `noise_multiplier * clip` is added to the sum, and the sum
is divided by the number of clients sampled in the round (fixed before any update arrives, so the
denominator reveals nothing about who answered). One client's whole contribution is the protected unit.

Accounting: Google's `dp-accounting` RDP accountant composes one Gaussian event per committed round. It
claims no amplification by sampling (the coordinator samples without replacement from the clients that
checked in, which the add/remove-one accountant does not cover), so epsilon is an upper bound.
The noise comes from the operating system's entropy, never from the federation seed: noise that can be
reproduced can be subtracted.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

DEFAULT_DELTA = 1e-5


@dataclass(frozen=True)
class DpSettings:
    noise_multiplier: float
    clip: float
    delta: float = DEFAULT_DELTA

    def __post_init__(self) -> None:
        checks = [
            (self.noise_multiplier > 0 and math.isfinite(self.noise_multiplier),
             f"--dp-noise-multiplier must be > 0 (0 adds no noise and protects nothing), got {self.noise_multiplier}"),
            (self.clip > 0 and math.isfinite(self.clip), f"--dp-clip must be > 0, got {self.clip}"),
            (0 < self.delta < 1, f"--dp-delta must be in (0, 1), got {self.delta}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


def _accountant(events: Mapping[float, int]) -> Any:
    import dp_accounting  # imported only when DP is on: it pulls scipy and absl

    accountant = dp_accounting.rdp.RdpAccountant()
    for sigma, count in events.items():
        if count:
            accountant.compose(dp_accounting.GaussianDpEvent(sigma), count)
    return accountant


@dataclass
class PrivacyLedger:
    """How many committed rounds released noise at each multiplier: all the accountant needs, constant size."""

    rounds_by_noise: dict[float, int] = field(default_factory=dict)

    def record(self, noise_multiplier: float) -> None:
        self.rounds_by_noise[noise_multiplier] = self.rounds_by_noise.get(noise_multiplier, 0) + 1

    def epsilon(self, delta: float) -> float:
        """Epsilon spent so far at `delta` (0 before any DP round)."""
        if not any(self.rounds_by_noise.values()):
            return 0.0
        return float(_accountant(self.rounds_by_noise).get_epsilon(delta))

    def to_json(self) -> list[list[float]]:
        return [[sigma, count] for sigma, count in sorted(self.rounds_by_noise.items())]

    @classmethod
    def from_json(cls, data: Any) -> PrivacyLedger:
        try:
            ledger = {float(sigma): int(count) for sigma, count in data or []}
        except (TypeError, ValueError) as exc:
            raise ValueError(f"privacy ledger must be a list of [noise_multiplier, rounds], got {data!r}") from exc
        if any(s <= 0 or not math.isfinite(s) or c < 0 for s, c in ledger.items()):
            raise ValueError(f"privacy ledger holds impossible entries: {data!r}")
        return cls(ledger)


def epsilon_after(rounds: int, noise_multiplier: float, delta: float = DEFAULT_DELTA) -> float:
    """Epsilon at `delta` after `rounds` DP rounds at `noise_multiplier`."""
    return PrivacyLedger({noise_multiplier: rounds}).epsilon(delta)


def noise_for_epsilon(epsilon: float, rounds: int, delta: float = DEFAULT_DELTA) -> float:
    """The smallest noise multiplier whose `rounds` rounds spend at most `epsilon` at `delta` (for benchmarks)."""
    import dp_accounting

    if epsilon <= 0 or rounds < 1:
        raise ValueError(f"need epsilon > 0 and rounds >= 1, got {epsilon} and {rounds}")
    return float(dp_accounting.calibrate_dp_mechanism(
        dp_accounting.rdp.RdpAccountant,
        lambda sigma: dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(sigma), rounds),
        epsilon, delta, bracket_interval=dp_accounting.ExplicitBracketInterval(1e-3, 1e4)))
