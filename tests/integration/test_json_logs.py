"""With JSON logs, every line a process writes is one JSON object: a whole federation's output (coordinator
under mTLS poked by a plaintext scanner, clients loading a model and training) goes through a JSON parser,
and the jq recipes of docs/deploy.md run on it."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tests_support import make_image_folder

from pfeddc.common.logs import Event
from pfeddc.server.ops import certs

from .conftest import Federation
from .debian import ensure

pytestmark = pytest.mark.integration  # starts real processes
DOCS = Path(__file__).resolve().parents[2] / "docs" / "deploy.md"


def jq_recipes() -> list[str]:
    """Every `jq -c '<filter>'` in the operator guide."""
    return re.findall(r"\| jq -c '([^']+)'", DOCS.read_text())


def test_a_whole_federation_logs_only_json_lines_and_the_docs_jq_recipes_work(
        federation: Federation, tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    assert certs.main(["init", "--out", str(creds)]) == 0
    for cid in ("site-0", "site-1"):
        assert certs.main(["client", "--out", str(creds), "--client-id", cid]) == 0
    tls = ["--tls-cert", str(creds / "coordinator.pem"), "--tls-key", str(creds / "coordinator.key"),
           "--tls-client-ca", str(creds / "ca.pem"), "--tokens", str(creds / "tokens.json")]
    server = federation.server("--rounds", "2", "--min-clients", "2", "--batch-size", "8", "--linger", "1", *tls)
    # a scanner (or a kubelet probe on the wrong port) speaks plaintext to the TLS port: gRPC's C-core logs the
    # failed handshake itself, straight to file descriptor 2
    with grpc.insecure_channel(f"127.0.0.1:{federation.port}") as channel, pytest.raises(grpc.RpcError):
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
    clients = []
    for i, log_format in enumerate(("json", "auto")):  # auto: not a terminal, so JSON as well
        cid = f"site-{i}"
        folder = creds / "clients" / cid
        data = make_image_folder(tmp_path / f"data-{i}", ["red", "green"], 6, seed=i)
        clients.append(federation.client(
            cid, data, "--log-format", log_format, "--tls-ca", str(folder / "ca.pem"), "--tls-cert",
            str(folder / "client.pem"), "--tls-key", str(folder / "client.key"),
            "--token", (folder / "token").read_text().strip()))
    for client in clients:
        assert client.wait(180) == 0, client.tail()
    server.wait_event(Event.FEDERATION_FINISHED, 30)
    assert server.wait(30) == 0  # --linger 1 after the last round

    logs = [server.log_path] + [c.log_path for c in clients]
    events = []
    for path in logs:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                pytest.fail(f"{path.name}:{number} is not JSON: {line[:200]!r}")
            assert isinstance(record, dict) and "event" in record, f"{path.name}:{number}: {line[:200]}"
            events.append(record)
    core = [e for e in events if e.get("source") == "grpc-core"]
    # the failed handshake is an operator's concern: a caller_refused warning that says what it means
    assert any(e["event"] == Event.CALLER_REFUSED and e["level"] == "warning" and "Handshake failed" in e["message"]
               and e["reason"] for e in core), core
    assert sum(e["event"] == Event.ROUND_COMPLETED for e in events) == 2

    jq = ensure("jq")
    recipes = jq_recipes()
    assert len(recipes) >= 3, recipes
    everything = "".join(path.read_text() for path in logs)
    for recipe in recipes:
        out = subprocess.run([jq, "-c", recipe], input=everything, capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, f"jq {recipe!r}: {out.stderr}"
        lines = out.stdout.splitlines()
        assert lines, f"jq {recipe!r} printed nothing on a finished federation's logs"
        assert all(json.loads(line) is not None for line in lines)
