"""The contract of one secure-aggregation round: its settings, stages, messages and errors, transport-free.

Stages (Bonawitz et al. 2017, with every site sharing with every other; SecAgg+ would share with a neighbourhood):
  1. ADVERTISE      each sampled site sends two fresh public keys; the coordinator announces those it received (U1).
  2. SHARE_KEYS     each site Shamir-shares its self-mask seed b_u and its mask private key among U1 and sends one
                    AES-GCM bundle per recipient through the coordinator, with a digest of each share inside it.
  3. MASKED_INPUT   the coordinator delivers the bundles of the sites that shared (U2); each site checks its
                    bundles (complaining about a sender whose bundle fails) and sends its masked, quantised vector.
  4. UNMASK         the coordinator names the survivors (U3: sent an input, no complaint against them) and the dropped
                    (U2 - U3); each survivor reveals its shares of b_u for u in U3 and of the mask key of each dropped
                    site. From t of each, the coordinator removes all masks and decodes the sum: nothing else.
A site reveals, for any other site, shares of b_u or of its mask key, never both; t > |sampled| / 2 means no two
groups of t holders can be told different stories about who dropped out.
Every message is a plain frozen dataclass (bytes, str, numpy arrays), so a wire layer only serialises them.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from .field import FieldParams
from .keys import RoundId
from .shamir import Share


class Stage(StrEnum):
    ADVERTISE = "advertise"
    SHARE_KEYS = "share_keys"
    MASKED_INPUT = "masked_input"
    UNMASK = "unmask"
    DONE = "done"


class SecAggError(Exception):
    """The round cannot go on as asked."""


class ProtocolError(SecAggError):
    """A message out of order or malformed; `site_id` names its sender when one is to blame."""

    def __init__(self, message: str, site_id: str | None = None) -> None:
        super().__init__(message)
        self.site_id = site_id


class TooFewSitesError(SecAggError):
    """Fewer than the threshold remain: the round must be restarted (fresh keys) or abandoned."""

    def __init__(self, stage: Stage, have: int, threshold: int) -> None:
        super().__init__(f"secure aggregation needs at least {threshold} sites at stage {stage}, only {have} remain; "
                         "refusing to unmask")
        self.stage = stage
        self.have = have
        self.threshold = threshold


class InconsistentSiteError(SecAggError):
    """A site's shares do not reconstruct what it committed to: restart the round without it."""

    def __init__(self, site_id: str, detail: str) -> None:
        super().__init__(f"site {site_id!r} dealt inconsistent shares: {detail}")
        self.site_id = site_id


@dataclass(frozen=True)
class RoundConfig:
    """What the coordinator announces before stage 1; both sides validate every message against it."""

    rid: RoundId
    sampled: tuple[str, ...]
    threshold: int
    length: int  # elements in each site's vector
    field: FieldParams = FieldParams()

    def __post_init__(self) -> None:
        n = len(self.sampled)
        if len(set(self.sampled)) != n or n < 3:
            raise ValueError(f"secure aggregation needs at least 3 distinct sampled sites, got {list(self.sampled)}")
        if not n // 2 < self.threshold <= n:
            raise ValueError(f"threshold must be in ({n / 2:g}, {n}] for {n} sampled sites (more than half, so the "
                             f"coordinator cannot tell two groups different drop-outs), got {self.threshold}")
        if n > self.field.max_sites:
            raise ValueError(f"{n} sampled sites exceed the field's max_sites {self.field.max_sites}: sums could wrap")
        if self.length < 1:
            raise ValueError(f"vector length must be >= 1, got {self.length}")


class ShareKind(StrEnum):
    SELF_SEED = "self_seed"
    MASK_KEY = "mask_key"


@dataclass(frozen=True)
class PublicKeys:
    mask: bytes
    enc: bytes


@dataclass(frozen=True)
class AdvertiseKeys:
    site_id: str
    keys: PublicKeys


@dataclass(frozen=True)
class KeysAnnounced:
    rid: RoundId
    keys: dict[str, PublicKeys]  # U1


@dataclass(frozen=True)
class SealedBundle:
    """One dealer's two shares for one holder, encrypted; the digests travel in the clear for later checks."""

    sender: str
    recipient: str
    ciphertext: bytes
    digests: dict[ShareKind, bytes]


@dataclass(frozen=True)
class ShareKeys:
    site_id: str
    bundles: tuple[SealedBundle, ...]


@dataclass(frozen=True)
class SharesDelivered:
    recipient: str
    senders: tuple[str, ...]  # U2
    bundles: tuple[SealedBundle, ...]


@dataclass(frozen=True)
class Complaint:
    accused: str
    reason: str


@dataclass(frozen=True)
class MaskedInput:
    site_id: str
    masked: np.ndarray  # uint64 in [0, M); field.to_bytes for the wire
    complaints: tuple[Complaint, ...] = ()


@dataclass(frozen=True)
class UnmaskRequest:
    survivors: tuple[str, ...]  # U3
    dropped: tuple[str, ...]  # U2 - U3


@dataclass(frozen=True)
class RevealedShare:
    dealer: str
    kind: ShareKind
    share: Share


@dataclass(frozen=True)
class UnmaskResponse:
    site_id: str
    shares: tuple[RevealedShare, ...]


@dataclass(frozen=True)
class AggregateResult:
    total: np.ndarray  # float64: the decoded sum of the survivors' (weighted, clipped) vectors
    survivors: tuple[str, ...]
    dropped: tuple[str, ...]
    excluded: dict[str, str]  # site -> why it was named (bad bundle, lying share); also in survivors or dropped
    error_bound: float  # per coordinate, from quantisation (field.sum_error_bound)


def encode_share(s: Share) -> bytes:
    return struct.pack(">IHB", s.x, s.length, len(s.ys)) + s.commitment + b"".join(y.to_bytes(16, "big") for y in s.ys)


def decode_share(data: bytes) -> tuple[Share, bytes]:
    """A share and the bytes after it; ValueError if `data` does not start with one."""
    if len(data) < 7:
        raise ValueError("truncated share")
    x, length, k = struct.unpack(">IHB", data[:7])
    end = 7 + 32 + 16 * k
    if len(data) < end:
        raise ValueError("truncated share")
    ys = tuple(int.from_bytes(data[39 + 16 * i:55 + 16 * i], "big") for i in range(k))
    return Share(x, ys, length, data[7:39]), data[end:]


def share_digest(rid: RoundId, kind: ShareKind, dealer: str, holder: str, share: Share) -> bytes:
    """What the dealer commits to in the clear: a holder who later reveals another share is caught."""
    h = hashlib.sha256(b"pfeddc-secagg/v1/share-digest" + rid.encoded)
    for part in (kind.value, dealer, holder):
        raw = part.encode()
        h.update(len(raw).to_bytes(4, "big") + raw)
    h.update(encode_share(share))
    return h.digest()
