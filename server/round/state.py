"""The federation's state as values: the client registry, what a checkpoint holds, and the status view."""

from __future__ import annotations

import hmac
import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ...common import serde
from ...common.messages import Code, Metrics, Refused
from ..pipeline.privacy import PrivacyLedger
from .attempt import Attempt
from .incidents import Incident
from .summary import RoundSummary


@dataclass
class ClientRecord:
    client_id: str
    num_examples: int
    rounds_participated: int = 0
    last_seen: float = -math.inf  # clock time; not persisted: a restarted coordinator waits for check-ins
    last_round: int = 0  # the last round whose update from it was accepted (status view; not persisted)
    last_metrics: Metrics | None = None  # ... and the metrics it reported with it
    secret_sha256: str | None = None  # open mode: digest of the join secret bound at its first join
    signing_key: bytes = b""  # its secure-aggregation signing key, bound at the first Join that sent one
    class_names: tuple[str, ...] = ()  # its data's classes, as it named them at Join (not persisted)
    trial_rounds: int = 0  # attempts it stayed silent in before it ever delivered (server/round/sampling.py)
    trial_failed_at: float = -math.inf  # clock time its trial ran out without a delivery (not persisted)

    def on_trial(self) -> bool:
        """Never delivered an update: sampled on trial (sampling.TRIAL_ROUNDS), evictable once it fails."""
        return self.rounds_participated == 0

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"num_examples": self.num_examples, "rounds_participated": self.rounds_participated}
        if self.secret_sha256:
            out["secret_sha256"] = self.secret_sha256
        if self.signing_key:
            out["signing_key"] = self.signing_key.hex()
        return out

    def bind_signing_key(self, key: bytes) -> None:
        """Bind `key` (none yet bound), or refuse a Join that presents another: a caller with this client's
        token or secret still cannot swap the key its peers pinned."""
        refuse_another_key(self.client_id, self.signing_key, key)
        if key:
            self.signing_key = key

    def check_secret(self, secret: str | None) -> None:
        """Refuse a caller without the join secret bound to this client (nothing bound: anyone may)."""
        if self.secret_sha256 is None:
            return
        if secret is None or not hmac.compare_digest(self.secret_sha256, serde.sha256(secret.encode())):
            raise Refused(Code.PERMISSION_DENIED, f"client_id {self.client_id!r} is bound to another join secret: "
                                                  "only the client that first joined under it may use it (a client "
                                                  "that lost its state dir must join under a new --client-id)")


def refuse_another_key(client_id: str, bound: bytes, key: bytes) -> None:
    """PERMISSION_DENIED when `client_id` bound a signing key and `key` is another (none presented: no change)."""
    if bound and key and key != bound:
        raise Refused(Code.PERMISSION_DENIED, f"client_id {client_id!r} is bound to another signing key: only the "
                                              "client that first joined with it may join under this id (a client "
                                              "that lost its state dir must join under a new --client-id)")


@dataclass(frozen=True)
class RoundView:
    """`Federation.snapshot()`: the open round and the clients, `last_seen` as seconds ago."""

    round: int
    finished: bool
    sampled: frozenset[str]
    received: frozenset[str]
    deadline_s: float | None  # seconds left; None when no round is open
    clients: tuple[ClientRecord, ...]
    attempt: int = 0  # of the open round (0: the first)
    failed: dict[str, str] = field(default_factory=dict)  # sampled clients out of this attempt -> why
    incidents: tuple[Incident, ...] = ()  # newest first
    aborted: str | None = None


MAX_RETIRED_KEYS = 16_384  # about 3 MB of checkpoint; each entry costs a churner one failed trial in a full registry


@dataclass
class FederationState:
    """What a checkpoint holds: enough to resume after a crash at the start of the unfinished round.

    Current state only, so a round costs the same at round 5,000 as at round 5: the history is appended to
    rounds.jsonl (`last_round` is the line the next save appends).
    """

    round: int
    global_tensors: dict[str, np.ndarray]
    clients: dict[str, ClientRecord]
    privacy: PrivacyLedger = field(default_factory=PrivacyLedger)
    last_round: RoundSummary | None = None
    # tensor -> the last committed round's robust scale of its changes (server/pipeline/clipping.py's history term)
    change_scale: dict[str, float] = field(default_factory=dict)
    # the global's safetensors bytes and digest, made once per commit (the commit stage or a checkpoint read)
    encoded: serde.Encoded | None = field(default=None, repr=False, compare=False)
    classes: tuple[str, ...] = ()  # the federation's class list (--classes, or gathered from the Joins)
    convicted: dict[str, float] = field(default_factory=dict)  # site a secure run convicted -> seconds it sits out
    # evicted id -> the signing key it had bound (oldest first, at most MAX_RETIRED_KEYS): its peers may have pinned
    # it, so the id comes back only with that key (a new key would make every peer refuse the round)
    retired_keys: dict[str, bytes] = field(default_factory=dict)

    def retire(self, record: ClientRecord) -> None:
        """`record` leaves the registry: keep its signing key for the id's return."""
        if record.signing_key:
            self.retired_keys.pop(record.client_id, None)
            self.retired_keys[record.client_id] = record.signing_key
            while len(self.retired_keys) > MAX_RETIRED_KEYS:
                del self.retired_keys[next(iter(self.retired_keys))]

    def returning_key(self, client_id: str) -> bytes:
        """The key `client_id` had bound when it was evicted (none: b""), taken back as it rejoins."""
        return self.retired_keys.pop(client_id, b"")

    def global_encoded(self) -> serde.Encoded:
        """The global as the checkpoint and every task carry it: encoded only if `global_tensors` changed."""
        if self.encoded is None or self.encoded.tensors is not self.global_tensors:
            self.encoded = serde.Encoded.of(self.global_tensors)
        return self.encoded


def round_view(state: FederationState, attempt: Attempt, finished: bool, incidents: tuple[Incident, ...],
               aborted: str | None, now: float) -> RoundView:
    """A copy of the open round and the registry (`last_seen` as seconds ago); a secure attempt counts the
    masked inputs received."""
    clients = tuple(replace(r, last_seen=now - r.last_seen) for r in state.clients.values())
    masked = attempt.secure.contributions if attempt.secure else {}
    deadline = None if not attempt.sampled else max(0.0, attempt.deadline - now)
    return RoundView(state.round, finished, frozenset(attempt.sampled), frozenset(attempt.received or masked),
                     deadline, clients, attempt.number, dict(attempt.failed), incidents, aborted)
