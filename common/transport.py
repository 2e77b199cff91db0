"""Every gRPC option pfeddc sets, with the reason for each, and TLS / token credentials.

One place for message-size limits and keepalive, so the coordinator and the clients can never disagree about
them. Retries are not here: the client's connection owns them (client/connection.py).
"""

from __future__ import annotations

import argparse
import hashlib
import ipaddress
from dataclasses import dataclass
from pathlib import Path

import grpc

MiB = 1024 * 1024
# A pFedDC update is kilobytes (REFERENCE §6) but a large backbone with deep prompts reaches megabytes.
# gRPC's 4 MiB default fails hard above that; 64 MiB leaves headroom for ViT-L deep prompts.
DEFAULT_MAX_UPDATE_BYTES = 64 * MiB
# The transport limit sits above the payload limit so an oversized update reaches our own check and gets a
# message naming the sizes, instead of gRPC's generic RESOURCE_EXHAUSTED.
_ENVELOPE_BYTES = 1 * MiB

TOKEN_METADATA_KEY = "authorization"
# Open mode (no client authentication): the secret a client keeps on its disk and the coordinator binds to its
# client_id at its first join, so no other caller can use that id (protos/pfeddc/v1/federation.proto).
JOIN_SECRET_METADATA_KEY = "x-pfeddc-join-secret"
# Admin identities ("admin:<name>" as a certificate's common name and a tokens.json key) may read the status;
# client ids cannot contain ':', so a client credential is never an admin one.
ADMIN_ID_PREFIX = "admin:"


def token_digest(token: str) -> str:
    """What the coordinator stores for a client token: its SHA-256, never the token itself."""
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


def server_options(max_update_bytes: int = DEFAULT_MAX_UPDATE_BYTES,
                   max_receive_bytes: int | None = None) -> list[tuple[str, int]]:
    """`max_receive_bytes`: the largest request the server reads (the coordinator derives it from its spec:
    the largest legitimate SubmitUpdate); gRPC core refuses a larger one from its length prefix, unbuffered."""
    limit = max_update_bytes + _ENVELOPE_BYTES
    return [
        ("grpc.max_receive_message_length", min(limit, max_receive_bytes or limit)),
        ("grpc.max_send_message_length", limit),
        # Ping idle clients every 60 s and drop them after 20 s without an answer: dead peers are noticed
        # behind NATs and load balancers that silently drop idle connections.
        ("grpc.keepalive_time_ms", 60_000),
        ("grpc.keepalive_timeout_ms", 20_000),
        # Clients ping every 30 s even without calls (long local training): accept pings every 10 s and never
        # answer them with GOAWAY "too_many_pings".
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.http2.max_ping_strikes", 0),
        # gRPC turns SO_REUSEPORT on by default: a second coordinator on the same port would start without error
        # and the kernel would split the clients between two federations. Off, the second one fails to bind.
        ("grpc.so_reuseport", 0),
    ]


def channel_options(max_update_bytes: int = DEFAULT_MAX_UPDATE_BYTES) -> list[tuple[str, int | str]]:
    limit = max_update_bytes + _ENVELOPE_BYTES
    return [
        ("grpc.max_receive_message_length", limit),
        ("grpc.max_send_message_length", limit),
        # Keep the connection alive through long local training (30 s >= the server's 10 s minimum).
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 20_000),
        ("grpc.keepalive_permit_without_calls", 1),
        # No retry policy (service config) here: retries live in one layer, the caller's (client/connection.py
        # `Connection._retry`, which also diagnoses a certificate at fault and stops at a signal). A channel
        # policy under it multiplied the attempts (5 per try, 10 tries: 50 calls). `pfeddc-server status` asks once.
        # Reconnect quickly after a coordinator restart (default backoff grows to 120 s).
        ("grpc.initial_reconnect_backoff_ms", 500),
        ("grpc.max_reconnect_backoff_ms", 5_000),
    ]


