"""Dripping callers: what half-sent requests from strangers cost the coordinator's memory (issue 30).

    python benchmarks/dripping.py                      # the working tree against 39b5d6a... (see --against)
    python benchmarks/dripping.py --against HEAD~3 --streams 10000 --connections 100

A caller that holds credentials it should not (no token, or a token withdrawn from the tokens file; with client
certificates required a stranger is refused at the TLS handshake and opens no stream at all) opens many HTTP/2
streams to SubmitUpdate over a few TLS connections, each sending its headers and the first 4 KB of a message that
declares 60 KB, then waits. The coordinator's resident memory (VmRSS from /proc) is read before, while the
streams are held, and 10 s after the sockets close; and a legitimate client's GetFederation round trip is timed
while they are held. Each tree's coordinator is its own real `pfeddc-server` process (the trees as
benchmarks/compare_trees.py prepares them), in TLS with --tokens and --allow-tokens-only (case "no token"), or
with client certificates too (case "withdrawn token": a valid certificate, its token no longer issued).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events

sys.path.insert(0, str(Path(__file__).resolve().parent))

ROOT = Path(__file__).resolve().parents[1]
PATH = "/pfeddc.v1.Coordinator/SubmitUpdate"
DECLARED, SENT = 60 * 1024, 4 * 1024


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Dripper:
    """`connections` TLS connections holding `streams` SubmitUpdate streams in all, each with its headers and
    SENT of a DECLARED-byte message; the server's answers are read (and counted) as they come."""

    def __init__(self, port: int, ca: Path, cert: tuple[Path, Path] | None, token: str | None,
                 addresses: int = 1) -> None:
        """`addresses`: connections come from this many loopback source addresses (127.0.0.2, .3, ...)."""
        self.port = port
        self.addresses = addresses
        self.context = ssl.create_default_context(cafile=str(ca))
        self.context.set_alpn_protocols(["h2"])
        if cert is not None:
            self.context.load_cert_chain(str(cert[0]), str(cert[1]))
        self.headers = [(":method", "POST"), (":scheme", "https"), (":authority", "localhost"), (":path", PATH),
                        ("content-type", "application/grpc"), ("te", "trailers")]
        if token is not None:
            self.headers.append(("authorization", f"Bearer {token}"))
        self.open: list[tuple[ssl.SSLSocket, h2.connection.H2Connection]] = []
        self.refused = 0  # streams the server ended (trailers or reset) while we held them

    def start(self, connections: int, streams: int) -> None:
        per = [streams // connections + (1 if i < streams % connections else 0) for i in range(connections)]
        for i, count in enumerate(per):
            source = (f"127.0.{(2 + i % self.addresses) // 256}.{(2 + i % self.addresses) % 256}", 0)
            raw = socket.create_connection(("127.0.0.1", self.port), source_address=source)
            sock = self.context.wrap_socket(raw, server_hostname="localhost")
            conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
            conn.initiate_connection()
            sock.sendall(conn.data_to_send())
            self.open.append((sock, conn))
            body = b"\x00" + DECLARED.to_bytes(4, "big") + b"\x00" * (SENT - 5)
            for _ in range(count):
                self._wait_for_capacity(sock, conn)
                sid = conn.get_next_available_stream_id()
                conn.send_headers(sid, self.headers)
                while conn.local_flow_control_window(sid) < len(body):
                    self._pump(sock, conn, 2.0)
                conn.send_data(sid, body)
                sock.sendall(conn.data_to_send())
        for sock, conn in self.open:
            while self._pump(sock, conn, 0.3):
                pass

    def _wait_for_capacity(self, sock: ssl.SSLSocket, conn: h2.connection.H2Connection) -> None:
        while conn.open_outbound_streams >= conn.remote_settings.max_concurrent_streams:
            self._pump(sock, conn, 2.0)

    def _pump(self, sock: ssl.SSLSocket, conn: h2.connection.H2Connection, timeout: float) -> bool:
        """Read what the server sent within `timeout`; False when nothing came."""
        sock.settimeout(timeout)
        try:
            data = sock.recv(1 << 20)
        except (TimeoutError, ssl.SSLError, ConnectionError):
            return False
        if not data:
            return False
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.StreamEnded):
                self.refused += 1
        sock.sendall(conn.data_to_send())
        return True

    def close(self) -> None:
        for sock, _ in self.open:
            sock.close()
        self.open.clear()


def legit_round_trip_ms(port: int, ca: Path, cert: tuple[Path, Path] | None, token: str, env: dict[str, str]
                        ) -> float:
    """A legitimate GetFederation's round trip, timed in a fresh process of the same tree's client code."""
    code = ("import sys, time, grpc; from pfeddc.common.transport import TlsFiles, open_channel; "
            "from pfeddc.common.proto import federation_pb2 as pb, federation_pb2_grpc as g; "
            f"ch = open_channel('localhost:{port}', TlsFiles(ca='{ca}', cert={repr(str(cert[0])) if cert else None}, "
            f"key={repr(str(cert[1])) if cert else None}), '{token}'); s = g.CoordinatorStub(ch); "
            "s.GetFederation(pb.FederationRequest(client_id='site-a'), timeout=10); t = time.monotonic(); "
            "[s.GetFederation(pb.FederationRequest(client_id='site-a'), timeout=10) for _ in range(5)]; "
            "print((time.monotonic() - t) / 5 * 1000)")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    return float(out.stdout.strip()) if out.returncode == 0 else float("nan")


