"""Whole federations of real processes on loopback: rounds, FedAvg, crashes and restarts."""

from __future__ import annotations

import csv
import io
import json
import signal
from pathlib import Path

import numpy as np
import pytest
from tests_support import make_image_folder

from pfeddc.client.app import main
from pfeddc.common import serde
from pfeddc.common.logs import Event
from pfeddc.server.ops.checkpoint import CHECKPOINT_FILE

from .conftest import Federation

CLASSES = ["red", "green", "blue"]

pytestmark = pytest.mark.integration  # starts real processes


def client_data(tmp: Path, n: int) -> list[Path]:
    return [make_image_folder(tmp / f"data-{i}", CLASSES, 6 + 2 * i, seed=i, split=i == 0) for i in range(n)]


def assert_final_is_weighted_mean_of_what_was_sent(tmp: Path, sites: int, atol: float) -> dict[str, np.ndarray]:
    """Every site's two rounds were accepted, and the coordinator's final global is the mean of what the sites
    sent in the last round, weighted by their counts; returns that global."""
    final = serde.load_file(tmp / "coordinator" / CHECKPOINT_FILE)
    sent, weights = [], []
    for i in range(sites):
        history = [json.loads(x) for x in (tmp / f"state-site-{i}" / "history.jsonl").read_text().splitlines()]
        assert [h["round"] for h in history] == [1, 2] and all(h["accepted"] for h in history), history
        sent.append(serde.load_file(tmp / f"state-site-{i}" / "global.safetensors"))
        weights.append(history[-1]["num_examples"])
    for name, value in final.items():
        expected = sum(w * s[name].astype(np.float64) for s, w in zip(sent, weights, strict=True)) / sum(weights)
        np.testing.assert_allclose(value, expected, rtol=1e-5, atol=atol)
    return final


