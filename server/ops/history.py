"""The federation's history: one `RoundSummary` per committed round, appended durably to rounds.jsonl.

The checkpoint holds only the current state; this file holds everything that grows with rounds, so the cost
of a round stays constant. Each line is written, flushed and fsynced before the checkpoint that commits the
round is replaced (server/checkpoint.py), and a failed write is cut back to the previous length, so the file
is always whole lines of strict JSON (no NaN or Infinity). On start, `RoundsLog.reconcile` drops what the
checkpoint never committed and refuses a file that lacks committed rounds.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..common.messages import Metrics

ROUNDS_FILE = "rounds.jsonl"


class HistoryError(RuntimeError):
    pass


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


class RoundsLog:
    """rounds.jsonl: append-only, one fsynced line per committed round, idempotent per round."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.last_round = 0

    def append(self, summary: RoundSummary) -> None:
        """Append `summary` durably; a retry of a round already appended does nothing."""
        if summary.round <= self.last_round:
            return
        data = summary.line().encode()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "ab") as fh:
            start = fh.tell()
            try:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            except BaseException:
                with contextlib.suppress(OSError):  # never leave half a line for the next append to run into
                    fh.truncate(start)
                raise
        self.last_round = summary.round

    def read(self) -> list[dict[str, Any]]:
        """Every whole line (a torn last line, from a crash in mid-write, is left out)."""
        if not self.path.exists():
            return []
        out = []
        lines = self.path.read_bytes().split(b"\n")
        for number, raw in enumerate(lines, 1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except ValueError:
                if number == len(lines):  # no newline after it: the write it belonged to never finished
                    break
                raise HistoryError(f"{self.path}:{number} is not JSON; the history is damaged") from None
            if not isinstance(record, dict) or not isinstance(record.get("round"), int):
                raise HistoryError(f"{self.path}:{number} has no round number")
            out.append(record)
        return out

    def reconcile(self, next_round: int, committed: Mapping[int, dict[str, Any]] | None = None) -> None:
        """Make the file hold exactly rounds 1 .. next_round - 1, as the checkpoint says.

        Lines of rounds the checkpoint never committed (a crash between the two writes) and a torn last line
        are dropped; rounds it lacks are rebuilt from `committed` when given (older checkpoints carried the
        history), else the start is refused.
        """
        committed = committed or {}
        records = self.read()
        kept = [r for r in records if r["round"] < next_round]
        have = {r["round"] for r in kept}
        rebuilt = [dict(committed[r]) for r in sorted(committed) if r < next_round and r not in have]
        lines = sorted(kept + rebuilt, key=lambda r: r["round"])
        rounds = [r["round"] for r in lines]
        if rounds != list(range(1, next_round)):
            missing = sorted(set(range(1, next_round)) - set(rounds))
            raise HistoryError(
                f"{self.path} lacks rounds {_ranges(missing)} that the checkpoint completed (or repeats some): "
                "restore the file from a backup, or start a new federation with --fresh")
        if len(lines) != len(records) or rebuilt or (self.path.exists() and not _ends_with_newline(self.path)):
            from ..common.serde import atomic_write

            atomic_write(self.path, b"".join(json.dumps(r, allow_nan=False, separators=(",", ":")).encode() + b"\n"
                                             for r in lines))
        self.last_round = next_round - 1


def _ends_with_newline(path: Path) -> bool:
    size = path.stat().st_size
    if size == 0:
        return True
    with open(path, "rb") as fh:
        fh.seek(size - 1)
        return fh.read(1) == b"\n"


def _ranges(numbers: list[int]) -> str:
    if not numbers:
        return "(none missing)"
    return f"{numbers[0]}..{numbers[-1]}" if len(numbers) > 1 else str(numbers[0])
