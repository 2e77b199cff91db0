"""Push instead of poll: a waiting client's call is held open until what it would be told may have changed.

The federation moves `ChangeFeed.version` whenever a round opens, closes, is retried, or the federation
finishes or stops; a held GetTask (or a SubmitUpdate that asked for its next task) re-asks the federation
then. Held calls wait on the gRPC server's event loop (`wait_async`, after `attach`). At most `max_waiters`
calls are held at once; beyond that a caller gets the plain answer at once and polls, as clients without
long-poll always do; and at most `max_per_key` by one client id (a GetTask and a SubmitUpdate asking for its
next task), so one id cannot take every slot from the others. The longest hold is common/messages.py's
MAX_HOLD_S, which the client asks for.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time

# Held calls one client id may have at once: its GetTask, and a SubmitUpdate that asks for its next task.
MAX_HELD_PER_CLIENT = 2


class ChangeFeed:
    def __init__(self, max_waiters: int = 4096, max_per_key: int = MAX_HELD_PER_CLIENT) -> None:
        self.max_waiters = max_waiters
        self.max_per_key = max_per_key
        self._by_key: dict[str, int] = {}
        self._lock = threading.Lock()  # notify and close come from any thread
        self._version = 0
        self._waiters = 0
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None

    @property
    def version(self) -> int:
        return self._version

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Serve `wait_async` on this event loop (the gRPC server's)."""
        self._loop = loop

    def notify(self) -> None:
        """Something a waiting client would be told may have changed: wake every waiter (from any thread)."""
        with self._lock:
            self._version += 1
        self._fire()

    def close(self) -> None:
        """The server is stopping: release every held call and hold no more."""
        with self._lock:
            self._closed = True
        self._fire()

    def _fire(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody is waiting on it
                loop.call_soon_threadsafe(self._set_event)

    def _set_event(self) -> None:
        event, self._event = self._event, None
        if event is not None:
            event.set()

    def held_by(self, key: str) -> int:
        return self._by_key.get(key, 0)

    async def wait_async(self, since: int, timeout: float, key: str | None = None) -> bool:
        """Hold a coroutine on the attached loop until the version moves past `since`, `timeout` passes or the
        feed closes (a cancelled call is cancelled by gRPC itself). Returns False without waiting when
        `max_waiters` calls are already held, or `key` (the caller's client id) holds `max_per_key`."""
        if self._closed or self._waiters >= self.max_waiters:
            return False
        if key is not None:
            if self._by_key.get(key, 0) >= self.max_per_key:
                return False
            self._by_key[key] = self._by_key.get(key, 0) + 1
        self._waiters += 1
        deadline = time.monotonic() + timeout
        try:
            while self._version == since and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                if self._event is None:
                    self._event = asyncio.Event()
                event = self._event
                try:
                    async with asyncio.timeout(left):
                        await event.wait()
                except TimeoutError:
                    break
        finally:
            self._waiters -= 1
            if key is not None:
                held = self._by_key.pop(key) - 1
                if held:
                    self._by_key[key] = held
        return True
