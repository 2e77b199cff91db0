"""Making a closed round durable: the checkpoint save, retried with a growing delay, never silent.

A round moves forward in memory only once its checkpoint is saved (server/round/rounds.py). A failed save (disk full,
an I/O error, permissions) keeps the round open: each failure is an incident and an error line naming the fix,
the next try comes after 1, 2, 4 ... 30 s, and the recovery is logged.
"""

from __future__ import annotations

import errno
import time
from collections.abc import Callable

from ...common.logs import Event
from .incidents import IncidentKind, Incidents
from .state import FederationState

MAX_RETRY_DELAY_S = 30.0


def save_advice(exc: BaseException) -> str:
    """What the operator can do about a checkpoint that could not be written, by its cause."""
    kept = "; the round is kept open in memory and the save retried"
    advice = getattr(exc, "advice", None)  # an error that knows its remedy (server/ops/checkpoint.py)
    if isinstance(advice, str) and advice:
        return advice + kept
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "free space on the --state-dir volume" + kept
    if isinstance(exc, OSError) and exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "make the --state-dir volume writable by the coordinator" + kept
    if isinstance(exc, OSError):
        return "check (or repair) the --state-dir volume: an I/O error" + kept
    return "an unexpected error (a bug: please report it with this line)" + kept


class Saver:
    def __init__(self, save: Callable[[FederationState], None], incidents: Incidents, log: Callable[..., None],
                 observe: Callable[[float], None] | None = None) -> None:
        """`observe`: told each successful save's wall time (the coordinator's checkpoint histogram)."""
        self._save = save
        self._incidents = incidents
        self._log = log
        self._observe = observe
        self.failures = 0
        self.retry_at = 0.0

    def due(self, now: float) -> bool:
        return now >= self.retry_at

    def save(self, state: FederationState, round_: int, attempt: int, now: float) -> bool:
        """Save `state` (the closed round `round_`); False when it failed and must be tried again."""
        started = time.monotonic()
        try:
            self._save(state)
        except Exception as exc:  # disk full, I/O error, permissions: never lose the round, never go silent
            self.failures += 1
            delay = min(2.0 ** (self.failures - 1), MAX_RETRY_DELAY_S)
            self.retry_at = now + delay
            error = f"{type(exc).__name__}: {exc}"
            self._incidents.record(now, round_, attempt, IncidentKind.CHECKPOINT_FAILED, error, attempt=self.failures,
                                   retry_in_s=delay, advice=save_advice(exc))
            return False
        if self._observe is not None:
            self._observe(time.monotonic() - started)
        if self.failures:
            self._log("warning", Event.CHECKPOINT_RECOVERED, round=round_, attempts=self.failures + 1)
        self.failures = 0
        return True
