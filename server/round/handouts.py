"""Who was handed the open round, how often, and when each may be handed it again.

A client that asks for the round it was already handed (it crashed, diverged without saying so, or is
looping on a poisoned global) gets it again only after an exponential backoff, and after
`MAX_HANDOUTS` hand-outs without an update it counts as failed for the attempt. Pure bookkeeping on an
injected clock; the federation resets it when a round commits, and restarts the counts when an attempt is
retried (`new_attempt`: a count carried over would fail every client at the first attempt it reached
MAX_HANDOUTS, including clients that delivered every time).
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_HANDOUTS = 3
BACKOFF_BASE_S = 1.0
BACKOFF_MAX_S = 60.0


@dataclass
class _Handout:
    count: int
    at: float
    not_before: float = 0.0  # a backoff carried over from an earlier attempt


def _backoff_s(count: int) -> float:
    return min(BACKOFF_BASE_S * 2 ** (count - 1), BACKOFF_MAX_S) if count > 0 else 0.0


class Handouts:
    def __init__(self) -> None:
        self._by_client: dict[str, _Handout] = {}

    def reset(self) -> None:
        self._by_client.clear()

    def new_attempt(self, delivered: set[str]) -> None:
        """Counts restart at zero; a client that did not deliver still waits out the backoff it was in (a
        client failing at once must not spin the attempts), one that delivered may be handed the round now."""
        for client_id, h in list(self._by_client.items()):
            if client_id in delivered:
                del self._by_client[client_id]
            else:
                self._by_client[client_id] = _Handout(0, h.at, max(h.not_before, h.at + _backoff_s(h.count)))

    def count(self, client_id: str) -> int:
        h = self._by_client.get(client_id)
        return h.count if h else 0

    def wait_left(self, client_id: str, now: float) -> float:
        """Seconds before `client_id` may be handed the round again (0: now)."""
        h = self._by_client.get(client_id)
        if h is None:
            return 0.0
        return max(0.0, h.at + _backoff_s(h.count) - now, h.not_before - now)

    def exhausted(self, client_id: str) -> bool:
        return self.count(client_id) >= MAX_HANDOUTS

    def record(self, client_id: str, now: float) -> None:
        h = self._by_client.get(client_id)
        self._by_client[client_id] = _Handout((h.count if h else 0) + 1, now)
