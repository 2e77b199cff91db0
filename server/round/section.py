"""The federation's critical section: one lock, with log lines and change notices deferred past it.

Rendering a log line (structlog, JSON) costs more than most transitions it reports, and waking held calls
under the lock would make them queue on it at once: both happen after the lock is released, in order.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ...common.logs import Event
from .longpoll import ChangeFeed


class Section:
    def __init__(self, changes: ChangeFeed, logger: Any) -> None:
        self.lock = threading.RLock()
        self.changes = changes
        self._logger = logger
        self._depth = 0
        self._logs: list[tuple[str, Event, dict[str, Any]]] = []
        self._changed = False

    def log(self, level: str, event: Event, **fields: Any) -> None:
        """Queue a log line; it is rendered when the outermost holder releases the lock."""
        self._logs.append((level, event, fields))

    def changed(self) -> None:
        """What a waiting client would be told has changed: wake the held calls after the lock."""
        self._changed = True

    @contextmanager
    def hold(self) -> Iterator[None]:
        self.lock.acquire()
        self._depth += 1
        try:
            yield
        finally:  # also when the call is refused: what happened before the refusal is still reported
            self.leave()

    def try_enter(self) -> bool:
        """Enter without waiting (the servicer's event loop, which must never wait on another thread): True when
        entered; `leave` then releases it, as `hold` does."""
        if not self.lock.acquire(blocking=False):
            return False
        self._depth += 1
        return True

    def leave(self) -> None:
        """Leave the section; the outermost holder then renders the queued log lines and wakes the held calls,
        after the lock is released."""
        logs: list[tuple[str, Event, dict[str, Any]]] = []
        changed = False
        try:
            self._depth -= 1
            if self._depth == 0:
                logs, self._logs = self._logs, []
                changed, self._changed = self._changed, False
        finally:
            self.lock.release()
        for level, event, fields in logs:
            getattr(self._logger, level)(event, **fields)
        if changed:
            self.changes.notify()
