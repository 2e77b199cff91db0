"""The federation's recent incidents (retries, client failures, unsaved rounds, the stop), for the status view.

Kept in memory, bounded: rounds.jsonl and the log lines are the durable record; this is what an operator
should see at a glance on the status page and in `pfeddc-server status` without reading either.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from ..common.status import Incident, IncidentKind

MAX_INCIDENTS = 50


@dataclass(frozen=True)
class _Entry:
    at: float  # the federation's clock
    round: int
    attempt: int
    kind: IncidentKind
    reason: str
    client_id: str


class Incidents:
    def __init__(self, limit: int = MAX_INCIDENTS) -> None:
        self._entries: deque[_Entry] = deque(maxlen=limit)

    def record(self, at: float, round_: int, attempt: int, kind: IncidentKind, reason: str,
               client_id: str = "") -> None:
        self._entries.append(_Entry(at, round_, attempt, kind, reason, client_id))

    def view(self, now: float) -> tuple[Incident, ...]:
        """Newest first, with their age in seconds."""
        return tuple(Incident(round(max(0.0, now - e.at), 3), e.round, e.attempt, e.kind, e.reason, e.client_id)
                     for e in reversed(self._entries))
