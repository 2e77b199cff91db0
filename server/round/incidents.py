"""The federation's recent incidents (retries, client failures, unsaved rounds, the stop), for the status view.

Kept in memory, bounded: rounds.jsonl and the log lines are the durable record; this is what an operator
should see at a glance on the status page and in `pfeddc-server status` without reading either.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import StrEnum


class IncidentKind(StrEnum):
    CLIENT_FAILED = "client_failed"  # a sampled client could not deliver its update
    ROUND_RETRIED = "round_retried"  # an attempt of a round ended without a committable aggregate
    CHECKPOINT_FAILED = "checkpoint_failed"  # a closed round could not be saved yet (it is retried)
    FEDERATION_ABORTED = "federation_aborted"  # the last retry failed too: the coordinator stops


@dataclass(frozen=True)
class Incident:
    """Something that went wrong, for the operator: the status view lists the most recent ones."""

    ago_s: float
    round: int
    attempt: int  # the attempt of the round it happened in (0: the first)
    kind: IncidentKind
    reason: str
    client_id: str = ""  # client_failed only


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
