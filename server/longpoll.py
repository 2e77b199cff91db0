"""Push instead of poll: a waiting client's call is held open until what it would be told may have changed.

The federation moves `ChangeFeed.version` whenever a round opens, closes, is retried, or the federation
finishes or stops; a held GetTask (or a SubmitUpdate that asked for its next task) re-asks the federation
then. Each held call occupies a worker thread of the gRPC server, so at most `max_waiters` are held; beyond
that a caller gets the plain answer at once and polls, as clients without long-poll always do.
"""

from __future__ import annotations

import threading
from typing import Protocol

# Longest a call is held, whatever the client asks: a bounded wait keeps dead peers from pinning threads.
MAX_HOLD_S = 30.0


class Cancellable(Protocol):
    @property
    def ended(self) -> bool: ...


class ChangeFeed:
    def __init__(self, max_waiters: int = 1024) -> None:
        self.max_waiters = max_waiters
        self._cond = threading.Condition()
        self._version = 0
        self._waiters = 0
        self._closed = False

    @property
    def version(self) -> int:
        return self._version

    @property
    def waiters(self) -> int:
        return self._waiters

    def notify(self) -> None:
        """Something a waiting client would be told may have changed: wake every waiter."""
        with self._cond:
            self._version += 1
            self._cond.notify_all()

    def wake(self) -> None:
        """Wake every waiter to re-check its own condition (a cancelled call), without a change."""
        with self._cond:
            self._cond.notify_all()

    def close(self) -> None:
        """The server is stopping: release every held call and hold no more."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def wait(self, since: int, timeout: float, cancelled: Cancellable | None = None) -> bool:
        """Hold until the version moves past `since`, `timeout` passes, the call is cancelled or the feed closes.

        Returns False without waiting when `max_waiters` calls are already held (or the feed is closed).
        """
        with self._cond:
            if self._closed or self._waiters >= self.max_waiters:
                return False
            self._waiters += 1
            try:
                self._cond.wait_for(lambda: self._version != since or self._closed
                                    or (cancelled is not None and cancelled.ended), timeout)
            finally:
                self._waiters -= 1
        return True
