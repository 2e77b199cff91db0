"""The federation's recent incidents (retries, client failures, unsaved rounds, the stop), for the status view.

Kept in memory, bounded: rounds.jsonl and the log lines are the durable record; this is what an operator
should see at a glance on the status page and in `pfeddc-server status` without reading either.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from ...common.logs import Event


class IncidentKind(StrEnum):
    CLIENT_FAILED = "client_failed"  # a sampled client could not deliver its update
    ROUND_RETRIED = "round_retried"  # an attempt of a round ended without a committable aggregate
    CHECKPOINT_FAILED = "checkpoint_failed"  # a closed round could not be saved yet (it is retried)
    FEDERATION_ABORTED = "federation_aborted"  # the last retry failed too: the coordinator stops
    STAGE_STALLED = "stage_stalled"  # a secure stage waits on sites long after the others answered
    AGGREGATE_BOUNDED = "aggregate_bounded"  # a secure sum beyond what its survivors could send: scaled down to it


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


# Every incident is also a log line: its event, level, and the field its reason goes in.
_LOGGED = {IncidentKind.CLIENT_FAILED: (Event.CLIENT_FAILED_ROUND, "warning", "reason"),
           IncidentKind.ROUND_RETRIED: (Event.ROUND_RETRIED, "warning", "reason"),
           IncidentKind.CHECKPOINT_FAILED: (Event.CHECKPOINT_FAILED, "error", "error"),
           IncidentKind.FEDERATION_ABORTED: (Event.FEDERATION_ABORTED, "error", "reason"),
           IncidentKind.STAGE_STALLED: (Event.SECAGG_STAGE_STALLED, "warning", "reason"),
           IncidentKind.AGGREGATE_BOUNDED: (Event.SECAGG_AGGREGATE_BOUNDED, "warning", "reason")}


class Incidents:
    def __init__(self, log: Callable[..., None] = lambda *_a, **_k: None, limit: int = MAX_INCIDENTS) -> None:
        """`log(level, event, **fields)`: where each incident's log line goes."""
        self._entries: deque[_Entry] = deque(maxlen=limit)
        self._log = log

    def record(self, at: float, round_: int, in_attempt: int, kind: IncidentKind, reason: str, client_id: str = "",
               **fields: Any) -> None:
        """Keep it for the status view (`in_attempt`: the attempt it happened in) and log it (`fields`: the log
        line's own, besides the round, the client and the reason)."""
        self._entries.append(_Entry(at, round_, in_attempt, kind, reason, client_id))
        event, level, key = _LOGGED[kind]
        who = {"client_id": client_id} if client_id else {}
        self._log(level, event, **who, round=round_, **{key: reason}, **fields)

    def view(self, now: float) -> tuple[Incident, ...]:
        """Newest first, with their age in seconds."""
        return tuple(Incident(round(max(0.0, now - e.at), 3), e.round, e.attempt, e.kind, e.reason, e.client_id)
                     for e in reversed(self._entries))
