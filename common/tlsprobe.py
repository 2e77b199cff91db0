"""Why a coordinator cannot be reached, when the cause is a certificate and not the network.

gRPC reports every failed TLS handshake as UNAVAILABLE, the same as a coordinator that is down, so a wrong CA
or an expired certificate used to look like an outage: minutes of retries, then exit 3. `diagnose` looks once
at the local files and then at one handshake of its own (Python's ssl, the same OpenSSL checks), and names the
certificate at fault; None means the cause is not a credential (the caller keeps retrying).
"""

from __future__ import annotations

import datetime as dt
import socket
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from .transport import TlsFiles, split_target

# What a server sends first over HTTP/2 (its SETTINGS): reading it proves the handshake was accepted by both
# sides; under TLS 1.3 a refused client certificate arrives only as an alert on this first read.
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
_PLAINTEXT = ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG", "HTTP_REQUEST",
              "UNEXPECTED_EOF", "RECORD_TOO_LONG")


class CredentialError(ValueError):
    """A configuration problem (exit 2): a certificate or key is wrong, not the network."""


def check_files(tls: TlsFiles, now: dt.datetime | None = None) -> str | None:
    """Problems visible without a connection: unreadable or unparsable PEM, an expired (or not yet valid)
    certificate, a key that does not belong to its certificate."""
    now = now or dt.datetime.now(dt.UTC)
    for flag, path in (("--tls-ca", tls.ca), ("--tls-cert", tls.cert)):
        if path is None:
            continue
        try:
            cert = x509.load_pem_x509_certificate(Path(path).read_bytes())
        except OSError as exc:
            return f"cannot read {flag} {path}: {exc.strerror}"
        except ValueError:
            return f"{flag} {path} is not a PEM certificate"
        if cert.not_valid_after_utc < now:
            return f"{flag} {path} expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC: issue a new one " \
                   "(pfeddc-certs client/admin --out DIR ...)"
        if cert.not_valid_before_utc > now:
            return f"{flag} {path} is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC (is this " \
                   "machine's clock right?)"
    if tls.cert and tls.key:
        try:
            key = serialization.load_pem_private_key(Path(tls.key).read_bytes(), password=None)
        except OSError as exc:
            return f"cannot read --tls-key {tls.key}: {exc.strerror}"
        except (ValueError, TypeError):
            return f"--tls-key {tls.key} is not an unencrypted PEM private key"
        cert = x509.load_pem_x509_certificate(Path(tls.cert).read_bytes())
        pem = serialization.PublicFormat.SubjectPublicKeyInfo
        if key.public_key().public_bytes(serialization.Encoding.PEM, pem) != \
                cert.public_key().public_bytes(serialization.Encoding.PEM, pem):
            return f"--tls-key {tls.key} is not the key of --tls-cert {tls.cert}"
    return None


def network_hint(target: str, timeout_s: float = 5.0) -> str:
    """What to check when nothing credential-related was found: the address, or the coordinator's health."""
    host, port = split_target(target)
    try:
        socket.create_connection((host.strip("[]"), port), timeout=timeout_s).close()
    except OSError as exc:
        return f"nothing accepts connections at {target} ({exc.strerror or exc}): is the coordinator running, and " \
               "are the host and port right?"
    return f"{target} accepts connections but the coordinator did not answer: is it the coordinator's gRPC port " \
           "(not its metrics or health port), and is it healthy?"


def diagnose(target: str, tls: TlsFiles, timeout_s: float = 5.0) -> str | None:
    """The credential at fault when `target` cannot be reached, or None when it is not a credential."""
    problem = check_files(tls)
    if problem:
        return problem
    host, port = split_target(target)
    host = host.strip("[]")
    try:
        raw = socket.create_connection((host, port), timeout=timeout_s)
    except OSError:
        return None  # nothing listens, or the network: not a credential
    with raw:
        return _handshake(raw, host, target, tls, timeout_s) if tls.enabled else _speaks_tls(raw, host, target)


def _speaks_tls(raw: socket.socket, host: str, target: str) -> str | None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2"])
    try:
        ctx.wrap_socket(raw, server_hostname=host).close()
    except (ssl.SSLError, OSError):
        return None  # a plaintext server (or none): not a credential
    return f"the coordinator at {target} speaks TLS and this call did not: pass --tls-ca (the federation's " \
           "ca.pem), and --tls-cert/--tls-key when it requires client certificates"


def _handshake(raw: socket.socket, host: str, target: str, tls: TlsFiles, timeout_s: float) -> str | None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.set_alpn_protocols(["h2"])
    if tls.ca:
        ctx.load_verify_locations(cafile=str(tls.ca))
    else:
        ctx.load_default_certs()
    if tls.cert and tls.key:
        ctx.load_cert_chain(str(tls.cert), str(tls.key))
    ca = f"--tls-ca {tls.ca}" if tls.ca else "the system's CA store (no --tls-ca)"
    try:
        with ctx.wrap_socket(raw, server_hostname=host) as conn:
            conn.settimeout(timeout_s)
            conn.sendall(_H2_PREFACE)
            if conn.recv(1):
                return None  # the coordinator answered: the handshake is not the problem
        # gRPC's TLS closes the connection without an alert when it refuses the client's certificate
        return _refused_client_cert(target, tls, "the connection was closed right after the handshake")
    except ssl.SSLCertVerificationError as exc:
        why = exc.verify_message or str(exc)
        if exc.verify_code == 10:
            return f"the coordinator's certificate at {target} has expired: renew it (pfeddc-certs init)"
        if "mismatch" in why:
            return f"the coordinator's certificate does not name {host!r} ({why}): connect by a name it holds, or " \
                   "reissue it with that --host"
        return f"{ca} did not sign the coordinator's certificate at {target} ({why}): pass the federation's " \
               "ca.pem (the CA that issued coordinator.pem)"
    except ssl.SSLError as exc:
        reason = exc.reason or str(exc)
        if any(mark in reason for mark in _PLAINTEXT):
            return f"the coordinator at {target} does not speak TLS on this port: drop --tls-ca/--tls-cert/--tls-key " \
                   "or use its TLS port"
        if "EXPIRED" in reason and tls.cert:
            return f"the coordinator refused --tls-cert {tls.cert}: it has expired"
        if any(mark in reason for mark in ("CERTIFICATE_REQUIRED", "HANDSHAKE_FAILURE", "UNKNOWN_CA",
                                           "BAD_CERTIFICATE", "DECRYPT_ERROR", "UNSUPPORTED_CERT")):
            return _refused_client_cert(target, tls, reason)
        return f"TLS handshake with {target} failed: {reason}"
    except OSError:
        return None


def _refused_client_cert(target: str, tls: TlsFiles, why: str) -> str:
    if not tls.cert:
        return f"the coordinator at {target} requires a client certificate ({why}): pass --tls-cert and --tls-key " \
               "(pfeddc-certs client or admin writes them)"
    return f"the coordinator at {target} refused --tls-cert {tls.cert} ({why}): it was not issued by the CA the " \
           "coordinator trusts (its --tls-client-ca), or it is not a client certificate"
