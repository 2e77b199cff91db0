"""Signatures that bind a secure round's messages to the sites, so a relaying coordinator cannot swap a site's
keys or claim that sites checked their shares when they did not.

Each site signs its advert (its two public keys of the run) and its verdict on the shares it received (no
complaint, or whom it accuses, for the run's announced key set: `keys_digest`), and sends its credential along:
ECDSA P-256 with SHA-256 over a length-prefixed, labelled encoding bound to the run. Two kinds of credential, one
signature:

- With client certificates (mTLS) the credential is the site's certificate (DER). Every other site checks it
  against the federation's CA (the one its `--tls-ca` names: pfeddc-certs signs coordinator and clients with one
  CA) and its common name against the site id (`Verifier`).
- Without them, the credential is the public key of a signing key the site keeps in its state dir and binds to
  its id at its first Join (SEC1, compressed: 33 bytes). The coordinator checks every message against the bound
  key (`BoundKeys`); each site pins every peer's key the first time it sees it and refuses any other key for
  that peer later (client/peer_keys.py, state_dir/peer_keys.json, which an operator may also fill in advance
  from the sites' `pfeddc-client signing-key`). A coordinator that turns hostile after a peer was first seen
  cannot swap its keys; one hostile from the very first round can, for peers not pinned in advance (trust on
  first use, docs/secure-aggregation.md).
"""

from __future__ import annotations

import datetime
import functools
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from .. import serde
from .keys import RoundId
from .protocol import PublicKeys

_LABEL = b"pfeddc-secagg/v4/"


class PeerCheck(Protocol):
    """What checks the sites' signatures: `Verifier` (a CA), `BoundKeys` (the coordinator), client/peer_keys.py's
    `PinnedKeys` (a site)."""

    def knows(self, site_id: str) -> bool:
        """Whether `site_id` must sign whatever the round says (its credential is known in advance)."""

    def check(self, site_id: str, credential: bytes, signature: bytes, label: str, rid: RoundId,
              *parts: bytes) -> None:
        """SignatureError (naming the site) unless `credential` is `site_id`'s and signed the message."""


class SignatureError(ValueError):
    """A message's certificate or signature does not hold; names the site."""


def keys_digest(keys: Mapping[str, PublicKeys]) -> bytes:
    """The announced keys of a run, as a check signs them: an attestation holds for this key set only, so a
    coordinator that reused a run id could not replay one from an earlier run of that id (fresh keys each)."""
    h = hashlib.sha256(b"pfeddc-secagg/v4/announced")
    for site in sorted(keys):
        for part in (site.encode(), keys[site].mask, keys[site].enc):
            h.update(len(part).to_bytes(4, "big") + part)
    return h.digest()


def _message(label: str, rid: RoundId, parts: tuple[bytes, ...]) -> bytes:
    out = _LABEL + label.encode() + rid.encoded
    for p in parts:
        out += len(p).to_bytes(4, "big") + p
    return out


PUBLIC_KEY_BYTES = 33  # a P-256 point, SEC1 compressed


def public_key_bytes(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint)


def signing_key_problem(credential: bytes) -> str | None:
    """Why `credential` is not a P-256 public key as a site binds at Join (None: it is one)."""
    if len(credential) != PUBLIC_KEY_BYTES:
        return f"a signing key is a compressed P-256 point of {PUBLIC_KEY_BYTES} bytes, got {len(credential)}"
    try:
        _public_key(credential)
    except ValueError:
        return "the signing key is not a point of P-256"
    return None


@functools.lru_cache(maxsize=4096)
def _public_key(credential: bytes) -> ec.EllipticCurvePublicKey:
    return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), credential)


def verify_with(site_id: str, credential: bytes, signature: bytes, label: str, rid: RoundId,
                parts: tuple[bytes, ...]) -> None:
    """SignatureError unless `credential` is a signing key (PUBLIC_KEY_BYTES) that signed the message."""
    problem = signing_key_problem(credential)
    if problem:
        raise SignatureError(f"{site_id!r} presented no signing key: {problem}")
    _verify(site_id, _public_key(credential), signature, label, rid, parts)


