"""Signatures that bind a secure round's messages to the sites' certificates, so a relaying coordinator cannot
swap a site's keys or claim that sites checked their shares when they did not.

With client certificates (mTLS), each site signs its advert (its two public keys of the run) and its verdict on
the shares it received (no complaint, or whom it accuses) with the private key of its client certificate, and
sends the certificate along. Every other site checks the certificate against the federation's CA (the one its
`--tls-ca` names: pfeddc-certs signs coordinator and clients with one CA), its common name against the site id,
and the signature against the message: ECDSA P-256 with SHA-256 over a length-prefixed, labelled encoding bound
to the run. Without client certificates nothing is signed, and the coordinator is trusted to relay faithfully
(docs/secure-aggregation.md).
"""

from __future__ import annotations

import datetime
import functools
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from .keys import RoundId

_LABEL = b"pfeddc-secagg/v2/"


class SignatureError(ValueError):
    """A message's certificate or signature does not hold; names the site."""


def _message(label: str, rid: RoundId, parts: tuple[bytes, ...]) -> bytes:
    out = _LABEL + label.encode() + rid.encoded
    for p in parts:
        out += len(p).to_bytes(4, "big") + p
    return out


@dataclass(frozen=True)
class Identity:
    """A site's signing identity: its client certificate (DER) and that certificate's private key."""

    certificate: bytes
    key: ec.EllipticCurvePrivateKey

    @staticmethod
    def load(cert: Path, key: Path) -> Identity:
        certificate = x509.load_pem_x509_certificate(Path(cert).read_bytes())
        private = serialization.load_pem_private_key(Path(key).read_bytes(), password=None)
        if not isinstance(private, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{key}: secure aggregation signs with an EC (P-256) client key, as pfeddc-certs issues")
        return Identity(certificate.public_bytes(serialization.Encoding.DER), private)

    def sign(self, label: str, rid: RoundId, *parts: bytes) -> bytes:
        return self.key.sign(_message(label, rid, parts), ec.ECDSA(hashes.SHA256()))


@dataclass(frozen=True)
class Verifier:
    """Checks the sites' certificates against the federation's CA (PEM, possibly several)."""

    cas: tuple[x509.Certificate, ...]

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
        try:
            public.verify(signature, _message(label, rid, parts), ec.ECDSA(hashes.SHA256()))
        except InvalidSignature as e:
            raise SignatureError(f"{site_id!r}'s {label} signature does not verify") from e


def _issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def site_signing(cert: Path | None, key: Path | None, ca: Path | None) -> tuple[Identity | None, Verifier | None]:
    """A site's signing identity (with a client certificate) and what it requires of its peers (with a client
    certificate and the CA: the federation runs mTLS, so every peer has one too)."""
    identity = Identity.load(cert, key) if cert and key else None
    verifier = Verifier.load(ca) if identity and ca else None
    return identity, verifier
