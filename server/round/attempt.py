"""One attempt of the open round: who is sampled, who delivered, who cannot, and until when."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..pipeline.updates import CheckedUpdate
from .secure import SecureRun


@dataclass
class Attempt:
    """One attempt of the open round: who is sampled, who delivered, who cannot, and until when."""

    number: int = 0  # 0: the round's first attempt
    sampled: set[str] = field(default_factory=set)
    received: dict[str, CheckedUpdate] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)  # sampled clients that cannot deliver -> why
    deadline: float = math.inf
    opened_at: float = 0.0
    secure: SecureRun | None = None  # a secure federation's protocol run for this attempt

    def outstanding(self) -> set[str]:
        return self.sampled - self.received.keys() - self.failed.keys()

    def expected(self) -> int:
        return len(self.sampled) - len(self.failed)

    def awaits(self, client_id: str) -> bool:
        return client_id in self.sampled and client_id not in self.received and client_id not in self.failed

    def closes_with(self, client_id: str) -> bool:
        """Whether a message from `client_id` now would close this attempt (its update the last one awaited) or,
        in a secure attempt, its open stage: the close's work (FedAvg and the checkpoint, or the protocol's)."""
        if self.secure is not None:
            return self.secure.closes_with(client_id, set(self.failed))
        return self.awaits(client_id) and len(self.received) + len(self.failed) + 1 == len(self.sampled)
