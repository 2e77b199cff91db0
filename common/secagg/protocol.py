"""The contract of one secure-aggregation round: its settings, stages, messages and errors, transport-free.

Stages (Bonawitz et al. 2017, with every site sharing with every other; SecAgg+ would share with a neighbourhood):
  1. ADVERTISE      each sampled site sends two fresh public keys; the coordinator announces those it received (U1).
  2. SHARE_KEYS     each site Shamir-shares its self-mask seed b_u and its mask private key among U1 and sends one
                    AES-GCM bundle per recipient through the coordinator, with a digest of each share inside it.
  3. CHECK_SHARES   the coordinator delivers the bundles of the sites that shared (U2); each site opens and checks
                    its bundles and answers with its complaints, if any, each with evidence: its own encryption
                    private key of this run, which the coordinator checks against the key it advertised and uses to
                    open the accused's bundle itself (`verdict`). A complaint that holds convicts the accused; one
                    that does not, the accuser; either way the attempt ends before any site sends its input (the
                    revealed key opens only this run's shares, never used again) and the round restarts without the
                    guilty. No site can exclude another, or stay, by accusing it falsely.
  4. MASKED_INPUT   no complaint: each site that checked sends its masked, quantised vector.
  5. UNMASK         the coordinator names the survivors (U3: sent an input) and the dropped (U2 - U3); each survivor
                    reveals its shares of b_u for u in U3 and of the mask key of each dropped site. From t of each,
                    the coordinator removes all masks and decodes the sum: nothing else.
A site reveals, for any other site, shares of b_u or of its mask key, never both; t > |sampled| / 2 means no two
groups of t holders can be told different stories about who dropped out.
Every message is a plain frozen dataclass (bytes, str, numpy arrays), so a wire layer only serialises them.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

from .field import FieldParams
from .keys import RoundId, TamperedBundleError, open_sealed, pair_key, private_key, public_bytes
from .shamir import Share


class Stage(StrEnum):
    ADVERTISE = "advertise"
    SHARE_KEYS = "share_keys"
    CHECK_SHARES = "check_shares"
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


class PeerRefused(ProtocolError):
    """A peer's advert or attestation did not check at this site (`site_id`: the peer): the site leaves the
    attempt, since it cannot tell a swapped key from a real one."""


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


class AccusationError(SecAggError):
    """A complaint was judged: `guilty` maps each site it convicts (the accused, or a false accuser) to why. The
    attempt ends before any input is sent; the round restarts without them."""

    def __init__(self, guilty: dict[str, str]) -> None:
        super().__init__("; ".join(f"{site!r} {why}" for site, why in sorted(guilty.items())))
        self.guilty = dict(guilty)


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
class Signed:
    """A message's signature and its sender's credential (identity.py: its client certificate, DER, or the
    signing key it bound at Join); empty from a site that signs nothing."""

    credential: bytes = b""
    signature: bytes = b""


@dataclass(frozen=True)
class AdvertiseKeys:
    site_id: str
    keys: PublicKeys
    signed: Signed = Signed()  # over (site_id, mask, enc), label "advert"


@dataclass(frozen=True)
class KeysAnnounced:
    rid: RoundId
    keys: dict[str, PublicKeys]  # U1
    signed: dict[str, Signed] = field(default_factory=dict)  # each advert's signature, relayed


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
    evidence: bytes = b""  # the accuser's encryption private key of this run (32 bytes)


@dataclass(frozen=True)
class SharesChecked:
    """Stage 3: the bundles a site could not use, each with the evidence the coordinator checks."""

    site_id: str
    complaints: tuple[Complaint, ...] = ()
    signature: bytes = b""  # over (site_id, *accused), label "check": with none accused, its attestation


@dataclass(frozen=True)
class ChecksPassed:
    """Stage 3 closed without a complaint: the sites that checked their bundles (they send inputs), each with its
    signed attestation that it accused no one. A site sends its input only when at least t sites attest: then
    fewer than t can have complained (t > n / 2), so the encryption keys complaints reveal never open t shares of
    one secret."""

    checked: tuple[str, ...]
    attestations: dict[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class MaskedInput:
    site_id: str
    masked: np.ndarray  # uint64 in [0, M); field.to_bytes for the wire


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


def open_bundle(key: bytes, bundle: SealedBundle, rid: RoundId, holder: str, holder_x: int) -> dict[ShareKind, Share]:
    """The two shares a bundle holds for `holder` (its x-coordinate `holder_x`), checked against the digests its
    dealer sent in the clear; ValueError (TamperedBundleError when it does not authenticate) naming what is wrong.
    The holder opens its bundles with it, and the coordinator judges a complaint with it."""
    dealer = bundle.sender
    plain = open_sealed(key, bundle.ciphertext, rid, dealer, holder)
    try:
        first, rest = decode_share(plain)
        second, tail = decode_share(rest)
    except ValueError as e:
        raise ValueError("its bundle does not hold two shares") from e
    held = {ShareKind.SELF_SEED: first, ShareKind.MASK_KEY: second}
    if tail or any(s.x != holder_x for s in held.values()):
        raise ValueError("its bundle holds shares addressed to another holder")
    if any(share_digest(rid, k, dealer, holder, s) != bundle.digests.get(k) for k, s in held.items()):
        raise ValueError("its shares do not match the digests it sent the coordinator")
    return held


def verdict(complaint: Complaint, accuser: str, accuser_enc_public: bytes, accused_enc_public: bytes,
            bundle: SealedBundle | None, rid: RoundId, accuser_x: int) -> tuple[str, str]:
    """Who a complaint convicts, and why: the accused when the accuser's evidence (its encryption private key,
    checked against the public key it advertised) shows the accused's bundle does not open or does not match its
    digests; else the accuser (false or unproven)."""
    accused = complaint.accused
    try:
        own = private_key(complaint.evidence)
    except ValueError:
        return accuser, f"accused {accused!r} without evidence (no 32-byte key)"
    if public_bytes(own) != accuser_enc_public:
        return accuser, f"accused {accused!r} with a key other than the one it advertised"
    if bundle is None:
        return accuser, f"accused {accused!r}, which dealt it no bundle this run"
    try:
        open_bundle(pair_key(own, accused_enc_public, rid, accuser, accused), bundle, rid, accuser, accuser_x)
    except (TamperedBundleError, ValueError) as e:
        return accused, f"dealt a bundle {accuser!r} could not use, shown with its key: {e}"
    return accuser, f"accused {accused!r} falsely: its bundle opens and matches the digests it committed"
