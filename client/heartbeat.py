"""A running client's heartbeat: one small call every HEARTBEAT_INTERVAL_S, training or waiting.

The coordinator shows a client offline once it has heard nothing from it for its --heartbeat-window, so a
stopped client shows offline within seconds whatever the round timeout (an hour on hospital GPUs). The
calls share the daemon's channel; they are never retried (the next one comes soon) and stop for good
against a coordinator that predates them (UNIMPLEMENTED).
"""

from __future__ import annotations

import threading
from types import TracebackType
from typing import Protocol

from ..common.logs import Event, get_logger
from ..common.messages import HEARTBEAT_INTERVAL_S, Code, Refused

log = get_logger("client")


class Beating(Protocol):
    client_id: str

    def heartbeat(self, round_: int = 0, timeout_s: float = 5.0) -> int: ...


class Heartbeat:
    def __init__(self, conn: Beating, stop: threading.Event, interval_s: float = HEARTBEAT_INTERVAL_S) -> None:
        self.conn = conn
        self.interval_s = interval_s
        self.round = 0  # the round the client is training (0: none); the daemon sets it
        self.sent = 0
        self._stop = stop
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="heartbeat")

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._done.set()
        self._thread.join(timeout=1.0)

    def _run(self) -> None:
        while not self._done.wait(self.interval_s) and not self._stop.is_set():
            try:
                self.conn.heartbeat(self.round, timeout_s=min(5.0, self.interval_s))
                self.sent += 1
            except Refused as exc:
                if exc.code == Code.UNIMPLEMENTED:
                    log.info(Event.HEARTBEAT_UNSUPPORTED, client_id=self.conn.client_id,
                             advice="this coordinator predates heartbeats: its status shows this client by its "
                                    "other calls only")
                    return
                log.debug(Event.HEARTBEAT_FAILED, client_id=self.conn.client_id, code=str(exc.code),
                          reason=exc.message)