@dataclass(frozen=True)
class TlsFiles:
    """PEM files for one side. Server: cert+key (and ca to require client certs). Client: ca (+cert+key)."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None

    @property
    def enabled(self) -> bool:
        return any((self.ca, self.cert, self.key))

    def _read(self, path: Path | None, what: str) -> bytes | None:
        if path is None:
            return None
        try:
            return Path(path).read_bytes()
        except OSError as exc:
            raise ValueError(f"cannot read {what} file {path}: {exc.strerror}") from exc

    def server_credentials(self) -> grpc.ServerCredentials:
        if not (self.cert and self.key):
            raise ValueError("a TLS coordinator needs both --tls-cert and --tls-key")
        cert = self._read(self.cert, "TLS certificate")
        key = self._read(self.key, "TLS key")
        ca = self._read(self.ca, "client CA")
        assert cert is not None and key is not None
        return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=ca is not None)

    def channel_credentials(self) -> grpc.ChannelCredentials:
        if bool(self.cert) != bool(self.key):
            raise ValueError("a client certificate needs both --tls-cert and --tls-key")
        return grpc.ssl_channel_credentials(
            root_certificates=self._read(self.ca, "TLS CA"),
            private_key=self._read(self.key, "TLS key"),
            certificate_chain=self._read(self.cert, "TLS certificate"),
        )


def read_token(token: str | None, token_file: Path | None) -> str | None:
    """The token from --token or --token-file (read, stripped: `pfeddc-certs` writes it with a newline); an
    unreadable or empty file is an error naming it, never a silent call without a token."""
    if token_file is None:
        return token or None
    if token:
        raise ValueError("pass either --token or --token-file, not both")
    try:
        text = Path(token_file).read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read --token-file {token_file}: {getattr(exc, 'strerror', None) or exc}") from exc
    if not text:
        raise ValueError(f"--token-file {token_file} is empty")
    if any(c.isspace() for c in text):
        raise ValueError(f"--token-file {token_file} holds more than one word: it must hold the token alone")
    return text


MAX_PORT = 65535


def is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def split_target(target: str) -> tuple[str, int]:
    """'host:port' or '[v6]:port' -> (host, port), with an error naming the bad value."""
    scheme, sep, rest = target.partition("://")
    if sep:
        address = rest.split("/", 1)[0]
        raise ValueError(f"server address must be HOST:PORT, not a URL: use {address or 'HOST:PORT'!r} instead of "
                         f"{target!r} (TLS is chosen by --tls-ca, not by a {scheme}:// scheme)")
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"server address must be HOST:PORT, got {target!r}")
    if not 1 <= int(port) <= MAX_PORT:
        raise ValueError(f"server address {target!r}: the port must be 1-{MAX_PORT}")
    return host, int(port)


def port_number(text: str) -> int:
    """An argparse type for a port to listen on: 0 (the system picks a free one) to 65535, else a clear error
    (gRPC would otherwise listen on a random port for an out-of-range number and say nothing)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= MAX_PORT:
        raise argparse.ArgumentTypeError(f"port {value} is out of range: 1-{MAX_PORT}, or 0 for a free one")
    return value


def open_channel(target: str, tls: TlsFiles, token: str | None = None, join_secret: str | None = None) -> grpc.Channel:
    """A channel with pfeddc's options; TLS when any TLS file is given; the token (and the join secret) ride as
    call metadata."""
    split_target(target)
    options = channel_options()
    extra = [(JOIN_SECRET_METADATA_KEY, join_secret)] if join_secret else []
    if not tls.enabled:
        channel = grpc.insecure_channel(target, options=options)
        if token:
            # gRPC refuses call credentials on an insecure channel; send the token as plain metadata instead.
            extra.append((TOKEN_METADATA_KEY, f"Bearer {token}"))
        return grpc.intercept_channel(channel, _MetadataInterceptor(extra)) if extra else channel
    creds = tls.channel_credentials()
    if token:
        creds = grpc.composite_channel_credentials(creds, grpc.access_token_call_credentials(token))
    channel = grpc.secure_channel(target, creds, options=options)
    return grpc.intercept_channel(channel, _MetadataInterceptor(extra)) if extra else channel


class _MetadataInterceptor(grpc.UnaryUnaryClientInterceptor):
    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self._metadata = pairs

    def intercept_unary_unary(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        metadata = list(client_call_details.metadata or []) + self._metadata
        details = client_call_details._replace(metadata=metadata)
        return continuation(details, request)


def common_name(path: Path) -> str:
    """The common name of the PEM certificate at `path` (a client certificate's is its client id)."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    try:
        cert = x509.load_pem_x509_certificate(Path(path).read_bytes())
    except OSError as exc:
        raise ValueError(f"cannot read certificate {path}: {exc.strerror}") from exc
    except ValueError:
        raise ValueError(f"{path} is not a PEM certificate") from None
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not names:
        raise ValueError(f"certificate {path} has no common name: pass --client-id")
    return str(names[0].value)
