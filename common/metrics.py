"""What a client reports with its update: one field list for the wire, the history, the status and the docs.

Its own module so the secure-aggregation messages (common/secagg/exchange.py) carry it without importing the rest
of the wire's domain types (which in turn carry secure-aggregation settings): no import circle.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields


@dataclass(frozen=True)
class Metrics:
    """What a client reports with its update; the field list is the wire's and the history's.

    NaN means "not measured this round" (e.g. no accuracy before training); infinities are refused.
    """

    train_loss: float = math.nan
    accuracy_before: float = math.nan  # personalized model on the local test split, before training (optional)
    accuracy_after: float = math.nan  # ... and after
    num_test_examples: int = 0
    train_seconds: float = 0.0
    accuracy_global: float = math.nan  # the round's global prompts alone (local part at zero), before training

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return _NAMES

    def as_dict(self) -> dict[str, float]:
        return {name: float(getattr(self, name)) for name in _NAMES}

    def non_finite(self) -> str | None:
        """The first infinite metric, if any (NaN means "not measured this round" and is allowed)."""
        return next((k for k in _NAMES if math.isinf(getattr(self, k))), None)


_NAMES = tuple(f.name for f in fields(Metrics))  # read once: fields() builds its answer anew on every call
