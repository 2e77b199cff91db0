"""What an operator sees of a running federation: the round, its deadline, and every client's state.

The coordinator builds a `FederationStatus` from its live state; the admin RPC carries it (server/ops/admin_wire.py
converts it), `pfeddc-server status` prints it as a table (server/ops/status_table.py) or JSON, and the status page
reads it as JSON.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from ...common.metrics import Metrics
from ..round.incidents import Incident


class Phase(StrEnum):
    WAITING = "waiting"  # fewer checked-in clients than --min-clients: no round open
    TRAINING = "training"  # a round is open: sampled clients train and submit
    FINISHED = "finished"  # the last round closed; the coordinator serves the final prompts
    ABORTED = "aborted"  # a round failed more than --max-retries times: the coordinator stops (exit 4)


class ClientState(StrEnum):
    TRAINING = "training"  # sampled in the open round, no update yet
    SUBMITTED = "submitted"  # its update for the open round was accepted
    IDLE = "idle"  # online, not sampled in the open round
    OFFLINE = "offline"  # not heard from within the heartbeat window (or not since the coordinator started)
    FAILED = "failed"  # sampled in the open attempt, but it reported a failure (or was handed it too often)


@dataclass(frozen=True)
class ClientStatus:
    client_id: str
    state: ClientState
    num_examples: int
    rounds_participated: int
    last_seen_s: float | None  # seconds since its last request; None: not since the coordinator started
    last_round: int = 0  # the last round whose update from it was accepted (0: none yet)
    last_metrics: Metrics | None = None  # what it reported with that update
    failure: str = ""  # why it is FAILED in the open attempt

    @property
    def online(self) -> bool:
        return self.state != ClientState.OFFLINE


@dataclass(frozen=True)
class FederationStatus:
    federation_id: str
    model: str
    method: str
    phase: Phase
    round: int  # the open (or next) round; total_rounds once finished
    total_rounds: int
    min_clients: int
    sampled: int
    received: int
    deadline_s: float | None  # seconds left in the open round; None when no round is open
    online_window_s: float  # a client not heard from for longer counts as offline (--heartbeat-window)
    uptime_s: float
    version: str
    clients: tuple[ClientStatus, ...] = field(default_factory=tuple)
    attempt: int = 0  # of the open round: 0 the first, each retry adds one
    max_retries: int = 0
    incidents: tuple[Incident, ...] = field(default_factory=tuple)  # newest first
    aborted: str | None = None  # why the federation stopped (phase ABORTED)

    @property
    def rounds_completed(self) -> int:
        return self.total_rounds if self.phase == Phase.FINISHED else max(0, min(self.round - 1, self.total_rounds))

    def to_json(self) -> dict[str, Any]:
        """Plain JSON values (NaN metrics become null), for `status --json` and the status page."""
        out = asdict(self)
        out["rounds_completed"] = self.rounds_completed
        out["progress"] = progress_line(self)
        for client in out["clients"]:
            metrics = client["last_metrics"]
            if metrics is not None:
                client["last_metrics"] = {k: (v if math.isfinite(v) else None) for k, v in metrics.items()}
        return out


def progress_line(status: FederationStatus) -> str:
    """One line: where the federation is (the same words as the status page's)."""
    deadline = "" if status.deadline_s is None else f", deadline in {status.deadline_s:.0f}s"
    round_ = f"round {status.round} of {status.total_rounds}"
    if status.phase == Phase.ABORTED:
        return f"{round_} (aborted): {status.aborted}"
    if status.attempt:
        round_ += f", attempt {status.attempt + 1} of {status.max_retries + 1} (retrying)"
    if status.phase == Phase.FINISHED:
        return f"{status.total_rounds} of {status.total_rounds} rounds (finished)"
    if status.phase == Phase.WAITING:
        online = sum(c.online for c in status.clients)
        return f"{round_}: waiting for clients ({online} online, {status.min_clients} needed)"
    failed = sum(c.state == ClientState.FAILED for c in status.clients)
    return f"{round_}: {status.received} of {status.sampled} updates received" + \
        (f", {failed} failed" if failed else "") + deadline
