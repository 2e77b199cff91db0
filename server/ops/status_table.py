"""The table `pfeddc-server status` prints: a header, one row per client, the recent incidents."""

from __future__ import annotations

import math

from .status_doc import FederationStatus, progress_line


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    return f"{seconds / 60:.0f}m ago" if seconds < 7200 else f"{seconds / 3600:.1f}h ago"


def _pct(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{100 * value:.1f}%"


def incident_lines(status: FederationStatus, limit: int = 10) -> list[str]:
    lines = []
    for i in status.incidents[:limit]:
        who = f"{i.client_id}: " if i.client_id else ""
        lines.append(f"  {_ago(i.ago_s)}  round {i.round} attempt {i.attempt + 1}  {i.kind}  {who}{i.reason}")
    if not lines:
        return []
    more = len(status.incidents) - limit
    return ["", "recent incidents (newest first):", *lines] + ([f"  ... {more} earlier"] if more > 0 else [])


def render_table(status: FederationStatus) -> str:
    """The human view of `pfeddc-server status`: a header, one row per client, the recent incidents."""
    progress = progress_line(status)
    header = [f"federation {status.federation_id}  model {status.model}  method {status.method}  "
              f"pfeddc {status.version}  up {_ago(status.uptime_s).removesuffix(' ago')}", progress, ""]
    # ACC GLOBAL: the round's global prompts alone, before local training; ACC AFTER: personalized, after it
    columns = ("CLIENT", "STATE", "LAST SEEN", "ROUNDS", "EXAMPLES", "LAST ROUND", "ACC GLOBAL", "ACC AFTER",
               "LOSS")
    rows = [columns]
    for c in status.clients:
        m = c.last_metrics
        rows.append((c.client_id, str(c.state), _ago(c.last_seen_s), str(c.rounds_participated),
                     str(c.num_examples), str(c.last_round or "-"), _pct(m.accuracy_global if m else None),
                     _pct(m.accuracy_after if m else None),
                     f"{m.train_loss:.4f}" if m and math.isfinite(m.train_loss) else "-"))
    if len(rows) == 1:
        return "\n".join(header + ["no client has joined yet"] + incident_lines(status))
    widths = [max(len(r[i]) for r in rows) for i in range(len(columns))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join(header + lines + incident_lines(status))
