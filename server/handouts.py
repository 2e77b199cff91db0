"""Who was handed the open round, how often, and when each may be handed it again.

A client that asks for the round it was already handed (it crashed, diverged without saying so, or is
looping on a poisoned global) gets it again only after an exponential backoff, and after
`MAX_HANDOUTS` hand-outs without an update it counts as failed for the round. Pure bookkeeping on an
injected clock; the federation resets it when a round commits.
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


class Handouts:
    def __init__(self) -> None:
        self._by_client: dict[str, _Handout] = {}

    def reset(self) -> None:
        self._by_client.clear()

    def count(self, client_id: str) -> int:
        h = self._by_client.get(client_id)
        return h.count if h else 0

    def wait_left(self, client_id: str, now: float) -> float:
        """Seconds before `client_id` may be handed the round again (0: now)."""
        h = self._by_client.get(client_id)
        if h is None:
            return 0.0
        backoff = min(BACKOFF_BASE_S * 2 ** (h.count - 1), BACKOFF_MAX_S)
        return max(0.0, h.at + backoff - now)

    def exhausted(self, client_id: str) -> bool:
        return self.count(client_id) >= MAX_HANDOUTS

    def record(self, client_id: str, now: float) -> None:
        h = self._by_client.get(client_id)
        self._by_client[client_id] = _Handout((h.count if h else 0) + 1, now)
