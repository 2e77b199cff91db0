"""Ties each request's client_id to a credential: an mTLS certificate, a bearer token, or both.

An institution can then neither join nor submit as another. Token files hold SHA-256 digests, so a leaked
coordinator volume does not leak usable tokens.
"""

from __future__ import annotations

import hmac
import json
from pathlib import Path
from typing import Any

import grpc

from ...common.messages import Code, Refused
from ...common.transport import ADMIN_ID_PREFIX, TOKEN_METADATA_KEY, token_digest


def load_tokens(path: Path) -> dict[str, str]:
    """{client_id: "sha256:<hex>"} from a JSON file; plain tokens in it are hashed on load."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read tokens file {path}: {exc}") from exc
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise ValueError(f"tokens file {path} must be a JSON object of client_id -> token")
    return {cid: v if v.startswith("sha256:") else token_digest(v) for cid, v in data.items()}


class Authenticator:
    """Checks a request's claimed client_id against the peer's certificate and/or bearer token."""

    def __init__(self, tokens: dict[str, str] | None = None, require_cert_identity: bool = False,
                 loopback: bool = True) -> None:
        """`loopback`: the port is reachable from this machine only (the Admin status is then open without
        client authentication; beyond loopback it never is, whatever --insecure allows for the federation)."""
        self.tokens = tokens
        self.require_cert_identity = require_cert_identity
        self.loopback = loopback
        self._digests = frozenset(tokens.values()) if tokens is not None else frozenset()

    def check_caller(self, context: grpc.ServicerContext) -> None:
        """Refuse a caller that holds no valid credential at all, before its request is even parsed.

        Under mTLS the handshake verified the certificate's chain: it must name someone. Under --tokens the
        token's digest must be one of the tokens' (whose: `check` decides once the client_id is read).
        """
        if self.require_cert_identity and not context.auth_context().get("x509_common_name"):
            raise Refused(Code.UNAUTHENTICATED, "this coordinator requires a client certificate with a common name")
        if self.tokens is not None:
            bearer = _bearer(context)
            if bearer is None:
                raise Refused(Code.UNAUTHENTICATED, "this coordinator requires a client token (--token)")
            if token_digest(bearer) not in self._digests:
                raise Refused(Code.UNAUTHENTICATED, "the token is not one this coordinator issued")

    def check(self, context: grpc.ServicerContext, client_id: str) -> None:
        if self.require_cert_identity:
            raw: Any = context.auth_context().get("x509_common_name", [])
            names = {n.decode() for n in raw}
            if client_id not in names:
                raise Refused(Code.PERMISSION_DENIED, f"client certificate is for {sorted(names) or 'no client'}, "
                                               f"not for client_id {client_id!r}")
        if self.tokens is not None:
            bearer = _bearer(context)
            if bearer is None:
                raise Refused(Code.UNAUTHENTICATED, "this coordinator requires a client token (--token)")
            expected = self.tokens.get(client_id)
            if expected is None or not hmac.compare_digest(expected, token_digest(bearer)):
                raise Refused(Code.PERMISSION_DENIED, f"the token is not valid for client_id {client_id!r}")

    @property
    def token_digests(self) -> frozenset[str] | None:
        """The issued tokens' digests (None without --tokens): what a call's headers are checked against."""
        return self._digests if self.tokens is not None else None

    @property
    def enabled(self) -> bool:
        return self.tokens is not None or self.require_cert_identity

    def check_admin(self, context: grpc.ServicerContext) -> str:
        """The admin's name ("admin:<name>") when the peer holds an admin credential; refuses otherwise.

        With client authentication off on loopback anyone on this machine may ask; off beyond loopback
        (--insecure) nobody may: every client id and its metrics are not for whoever reaches the port. Otherwise
        the certificate's common name and/or the token must belong to an "admin:<name>" identity; client ids
        cannot contain ':', so no client credential passes.
        """
        if not self.enabled:
            if self.loopback:
                return "anonymous"
            raise Refused(Code.PERMISSION_DENIED, "the status is served beyond loopback only to an admin credential: "
                                                  "run the coordinator with --tls-client-ca and/or --tokens "
                                                  "(pfeddc-certs admin), or ask from its own machine on loopback")
        names: set[str] | None = None
        if self.require_cert_identity:
            raw: Any = context.auth_context().get("x509_common_name", [])
            names = {n.decode() for n in raw if n.decode().startswith(ADMIN_ID_PREFIX)}
            if not names:
                raise Refused(Code.PERMISSION_DENIED, "the status needs an admin certificate (common name "
                                                      f"'{ADMIN_ID_PREFIX}<name>', from `pfeddc-certs admin`)")
        if self.tokens is not None:
            bearer = _bearer(context)
            if bearer is None:
                raise Refused(Code.UNAUTHENTICATED, "the status needs an admin token (--token)")
            digest = token_digest(bearer)
            matches = {n for n, d in self.tokens.items() if n.startswith(ADMIN_ID_PREFIX)
                       and hmac.compare_digest(d, digest)}
            if names is not None:
                matches &= names
            if not matches:
                raise Refused(Code.PERMISSION_DENIED, "the token is not an admin token"
                              + (" of this certificate's admin" if names is not None else ""))
            names = matches
        assert names
        return sorted(names)[0]


def _bearer(context: grpc.ServicerContext) -> str | None:
    return bearer_of(context.invocation_metadata())


def bearer_of(metadata: Any) -> str | None:
    """The bearer token among a call's metadata (key, value) pairs, if any."""
    for key, value in metadata or ():
        if key == TOKEN_METADATA_KEY and isinstance(value, str) and value.startswith("Bearer "):
            return value[len("Bearer "):]
    return None
