"""The operator's view over real gRPC and real HTTP: status RPC and CLI, admin credentials, Prometheus, the page."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from tests_support import StartCoordinator

from pfeddc.client.connection import Backoff, Connection, global_tensors
from pfeddc.common import serde
from pfeddc.common.messages import Metrics
from pfeddc.common.transport import TlsFiles
from pfeddc.server.app import RunningServer
from pfeddc.server.ops import certs, status_cli
from pfeddc.server.ops.status_doc import ClientState, Phase

FLAGS = ("--rounds", "3", "--min-clients", "2", "--method", "promptfl", "--text-ctx", "4", "--metrics-port", "0")


def connect(port: int, cid: str, tls: TlsFiles | None = None, token: str | None = None) -> Connection:
    return Connection(f"localhost:{port}", cid, tls, token, Backoff(0.05, 0.2, 2), rpc_timeout_s=10)


def submit(conn: Connection, accuracy: float, examples: int) -> None:
    task = conn.task()
    update = {k: np.full_like(v, accuracy) for k, v in global_tensors(task).items()}
    conn.submit(task.round, update, examples, Metrics(train_loss=1 - accuracy, accuracy_before=accuracy / 2,
                                                      accuracy_after=accuracy, num_test_examples=10))


def scrape(server: RunningServer) -> dict[str, float]:
    assert server.side and server.side.metrics_port
    text = urllib.request.urlopen(f"http://127.0.0.1:{server.side.metrics_port}/metrics", timeout=10).read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            out[sample.name + (f"{{{labels}}}" if labels else "")] = sample.value
    return out


def get_json(server: RunningServer, path: str) -> object:
    assert server.side and server.side.metrics_port
    with urllib.request.urlopen(f"http://127.0.0.1:{server.side.metrics_port}{path}", timeout=10) as reply:
        assert reply.headers["Content-Type"] == "application/json"
        return json.loads(reply.read())


def status_cli_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    assert status_cli.main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_status_follows_a_round_over_grpc_and_http(coordinator: StartCoordinator,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    server = coordinator(*FLAGS)
    target = ("--server", f"127.0.0.1:{server.port}")
    assert status_cli_json(capsys, *target)["phase"] == Phase.WAITING
    a, b = connect(server.port, "site-a"), connect(server.port, "site-b")
    spec = a.federation().spec
    a.join(10, spec)
    b.join(30, spec)
    submit(a, 0.6, 10)
    s = status_cli_json(capsys, *target)
    assert (s["phase"], s["round"], s["sampled"], s["received"]) == (Phase.TRAINING, 1, 2, 1)
    assert 0 < s["deadline_s"] <= 600
    states = {c["client_id"]: c["state"] for c in s["clients"]}
    assert states == {"site-a": ClientState.SUBMITTED, "site-b": ClientState.TRAINING}
    submit(b, 0.8, 30)  # round 1 closes

    s = status_cli_json(capsys, *target)
    assert (s["round"], s["rounds_completed"], s["received"]) == (2, 1, 0)
    site_b = next(c for c in s["clients"] if c["client_id"] == "site-b")
    assert site_b["rounds_participated"] == 1 and site_b["last_round"] == 1
    assert site_b["last_metrics"]["accuracy_after"] == pytest.approx(0.8) and site_b["last_seen_s"] < 30
    assert status_cli.main(list(target)) == 0
    table = capsys.readouterr().out
    assert "round 2 of 3: 0 of 2 updates received" in table
    assert "site-b" in table and "80.0%" in table and "training" in table

    # the page's JSON is the same snapshot, and rounds.jsonl feeds the curves with per-site figures
    web = get_json(server, "/api/status")
    assert isinstance(web, dict) and web["round"] == 2 and len(web["clients"]) == 2
    rounds = get_json(server, "/api/rounds")
    assert isinstance(rounds, list) and rounds[0]["round"] == 1
    assert rounds[0]["accuracy_after"] == pytest.approx((0.6 * 10 + 0.8 * 10) / 20)
    assert rounds[0]["sites"]["site-a"]["accuracy_after"] == pytest.approx(0.6)


def test_metrics_count_rounds_updates_refusals_and_bytes(coordinator: StartCoordinator) -> None:
    server = coordinator(*FLAGS)
    a, b = connect(server.port, "site-a"), connect(server.port, "site-b")
    spec = a.federation().spec
    a.join(10, spec)
    b.join(10, spec)
    before = scrape(server)
    assert before["pfeddc_clients_active"] == 2 and before["pfeddc_rounds_completed"] == 0
    # the refused counter has its series before the first refusal (rate() and alerts need the zero)
    assert before["pfeddc_updates_refused_total{reason=FAILED_PRECONDITION}"] == 0
    assert before["pfeddc_updates_refused_total{reason=PERMISSION_DENIED}"] == 0
    assert before["pfeddc_clients{state=training}"] == 2
    submit(a, 0.5, 10)
    submit(b, 0.5, 10)
    with pytest.raises(Exception, match="not sampled|stale"):
        b.submit(1, {"text.global": np.zeros((4, 128), np.float32)}, 10, Metrics(num_test_examples=1))
    # a refusal is counted as the aborted handler unwinds, which may be just after the caller has its status
    refused = "pfeddc_updates_refused_total{reason=FAILED_PRECONDITION}"
    deadline = time.monotonic() + 5
    while scrape(server)[refused] < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    m = scrape(server)
    assert m["pfeddc_rounds_completed"] == 1 and m["pfeddc_round"] == 2
    assert m["pfeddc_updates_accepted_total"] == 2
    assert m["pfeddc_updates_refused_total{reason=FAILED_PRECONDITION}"] == 1
    assert m["pfeddc_round_duration_seconds_count"] == 1
    assert m["pfeddc_checkpoint_duration_seconds_count"] >= 1
    payload = len(serde.encode(global_tensors(a.task())))
    m = scrape(server)
    assert m["pfeddc_received_bytes_total{method=SubmitUpdate}"] > 2 * payload
    assert m["pfeddc_sent_bytes_total{method=GetTask}"] > 2 * payload
    assert m["pfeddc_requests_total{code=OK,method=Join}"] == 2
    assert m["process_resident_memory_bytes"] > 0


def test_page_is_self_contained_with_a_strict_policy(coordinator: StartCoordinator) -> None:
    server = coordinator(*FLAGS)
    assert server.side and server.side.metrics_port
    with urllib.request.urlopen(f"http://127.0.0.1:{server.side.metrics_port}/", timeout=10) as reply:
        page = reply.read().decode()
        policy = reply.headers["Content-Security-Policy"]
    assert "<script>" in page and "src=" not in page and "http://" not in page.replace("http://www.w3.org", "")
    assert "default-src 'none'" in policy and "script-src 'sha256-" in policy and "connect-src 'self'" in policy
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(f"http://127.0.0.1:{server.side.metrics_port}/nothing", timeout=10)
    assert missing.value.code == 404


@pytest.fixture(scope="module")
def creds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("creds")
    assert certs.main(["init", "--out", str(out)]) == 0
    assert certs.main(["client", "--out", str(out), "--client-id", "site-a"]) == 0
    assert certs.main(["admin", "--out", str(out), "--name", "ops"]) == 0
    return out


def test_status_needs_an_admin_credential_when_auth_is_on(coordinator: StartCoordinator, creds: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    server = coordinator(*FLAGS, "--tls-cert", str(creds / "coordinator.pem"), "--tls-key",
                         str(creds / "coordinator.key"), "--tls-client-ca", str(creds / "ca.pem"),
                         "--tokens", str(creds / "tokens.json"))
    target = ["--server", f"localhost:{server.port}", "--tls-ca", str(creds / "ca.pem")]
    admin = creds / "admins" / "ops"
    client = creds / "clients" / "site-a"
    as_admin = [*target, "--tls-cert", str(admin / "admin.pem"), "--tls-key", str(admin / "admin.key")]
    as_client = [*target, "--tls-cert", str(client / "client.pem"), "--tls-key", str(client / "client.key")]

    assert status_cli.main([*as_client, "--token-file", str(client / "token")]) == 2  # a client's credentials
    err = capsys.readouterr().err
    assert "PERMISSION_DENIED" in err and "admin certificate" in err
    assert status_cli.main([*as_admin, "--token-file", str(client / "token")]) == 2  # a client's token
    assert "not an admin token" in capsys.readouterr().err
    assert status_cli.main(as_admin) == 2  # no token at all
    assert "UNAUTHENTICATED" in capsys.readouterr().err
    assert status_cli.main(target) == 2  # no client certificate: configuration, named, not "unreachable"
    assert "requires a client certificate (" in capsys.readouterr().err
    s = status_cli_json(capsys, *as_admin, "--token-file", str(admin / "token"))
    assert s["phase"] == Phase.WAITING and s["total_rounds"] == 3
    # each refusal is counted under the code the caller got (they were all "UNKNOWN")
    m = scrape(server)
    assert m["pfeddc_requests_total{code=PERMISSION_DENIED,method=GetStatus}"] == 2
    assert m["pfeddc_requests_total{code=UNAUTHENTICATED,method=GetStatus}"] == 1
    assert m["pfeddc_requests_total{code=OK,method=GetStatus}"] == 1
    assert not any("code=UNKNOWN" in key for key in m)
    # and an admin credential cannot take part as a client
    intruder = connect(server.port, "admin:ops", TlsFiles(creds / "ca.pem", admin / "admin.pem", admin / "admin.key"),
                       (admin / "token").read_text().strip())
    with pytest.raises(Exception, match="client_id 'admin:ops' must be 1-128 letters"):
        intruder.join(10, intruder.federation().spec)


def test_status_beyond_loopback_without_credentials_is_never_served(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """--insecure opens the federation to anyone who reaches it; not the list of every client and its metrics."""
    from pfeddc.server.app import build_parser, start

    server = start(build_parser().parse_args(["--rounds", "1", "--method", "promptfl", "--text-ctx", "4", "--port",
                                              "0", "--bind", "0.0.0.0", "--insecure", "--state-dir",
                                              str(tmp_path / "c")]))
    try:
        assert status_cli.main(["--server", f"127.0.0.1:{server.port}"]) == 2
        assert "PERMISSION_DENIED" in capsys.readouterr().err
    finally:
        server.stop(0)
