"""The operator's view: a `FederationStatus` built from the live federation, and its history file.

The same snapshot feeds `pfeddc-server status` (the Admin RPC, server/wire/admin.py: admin credential required
when auth is on), the status page and the Prometheus gauges (server/ops/web.py, server/ops/metrics.py), so they
always agree.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from pathlib import Path
from typing import Any

from ..round.federation import Federation
from .history import HistoryError, RoundsLog
from .status_doc import ClientState, ClientStatus, FederationStatus, Phase

MAX_ROUNDS_SERVED = 5000


class StatusSource:
    """Builds the status of one running federation on demand; `rounds` reads its history file."""

    def __init__(self, federation: Federation, federation_id: str, model: str, method: str, version: str,
                 rounds_path: Path) -> None:
        self.federation = federation
        self.federation_id = federation_id
        self.rounds = RoundsFile(rounds_path)
        self.model = model
        self.method = method
        self.version = version
        self._started = time.monotonic()

    def status(self) -> FederationStatus:
        view = self.federation.snapshot()
        config = self.federation.config
        window = config.heartbeat_window_s
        clients = []
        for record in sorted(view.clients, key=lambda r: r.client_id):
            seen = record.last_seen if math.isfinite(record.last_seen) else None
            if record.client_id in view.failed:
                state = ClientState.FAILED
            elif seen is None or seen > window:
                state = ClientState.OFFLINE
            elif record.client_id in view.received:
                state = ClientState.SUBMITTED
            elif record.client_id in view.sampled:
                state = ClientState.TRAINING
            else:
                state = ClientState.IDLE
            clients.append(ClientStatus(record.client_id, state, record.num_examples, record.rounds_participated,
                                        None if seen is None else round(seen, 3), record.last_round,
                                        record.last_metrics, view.failed.get(record.client_id, "")))
        phase = Phase.ABORTED if view.aborted else Phase.FINISHED if view.finished else \
            Phase.TRAINING if view.sampled else Phase.WAITING
        return FederationStatus(
            federation_id=self.federation_id, model=self.model, method=self.method, phase=phase,
            round=min(view.round, config.rounds), total_rounds=config.rounds, min_clients=config.min_clients,
            sampled=len(view.sampled), received=len(view.received), deadline_s=view.deadline_s,
            online_window_s=window, uptime_s=round(time.monotonic() - self._started, 3), version=self.version,
            clients=tuple(clients), attempt=view.attempt, max_retries=config.max_retries, incidents=view.incidents,
            aborted=view.aborted)


class RoundsFile:
    """rounds.jsonl (server/ops/history.py) read again only when it changed (size, mtime), last MAX rounds kept."""

    def __init__(self, path: Path) -> None:
        self.log = RoundsLog(path)
        self._key: tuple[int, int] | None = None
        self._rounds: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def read(self) -> list[dict[str, Any]]:
        with self._lock:
            try:
                st = self.log.path.stat()
            except FileNotFoundError:
                return []
            if (st.st_size, st.st_mtime_ns) != self._key:
                # on a damaged file keep serving the last good read; the coordinator reports the damage itself
                with contextlib.suppress(HistoryError):
                    self._rounds = self.log.read()[-MAX_ROUNDS_SERVED:]
                self._key = (st.st_size, st.st_mtime_ns)
            return self._rounds
