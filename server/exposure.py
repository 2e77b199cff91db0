"""Where the coordinator listens, and whether it may: loopback unless it can tell its clients from anyone."""

from __future__ import annotations

import argparse

from ..common.transport import is_loopback


def listen_address(args: argparse.Namespace) -> str:
    """--bind, or without it: every interface once the coordinator can tell its clients from anyone (TLS and
    client certificates, or tokens with --allow-tokens-only: what `check_exposure` accepts), loopback before, so
    `pfeddc-server --rounds 20` starts as written."""
    if args.bind:
        return str(args.bind)
    tls = any((args.tls_cert, args.tls_key, args.tls_client_ca))  # as TlsFiles.enabled reads them
    trusted = args.tls_client_ca is not None or (args.tokens is not None and args.allow_tokens_only)
    return "0.0.0.0" if tls and trusted else "127.0.0.1"


def client_auth_of(args: argparse.Namespace) -> bool:
    return args.tokens is not None or args.tls_client_ca is not None


def check_exposure(bind: str, tls: bool, client_certs: bool, tokens: bool, tokens_only: bool, insecure: bool) -> None:
    """Beyond loopback: TLS and client certificates (a stranger is then refused at the TLS handshake, before it
    can open a stream), or tokens alone when --allow-tokens-only says so, or --insecure; else refuse to start."""
    if is_loopback(bind) or insecure or (tls and (client_certs or (tokens and tokens_only))):
        return
    if tls and tokens:
        raise ValueError(
            f"refusing to listen on {bind} with tokens alone: without client certificates anyone who reaches the "
            "port completes the TLS handshake and can open streams before a token is checked. Fix: "
            "--tls-client-ca (pfeddc-certs issues client certificates; docs/deploy.md), or --allow-tokens-only to "
            "accept that")
    missing = "TLS and client authentication" if not tls else "client authentication"
    raise ValueError(
        f"refusing to listen on {bind} without {missing}: anyone who reaches this port could join and submit. "
        "Fix: --tls-cert/--tls-key with --tls-client-ca (and --tokens) (docs/deploy.md), or --bind 127.0.0.1 "
        "for a local run, or --insecure to accept the risk")
