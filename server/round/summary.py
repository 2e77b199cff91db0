"""What a committed round leaves behind: who took part with what weight and metrics, what failed, what it cost.

One `RoundSummary` per round: the round's closing builds it (server/round/closing.py), rounds.jsonl keeps them
(server/ops/history.py), the status and the metrics read the last one.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from ...common.metrics import Metrics


def json_number(value: float, digits: int = 6) -> float | None:
    """A finite float for strict JSON, or None."""
    return round(value, digits) if math.isfinite(value) else None


@dataclass(frozen=True)
class SiteRecord:
    """What one client declared and reported with its accepted update."""

    num_examples: int
    weight: float
    metrics: Metrics

    def to_json(self) -> dict[str, Any]:
        return {"num_examples": self.num_examples, "weight": json_number(self.weight),
                **{k: json_number(v) for k, v in self.metrics.as_dict().items()}}


@dataclass(frozen=True)
class RoundSummary:
    """One line of rounds.jsonl: a committed round, who took part, what failed, what it cost in privacy."""

    round: int
    time: float  # unix time the round was committed
    duration_s: float
    attempts: int  # 1 + the retries this round needed
    aggregator: str
    sites: dict[str, SiteRecord]
    failed: dict[str, str] = field(default_factory=dict)  # client -> reason it gave (or the coordinator's)
    stragglers: tuple[str, ...] = ()
    clipped: tuple[str, ...] = ()  # clients whose change from the global was scaled down to the clip norm
    clipped_tensors: dict[str, tuple[str, ...]] = field(default_factory=dict)  # tensor -> clients clipped on it
    clip_bounds: dict[str, float] = field(default_factory=dict)  # tensor -> adaptive bound of this round
    dp_epsilon: float | None = None
    dp_delta: float | None = None
    global_change: dict[str, float] = field(default_factory=dict)  # L2 norm of (new - old) per global tensor

    @property
    def clients(self) -> list[str]:
        return sorted(self.sites)

    def weighted(self, metric: str, by_test_examples: bool = False) -> float | None:
        """The sites' `metric`, weighted like the prompts (or by their test examples); None when undefined."""
        pairs = []
        for site in self.sites.values():
            value = float(getattr(site.metrics, metric))
            weight = float(site.metrics.num_test_examples) if by_test_examples else site.weight
            if weight > 0 and math.isfinite(value):
                pairs.append((value, weight))
        total = sum(w for _, w in pairs)
        return json_number(sum(v * w / total for v, w in pairs)) if total else None

    def to_json(self) -> dict[str, Any]:
        return {
            "round": self.round, "time": round(self.time, 3), "duration_s": json_number(self.duration_s, 3),
            "attempts": self.attempts, "aggregator": self.aggregator, "clients": self.clients,
            "num_examples": sum(s.num_examples for s in self.sites.values()),
            "train_loss": self.weighted("train_loss"),
            "accuracy_before": self.weighted("accuracy_before", by_test_examples=True),
            "accuracy_after": self.weighted("accuracy_after", by_test_examples=True),
            "accuracy_global": self.weighted("accuracy_global", by_test_examples=True),
            "global_change": {k: json_number(v) for k, v in sorted(self.global_change.items())},
            "failed": dict(sorted(self.failed.items())), "stragglers": list(self.stragglers),
            "clipped": list(self.clipped),
            "clipped_tensors": {k: list(v) for k, v in sorted(self.clipped_tensors.items())},
            "clip_bounds": {k: json_number(v) for k, v in sorted(self.clip_bounds.items())},
            "dp_epsilon": None if self.dp_epsilon is None else json_number(self.dp_epsilon), "dp_delta": self.dp_delta,
            "sites": {c: s.to_json() for c, s in sorted(self.sites.items())},
        }

    def line(self) -> str:
        return json.dumps(self.to_json(), allow_nan=False, separators=(",", ":")) + "\n"
