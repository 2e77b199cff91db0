"""What an operator sees of a running federation: the round, its deadline, and every client's state.

The coordinator builds a `FederationStatus` from its live state; the admin RPC carries it (common/wire.py
converts it), `pfeddc-server status` prints it as a table or JSON, and the status page reads it as JSON.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from .messages import Metrics


class Phase(StrEnum):
    WAITING = "waiting"  # fewer checked-in clients than --min-clients: no round open
    TRAINING = "training"  # a round is open: sampled clients train and submit
    FINISHED = "finished"  # the last round closed; the coordinator serves the final prompts


class ClientState(StrEnum):
    TRAINING = "training"  # sampled in the open round, no update yet
    SUBMITTED = "submitted"  # its update for the open round was accepted
    IDLE = "idle"  # online, not sampled in the open round
    OFFLINE = "offline"  # not heard from within the online window (or not since the coordinator started)


@dataclass(frozen=True)
class ClientStatus:
    client_id: str
    state: ClientState
    num_examples: int
    rounds_participated: int
    last_seen_s: float | None  # seconds since its last request; None: not since the coordinator started
    last_round: int = 0  # the last round whose update from it was accepted (0: none yet)
    last_metrics: Metrics | None = None  # what it reported with that update

    @property
    def online(self) -> bool:
        return self.state != ClientState.OFFLINE


@dataclass(frozen=True)
class FederationStatus:
    federation_id: str
    model: str
    method: str
    phase: Phase
    round: int  # the open (or next) round; total_rounds + 1 once finished
    total_rounds: int
    min_clients: int
    sampled: int
    received: int
    deadline_s: float | None  # seconds left in the open round; None when no round is open
    online_window_s: float  # a client not heard from for longer counts as offline
    uptime_s: float
    version: str
    clients: tuple[ClientStatus, ...] = field(default_factory=tuple)

    @property
    def rounds_completed(self) -> int:
        return min(self.round - 1, self.total_rounds)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON values (NaN metrics become null), for `status --json` and the status page."""
        out = asdict(self)
        out["rounds_completed"] = self.rounds_completed
        for client in out["clients"]:
            metrics = client["last_metrics"]
            if metrics is not None:
                client["last_metrics"] = {k: (v if math.isfinite(v) else None) for k, v in metrics.items()}
        return out


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    return f"{seconds / 60:.0f}m ago" if seconds < 7200 else f"{seconds / 3600:.1f}h ago"


def _pct(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{100 * value:.1f}%"


def render_table(status: FederationStatus) -> str:
    """The human view of `pfeddc-server status`: a header and one row per client."""
    deadline = "" if status.deadline_s is None else f", deadline in {status.deadline_s:.0f}s"
    if status.phase == Phase.FINISHED:
        progress = f"finished: {status.total_rounds} of {status.total_rounds} rounds"
    elif status.phase == Phase.WAITING:
        online = sum(c.online for c in status.clients)
        progress = f"round {status.round} of {status.total_rounds}: waiting for clients ({online} online, " \
                   f"{status.min_clients} needed)"
    else:
        progress = f"round {status.round} of {status.total_rounds}: {status.received} of {status.sampled} " \
                   f"updates received{deadline}"
    header = [f"federation {status.federation_id}  model {status.model}  method {status.method}  "
              f"pfeddc {status.version}  up {_ago(status.uptime_s).removesuffix(' ago')}", progress, ""]
    columns = ("CLIENT", "STATE", "LAST SEEN", "ROUNDS", "EXAMPLES", "LAST ROUND", "ACC BEFORE", "ACC AFTER",
               "LOSS")
    rows = [columns]
    for c in status.clients:
        m = c.last_metrics
        rows.append((c.client_id, str(c.state), _ago(c.last_seen_s), str(c.rounds_participated),
                     str(c.num_examples), str(c.last_round or "-"), _pct(m.accuracy_before if m else None),
                     _pct(m.accuracy_after if m else None),
                     f"{m.train_loss:.4f}" if m and math.isfinite(m.train_loss) else "-"))
    if len(rows) == 1:
        return "\n".join(header + ["no client has joined yet"])
    widths = [max(len(r[i]) for r in rows) for i in range(len(columns))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join(header + lines)