def test_three_clients_two_rounds_global_is_weighted_mean(
    federation: Federation, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = federation.server("--rounds", "2", "--min-clients", "3", "--batch-size", "8")
    data = client_data(tmp_path, 3)
    clients = [federation.client(f"site-{i}", d) for i, d in enumerate(data)]
    for c in clients:
        assert c.wait(120) == 0, "".join(c.lines[-30:])
    server.wait_event(Event.FEDERATION_FINISHED, 30)
    # the coordinator's final global prompts = FedAvg of what the clients sent in round 2
    final = assert_final_is_weighted_mean_of_what_was_sent(tmp_path, 3, atol=1e-7)
    # the class list was gathered from the sites' Joins; the personal part stayed on each client, its own
    assert list(server.wait_event(Event.CLASSES_AGREED, 5)["classes"]) == sorted(CLASSES)
    locals_ = [serde.load_file(tmp_path / f"state-site-{i}" / "local.safetensors") for i in range(3)]
    assert "head.rows.local" in locals_[0] and "head.rows.local" not in final
    counts = [json.loads((tmp_path / f"state-site-{i}" / "history.jsonl").read_text().splitlines()[-1])["num_examples"]
              for i in range(3)]
    assert [float(v["head.site_counts.local"].sum()) for v in locals_] == counts  # its own training images
    assert not any(k.endswith(".local") or k.startswith("fusion") for k in final)

    # the personalized model works offline, from the state dir alone
    state = str(tmp_path / "state-site-1")
    assert main(["evaluate", "--state-dir", state, "--data", str(data[1]), "--log-format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["num_examples"] == 3 * 8 and 0.0 <= report["accuracy"] <= 1.0
    assert main(["predict", "--state-dir", state, str(data[1] / "red"), "--log-format", "json"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 8 and {r["class"] for r in rows} <= set(CLASSES)
    assert all(0 < float(r["probability"]) <= 1 for r in rows)


def test_client_killed_mid_round_resumes_from_its_state(federation: Federation, tmp_path: Path) -> None:
    federation.server("--rounds", "3", "--min-clients", "2", "--batch-size", "4", "--method", "pfeddc-noproto")
    a_data, b_data = client_data(tmp_path, 2)
    a = federation.client("site-a", a_data, "--local-epochs", "2")
    b = federation.client("site-b", b_data, "--local-epochs", "2")
    a.wait_event(Event.ROUND_DONE, 90)  # a finished round 1 and saved its state
    a.wait_event(Event.ROUND_TRAINING, 60, count=2)  # a is inside round 2
    a.kill()
    state = tmp_path / "state-site-a"
    saved_local = serde.load_file(state / "local.safetensors")
    saved_round = json.loads((state / "meta.json").read_text())["last_round"]
    client_id = (state / "client_id").read_text()

    a2 = federation.client("site-a", a_data, "--local-epochs", "2")
    restored = a2.wait_event(Event.LOCAL_STATE_RESTORED, 60)
    assert restored["round"] == saved_round and (state / "client_id").read_text() == client_id
    assert a2.wait(120) == 0 and b.wait(120) == 0
    history = [json.loads(x)["round"] for x in (state / "history.jsonl").read_text().splitlines()]
    assert history[-1] == 3
    assert not np.array_equal(serde.load_file(state / "local.safetensors")["text.local"], saved_local["text.local"])


def test_coordinator_restarted_mid_run_clients_rejoin_and_finish(federation: Federation, tmp_path: Path) -> None:
    server = federation.server("--rounds", "3", "--min-clients", "2", "--batch-size", "8")
    port = federation.port
    data = client_data(tmp_path, 2)
    clients = [federation.client(f"site-{i}", d, "--max-retries", "0") for i, d in enumerate(data)]
    server.wait_event(Event.ROUND_COMPLETED, 90)
    server.popen.send_signal(signal.SIGTERM)
    assert server.wait(30) == 128 + signal.SIGTERM  # stopped before the federation finished
    # down long enough that gRPC's own retries give up and the clients' backoff takes over
    clients[0].wait_event(Event.COORDINATOR_UNREACHABLE, 30)
    server = federation.server("--rounds", "3", "--min-clients", "2", "--batch-size", "8", port=port)
    server.wait_event(Event.FEDERATION_RESUMED, 10)
    for c in clients:
        assert c.wait(150) == 0, "".join(c.lines[-30:])
    server.wait_event(Event.FEDERATION_FINISHED, 30)
    resumed_rounds = [e["round"] for e in server.find(Event.ROUND_COMPLETED)]
    assert resumed_rounds and resumed_rounds[-1] == 3


def test_sigterm_stops_a_client_cleanly_with_its_state_saved(federation: Federation, tmp_path: Path) -> None:
    federation.server("--rounds", "5", "--min-clients", "1", "--batch-size", "2", "--method", "pfeddc-noproto")
    (data,) = client_data(tmp_path, 1)
    client = federation.client("site-t", data, "--local-epochs", "50")
    client.wait_event(Event.ROUND_TRAINING, 60)
    client.popen.send_signal(signal.SIGTERM)
    assert client.wait(30) == 128 + signal.SIGTERM
    client.wait_event(Event.CLIENT_STOPPED, 1)
    state = tmp_path / "state-site-t"
    assert (state / "client_id").read_text().strip() == "site-t"
    assert json.loads((state / "meta.json").read_text())["classnames"] == sorted(CLASSES)


def test_diverging_client_keeps_its_last_good_state_and_sends_nothing(federation: Federation, tmp_path: Path) -> None:
    server = federation.server("--rounds", "2", "--min-clients", "1", "--round-timeout", "600", "--method",
                               "pfeddc-noproto")
    (data,) = client_data(tmp_path, 1)
    client = federation.client("site-x", data, "--lr", "1e30")
    diverged = client.wait_event(Event.TRAINING_DIVERGED, 60)["round"]  # huge steps overflow within a round or two
    client.kill()
    local = serde.load_file(tmp_path / "state-site-x" / "local.safetensors")
    assert all(np.isfinite(v).all() for v in local.values())
    # its only client sent nothing for that round, so the round never closed (update_accepted is a debug event)
    assert diverged not in [e["round"] for e in server.find(Event.ROUND_COMPLETED)]