def coordinator(env: dict[str, str], creds: Path, state: Path, certs_required: bool
                ) -> tuple[subprocess.Popen[str], int]:
    flags = ["--bind", "127.0.0.1", "--port", "0", "--state-dir", str(state), "--rounds", "1", "--min-clients", "2",
             "--tls-cert", str(creds / "coordinator.pem"), "--tls-key", str(creds / "coordinator.key"),
             "--tokens", str(creds / "tokens.json"), "--log-format", "json", "--log-level", "info"]
    if certs_required:
        flags += ["--tls-client-ca", str(creds / "ca.pem")]
    proc = subprocess.Popen([sys.executable, "-m", "pfeddc.server.app", *flags], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    for line in proc.stderr:
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if event.get("event") == "server_started":
            return proc, int(event["port"])
    raise RuntimeError("the coordinator did not start")


def measure(env: dict[str, str], creds: Path, workdir: Path, case: str, streams: int, connections: int,
            settle_s: float, addresses: int) -> dict[str, Any]:
    certs = case == "withdrawn token"
    proc, port = coordinator(env, creds, workdir / f"state-{time.monotonic_ns()}", certs)
    try:
        time.sleep(1.0)
        cert = (creds / "clients" / "site-z" / "client.pem", creds / "clients" / "site-z" / "client.key")
        token = (creds / "clients" / "site-a" / "token").read_text().strip()
        legit_cert = (creds / "clients" / "site-a" / "client.pem", creds / "clients" / "site-a" / "client.key")
        before = rss_mb(proc.pid)
        idle_ms = legit_round_trip_ms(port, creds / "ca.pem", legit_cert if certs else None, token, env)
        dripper = Dripper(port, creds / "ca.pem", cert if certs else None,
                          (creds / "withdrawn-token").read_text().strip() if certs else None, addresses)
        started = time.monotonic()
        dripper.start(connections, streams)
        held = rss_mb(proc.pid)
        busy_ms = legit_round_trip_ms(port, creds / "ca.pem", legit_cert if certs else None, token, env)
        refused = dripper.refused
        dripper.close()
        time.sleep(settle_s)
        after = rss_mb(proc.pid)
        return {"case": case, "streams": streams, "connections": connections, "addresses": addresses,
                "rss_before_mb": before,
                "held_mb": held - before, "after_mb": after - before, "refused_streams": refused,
                "open_s": time.monotonic() - started - settle_s, "legit_ms_idle": idle_ms, "legit_ms_held": busy_ms}
    finally:
        proc.kill()
        proc.wait()


def credentials(workdir: Path) -> Path:
    """A CA, the coordinator's certificate, site-a (token issued), site-z (a valid certificate whose token was
    withdrawn from tokens.json)."""
    from pfeddc.server.ops.certs import main as certs

    creds = workdir / "creds"
    certs(["init", "--out", str(creds), "--host", "localhost"])
    certs(["client", "--out", str(creds), "--client-id", "site-a"])
    certs(["client", "--out", str(creds), "--client-id", "site-z"])
    tokens = json.loads((creds / "tokens.json").read_text())
    (creds / "withdrawn-token").write_text((creds / "clients" / "site-z" / "token").read_text())
    tokens.pop("site-z")
    (creds / "tokens.json").write_text(json.dumps(tokens))
    return creds


def main(argv: list[str] | None = None) -> int:
    import compare_trees

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--against", default="9c61bbe~1", help="the tree to compare with (default: %(default)s, the "
                                                         "commit before the header check)")
    p.add_argument("--streams", type=int, default=10_000)
    p.add_argument("--connections", type=int, default=20)
    p.add_argument("--settle", type=float, default=60.0, help="seconds after the sockets close (default: 60)")
    p.add_argument("--addresses", default="1,100", help="source addresses the connections come from, a comma "
                                                        "list of cases (default: %(default)s)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "dripping.md")
    args = p.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="pfeddc-drip-"))
    creds = credentials(workdir)
    rows = []
    with compare_trees.worktree(args.against, workdir) as base:
        trees = [compare_trees.tree("working tree", ROOT, workdir),
                 compare_trees.tree(f"{args.against}", base, workdir)]
        for addresses in (int(a) for a in args.addresses.split(",")):
            for case in ("no token", "withdrawn token"):
                for t in trees:
                    r = measure(t.env, creds, workdir, case, args.streams, max(args.connections, addresses),
                                args.settle, addresses)
                    rows.append({"tree": t.label, **r})
                    print(json.dumps(rows[-1]), flush=True)
    lines = [f"Recorded on {platform.machine()} with {os.cpu_count()} CPU cores, {platform.python_version()}; "
             f"{args.streams} streams over {args.connections} TLS connections (or one per address), each {SENT} B "
             f"of a {DECLARED} B SubmitUpdate; memory {args.settle:g} s after the sockets close. "
             "`python benchmarks/dripping.py`.", "",
             "| case | source addresses | tree | coordinator RSS before (MB) | + while held (MB) | "
             "+ after they leave (MB) | "
             "streams ended by the coordinator while held | legit round trip idle / while held (ms) |",
             "|---|---:|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['case']} | {r['addresses']} | {r['tree']} | {r['rss_before_mb']:.0f} | "
                     f"{r['held_mb']:+.0f} | "
                     f"{r['after_mb']:+.0f} | {r['refused_streams']} | {r['legit_ms_idle']:.1f} / "
                     f"{r['legit_ms_held']:.1f} |")
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
