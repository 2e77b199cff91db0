"""Per-round keys: two X25519 pairs per site, HKDF-SHA256 to pairwise secrets, AES-GCM for share bundles.

Each site draws two fresh key pairs every round (and every restart of a round) from the operating system's
entropy: one whose Diffie-Hellman secrets seed the pairwise masks, one whose secrets key the encryption of share
bundles between two sites. Keeping them apart lets the coordinator reconstruct a dropped site's mask key without
learning how to read the shares that site exchanged. Every derived secret is bound by HKDF's `info` to the
federation, the round, the attempt and the unordered pair of site ids, so no seed or key repeats across rounds,
restarts or pairs even if a site reused a key pair. Each AES-GCM message also authenticates, as associated data,
its sender, recipient and round, so a bundle replayed to another site or round fails to open.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

SEED_BYTES = 32
NONCE_BYTES = 12
_LABEL = b"pfeddc-secagg/v1/"


class TamperedBundleError(ValueError):
    """A share bundle failed AES-GCM authentication: altered, truncated, or addressed to someone else."""

    def __init__(self, sender: str, recipient: str) -> None:
        super().__init__(f"the share bundle from {sender!r} to {recipient!r} failed authentication")
        self.sender = sender


@dataclass(frozen=True)
class RoundId:
    """What every key, seed and ciphertext of one run of the protocol is bound to."""

    federation_id: str
    round: int
    attempt: int = 0  # bumped when a coordinator restarts the round: fresh keys, fresh seeds

    @functools.cached_property
    def encoded(self) -> bytes:
        return _fields(self.federation_id, str(self.round), str(self.attempt))


def _fields(*parts: str) -> bytes:
    """Length-prefixed, so no two different tuples encode alike."""
    raw = [p.encode() for p in parts]
    return b"".join(len(r).to_bytes(4, "big") + r for r in raw)


@dataclass(frozen=True)
class SiteKeys:
    """A site's two key pairs for one round; the private halves never leave it except as Shamir shares."""

    mask: X25519PrivateKey
    enc: X25519PrivateKey

    @staticmethod
    def generate() -> SiteKeys:
        return SiteKeys(X25519PrivateKey.generate(), X25519PrivateKey.generate())

    @property
    def mask_public(self) -> bytes:
        return public_bytes(self.mask)

    @property
    def enc_public(self) -> bytes:
        return public_bytes(self.enc)

    def mask_private(self) -> bytes:
        return self.mask.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())

    def enc_private(self) -> bytes:
        """Revealed only as a complaint's evidence, in an attempt that then ends before any input is sent."""
        return self.enc.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())


def public_bytes(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def private_key(raw: bytes) -> X25519PrivateKey:
    """A private key from its 32 raw bytes (a reconstructed mask key, a complaint's evidence); ValueError else."""
    return X25519PrivateKey.from_private_bytes(raw)


def _derive(own: X25519PrivateKey, peer_public: bytes, label: str, rid: RoundId, a: str, b: str) -> bytes:
    shared = own.exchange(X25519PublicKey.from_public_bytes(peer_public))
    lo, hi = sorted((a, b))
    info = _LABEL + label.encode() + rid.encoded + _fields(lo, hi)
    return HKDF(algorithm=hashes.SHA256(), length=SEED_BYTES, salt=None, info=info).derive(shared)


def pairwise_seed(own_mask: X25519PrivateKey, peer_mask_public: bytes, rid: RoundId, own_id: str,
                  peer_id: str) -> bytes:
    """The 32-byte seed of the mask two sites share this round; both sides derive the same one."""
    return _derive(own_mask, peer_mask_public, "mask", rid, own_id, peer_id)


def pair_key(own_enc: X25519PrivateKey, peer_enc_public: bytes, rid: RoundId, own_id: str, peer_id: str) -> bytes:
    """The AES-256-GCM key two sites share this round for their share bundles."""
    return _derive(own_enc, peer_enc_public, "enc", rid, own_id, peer_id)


def _aad(rid: RoundId, sender: str, recipient: str) -> bytes:
    return _LABEL + b"bundle" + rid.encoded + _fields(sender, recipient)


def seal(key: bytes, plaintext: bytes, rid: RoundId, sender: str, recipient: str) -> bytes:
    """nonce || AES-GCM(plaintext), authenticating who sends it to whom in which round."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, _aad(rid, sender, recipient))


def open_sealed(key: bytes, sealed: bytes, rid: RoundId, sender: str, recipient: str) -> bytes:
    """The plaintext of `seal`, or TamperedBundleError naming the sender."""
    try:
        return AESGCM(key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], _aad(rid, sender, recipient))
    except (InvalidTag, ValueError) as e:
        raise TamperedBundleError(sender, recipient) from e
