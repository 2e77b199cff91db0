"""The federation's history: one `RoundSummary` (server/round/summary.py) per committed round, appended durably to
rounds.jsonl.

The checkpoint holds only the current state; this file holds everything that grows with rounds, so the cost
of a round stays constant. Each line is written, flushed and fsynced before the checkpoint that commits the
round is replaced (server/ops/checkpoint.py), and a failed write is cut back to the previous length, so the file
is always whole lines of strict JSON (no NaN or Infinity). On start, `RoundsLog.reconcile` drops what the
checkpoint never committed and refuses a file that lacks committed rounds.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..round.summary import RoundSummary

ROUNDS_FILE = "rounds.jsonl"


class HistoryError(RuntimeError):
    pass


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
            from ...common.serde import atomic_write

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
