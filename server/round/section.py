"""The federation's critical section: one lock, with log lines and change notices deferred past it.

Rendering a log line (structlog, JSON) costs more than most transitions it reports, and waking held calls
under the lock would make them queue on it at once: both happen after the lock is released, in order. A caller
that must not wait on the lock (the servicer's event loop) asks `try_enter` and, when another thread holds it,
leaves a callback with `when_free`, which the outermost holder calls once it has released the lock.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from ...common.logs import Event
from .longpoll import ChangeFeed


class Section:
    """The federation's one lock: every holder enters through `hold` or `try_enter` and leaves through `leave`, so
    the queued log lines, the held calls and the `when_free` callbacks are never skipped."""

    def __init__(self, changes: ChangeFeed, logger: Any) -> None:
        self.lock = threading.RLock()
        self.changes = changes
        self._logger = logger
        self._depth = 0
        self._logs: list[tuple[str, Event, dict[str, Any]]] = []
        self._changed = False
        self._waiting: list[Callable[[], None]] = []  # when_free callbacks, called once the lock is released
        self._waiting_lock = threading.Lock()

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

    def when_free(self, callback: Callable[[], None]) -> None:
        """Call `callback` (from whichever thread) once the next outermost holder has released the lock. A caller
        that registers it after a failed `try_enter` must ask `try_enter` once more: the holder may have left in
        between. It must be quick and must not raise (it runs in the holder's thread)."""
        with self._waiting_lock:
            self._waiting.append(callback)

    def leave(self) -> None:
        """Leave the section; the outermost holder then renders the queued log lines, wakes the held calls and
        calls the `when_free` callbacks, after the lock is released."""
        logs: list[tuple[str, Event, dict[str, Any]]] = []
        changed = outermost = False
        try:
            self._depth -= 1
            if self._depth == 0:
                outermost = True
                logs, self._logs = self._logs, []
                changed, self._changed = self._changed, False
        finally:
            self.lock.release()
        if outermost and self._waiting:  # read after the release: a later callback finds the lock free itself
            with self._waiting_lock:
                waiting, self._waiting = self._waiting, []
            for callback in waiting:
                callback()
        for level, event, fields in logs:
            getattr(self._logger, level)(event, **fields)
        if changed:
            self.changes.notify()
