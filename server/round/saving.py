"""Making a closed round durable: the checkpoint save, retried with a growing delay, never silent.

A round moves forward in memory only once its checkpoint is saved (server/rounds.py). A failed save (disk full,
an I/O error, permissions) keeps the round open: each failure is an incident and an error line naming the fix,
the next try comes after 1, 2, 4 ... 30 s, and the recovery is logged.
"""

from __future__ import annotations

from collections.abc import Callable

from ..common.logs import Event
from ..common.status import IncidentKind
from .checkpoint import save_advice
from .incidents import Incidents
from .state import FederationState

MAX_RETRY_DELAY_S = 30.0


class Saver:
    def __init__(self, save: Callable[[FederationState], None], incidents: Incidents,
                 log: Callable[..., None]) -> None:
        self._save, self._incidents, self._log = save, incidents, log
        self.failures, self.retry_at = 0, 0.0

    def due(self, now: float) -> bool:
        return now >= self.retry_at

    def save(self, state: FederationState, round_: int, attempt: int, now: float) -> bool:
        """Save `state` (the closed round `round_`); False when it failed and must be tried again."""
        try:
            self._save(state)
        except Exception as exc:  # disk full, I/O error, permissions: never lose the round, never go silent
            self.failures += 1
            delay = min(2.0 ** (self.failures - 1), MAX_RETRY_DELAY_S)
            self.retry_at = now + delay
            error = f"{type(exc).__name__}: {exc}"
            self._incidents.record(now, round_, attempt, IncidentKind.CHECKPOINT_FAILED, error)
            self._log("error", Event.CHECKPOINT_FAILED, round=round_, error=error, attempt=self.failures,
                      retry_in_s=delay, advice=save_advice(exc))
            return False
        if self.failures:
            self._log("warning", Event.CHECKPOINT_RECOVERED, round=round_, attempts=self.failures + 1)
        self.failures = 0
        return True