def _verify(site_id: str, public: ec.EllipticCurvePublicKey, signature: bytes, label: str, rid: RoundId,
            parts: tuple[bytes, ...]) -> None:
    try:
        public.verify(signature, _message(label, rid, parts), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature as e:
        raise SignatureError(f"{site_id!r}'s {label} signature does not verify") from e


@dataclass(frozen=True)
class Identity:
    """A site's signing identity: its credential (client certificate, DER, or the public key it bound at Join)
    and the private key that signs."""

    credential: bytes
    key: ec.EllipticCurvePrivateKey

    @staticmethod
    def load(cert: Path, key: Path) -> Identity:
        certificate = x509.load_pem_x509_certificate(Path(cert).read_bytes())
        private = serialization.load_pem_private_key(Path(key).read_bytes(), password=None)
        if not isinstance(private, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{key}: secure aggregation signs with an EC (P-256) client key, as pfeddc-certs issues")
        return Identity(certificate.public_bytes(serialization.Encoding.DER), private)

    @staticmethod
    def generate() -> Identity:
        """A fresh signing key, its public key as the credential (a site without a client certificate)."""
        key = ec.generate_private_key(ec.SECP256R1())
        return Identity(public_key_bytes(key), key)

    @staticmethod
    def kept_at(path: Path) -> Identity:
        """The signing key at `path` (PEM), made there once (mode 0600; of two processes racing, both keep the
        first one written) if missing; ValueError naming the file when it holds anything else."""
        if not path.exists():
            key = ec.generate_private_key(ec.SECP256R1())
            serde.atomic_write(path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()), replace=False)
        why = "another kind of key"
        try:
            private = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (ValueError, TypeError) as e:  # TypeError: a passphrase-protected key
            private = None
            why = str(e).split("\n")[0]
        if not isinstance(private, ec.EllipticCurvePrivateKey) or not isinstance(private.curve, ec.SECP256R1):
            raise ValueError(f"{path}: not an unencrypted P-256 signing key ({why}): restore it, or remove it to "
                             "make a new one and join under a new --client-id (the coordinator bound this id to the "
                             "old key)")
        return Identity(public_key_bytes(private), private)

    def sign(self, label: str, rid: RoundId, *parts: bytes) -> bytes:
        return self.key.sign(_message(label, rid, parts), ec.ECDSA(hashes.SHA256()))


@dataclass(frozen=True)
class Verifier:
    """Checks the sites' certificates against the federation's CA (PEM, possibly several)."""

    cas: tuple[x509.Certificate, ...]

    def knows(self, site_id: str) -> bool:
        """Whether `site_id` must sign: the CA vouches for every site."""
        return True

    @staticmethod
    def load(ca: Path) -> Verifier:
        return Verifier(tuple(x509.load_pem_x509_certificates(Path(ca).read_bytes())))

    @staticmethod
    @functools.lru_cache(maxsize=4)
    def cached(ca: str) -> Verifier:
        """`load`, once per file: the coordinator checks every secure attempt against the same CA."""
        return Verifier.load(Path(ca))

    def check(self, site_id: str, certificate: bytes, signature: bytes, label: str, rid: RoundId,
              *parts: bytes) -> None:
        """SignatureError unless `certificate` is a CA-issued, current certificate for `site_id` whose key signed
        the message."""
        try:
            cert = x509.load_der_x509_certificate(certificate)
        except ValueError as e:
            raise SignatureError(f"{site_id!r} sent no readable certificate") from e
        names = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
        if names != [site_id]:
            raise SignatureError(f"{site_id!r} signed with a certificate for {names}")
        now = datetime.datetime.now(datetime.UTC)
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            raise SignatureError(f"{site_id!r} signed with a certificate outside its validity")
        if not any(_issued_by(cert, ca) for ca in self.cas):
            raise SignatureError(f"{site_id!r} signed with a certificate the federation's CA did not issue")
        public = cert.public_key()
        if not isinstance(public, ec.EllipticCurvePublicKey):
            raise SignatureError(f"{site_id!r} signed with a key that is not EC")
        _verify(site_id, public, signature, label, rid, parts)


@dataclass(frozen=True)
class BoundKeys:
    """The coordinator's check without client certificates: each site's messages against the key it bound at
    Join. A site that bound none (a record from before signing keys) is not asked to sign; what it does sign must
    verify with the key it presents, since its peers check any signature they are shown."""

    keys: dict[str, bytes]

    def knows(self, site_id: str) -> bool:
        return bool(self.keys.get(site_id))

    def check(self, site_id: str, credential: bytes, signature: bytes, label: str, rid: RoundId,
              *parts: bytes) -> None:
        bound = self.keys.get(site_id, b"")
        if not bound:
            if credential or signature:
                verify_with(site_id, credential, signature, label, rid, parts)
            return
        if not credential:
            raise SignatureError(f"{site_id!r} sent no signature, though it bound a signing key at Join")
        if credential != bound and len(credential) > PUBLIC_KEY_BYTES:
            raise SignatureError(f"{site_id!r} signed with a client certificate, but this coordinator checks the key "
                                 "each site bound at Join (it runs without --tls-client-ca): give the coordinator "
                                 "--tls-client-ca, or run the site without --tls-cert and --tls-key")
        if credential != bound:
            raise SignatureError(f"{site_id!r} signed with a key other than the one it bound at Join")
        _verify(site_id, _public_key(bound), signature, label, rid, parts)


def _issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def coordinator_check(ca: str | None, keys: dict[str, bytes]) -> PeerCheck:
    """What the coordinator checks a secure attempt's signatures against: the sites' certificates (mTLS, `ca`),
    else the keys the sampled sites bound at Join."""
    return Verifier.cached(ca) if ca else BoundKeys(keys)


def site_signing(cert: Path | None, key: Path | None, ca: Path | None) -> tuple[Identity | None, Verifier | None]:
    """A site's signing identity (with a client certificate) and what it requires of its peers (with a client
    certificate and the CA: the federation runs mTLS, so every peer has one too)."""
    identity = Identity.load(cert, key) if cert and key else None
    verifier = Verifier.load(ca) if identity and ca else None
    return identity, verifier
