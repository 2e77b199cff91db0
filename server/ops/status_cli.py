"""`pfeddc-server status`: ask a running coordinator for its status over the Admin RPC and print it.

  pfeddc-server status --server HOST:PORT [--tls-ca CA --tls-cert ADMIN.pem --tls-key ADMIN.key] [--token-file F]
  pfeddc-server status ... --json

A coordinator that authenticates clients wants an admin credential (`pfeddc-certs admin --name NAME`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import grpc

from ...common import wire
from ...common.envflags import add_version, apply_env_defaults
from ...common.lifecycle import ExitCode
from ...common.messages import Code
from ...common.proto import admin_pb2 as admin_pb
from ...common.proto import admin_pb2_grpc as admin_grpc
from ...common.tlsprobe import diagnose, network_hint
from ...common.transport import TlsFiles, open_channel, read_token
from . import admin_wire
from .status_table import render_table


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pfeddc-server status", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="The round, its deadline, sampled and received updates, and every client with its state, "
                    "last request, rounds and last metrics, from a running coordinator.")
    add_version(p)
    p.add_argument("--server", default="127.0.0.1:50051", help="coordinator address HOST:PORT (default: %(default)s)")
    p.add_argument("--tls-ca", type=Path, help="PEM CA that signed the coordinator's certificate (enables TLS)")
    p.add_argument("--tls-cert", type=Path, help="PEM admin certificate (common name admin:<name>) for mTLS")
    p.add_argument("--tls-key", type=Path, help="PEM private key of the admin certificate")
    p.add_argument("--token", help="admin token")
    p.add_argument("--token-file", type=Path, help="file holding the admin token (as pfeddc-certs admin writes it)")
    p.add_argument("--json", action="store_true", help="print the status as one JSON object")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the answer (default: %(default)s)")
    apply_env_defaults(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        token = read_token(args.token, args.token_file)
        tls = TlsFiles(args.tls_ca, args.tls_cert, args.tls_key)
        channel = open_channel(args.server, tls, token)
    except (OSError, ValueError) as exc:
        print(f"pfeddc-server status: error: {exc}", file=sys.stderr)
        return ExitCode.CONFIG
    try:
        with channel:
            reply = admin_grpc.AdminStub(channel).GetStatus(admin_pb.StatusRequest(), timeout=args.timeout)
    except grpc.RpcError as exc:
        code = wire.rpc_code(exc)
        if code == Code.UNAVAILABLE:
            problem = diagnose(args.server, tls)
            if problem:  # a certificate, not the network: configuration
                print(f"pfeddc-server status: error: {problem}", file=sys.stderr)
                return ExitCode.CONFIG
            hint = f" -- {network_hint(args.server)}"
        else:
            hint = ""
        print(f"pfeddc-server status: error: {code}: {wire.rpc_details(exc)}{hint}", file=sys.stderr)
        return ExitCode.UNREACHABLE if code in (Code.UNAVAILABLE, Code.DEADLINE_EXCEEDED) else ExitCode.CONFIG
    status = admin_wire.status_from_proto(reply)
    print(json.dumps(status.to_json(), indent=None) if args.json else render_table(status))
    return ExitCode.OK
