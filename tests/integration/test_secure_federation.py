"""A secure federation of real client processes: the coordinator commits the weighted FedAvg of what the sites
sent, having seen only masked vectors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pfeddc.common import serde
from pfeddc.common.logs import Event
from pfeddc.server.checkpoint import CHECKPOINT_FILE

from .conftest import Federation
from .test_federation import client_data

pytestmark = pytest.mark.integration  # starts real processes


def test_secure_federation_commits_the_weighted_mean_of_what_real_clients_sent(federation: Federation,
                                                                               tmp_path: Path) -> None:
    server = federation.server("--rounds", "2", "--min-clients", "3", "--batch-size", "8", "--secure-aggregation",
                               "--secagg-stage-timeout", "20")
    clients = [federation.client(f"site-{i}", d) for i, d in enumerate(client_data(tmp_path, 3))]
    for c in clients:
        assert c.wait(180) == 0, "".join(c.lines[-30:])
    server.wait_event(Event.FEDERATION_FINISHED, 30)
    final = serde.load_file(tmp_path / "coordinator" / CHECKPOINT_FILE)
    sent, weights = [], []
    for i in range(3):
        history = [json.loads(x) for x in (tmp_path / f"state-site-{i}" / "history.jsonl").read_text().splitlines()]
        assert [h["round"] for h in history] == [1, 2] and all(h["accepted"] for h in history), history
        sent.append(serde.load_file(tmp_path / f"state-site-{i}" / "global.safetensors"))
        weights.append(history[-1]["num_examples"])
    for name, value in final.items():  # the masked sum, unmasked and divided, is the plain FedAvg
        expected = sum(w * s[name].astype(np.float64) for s, w in zip(sent, weights, strict=True)) / sum(weights)
        np.testing.assert_allclose(value, expected, rtol=1e-5, atol=1e-6)
    rounds = [json.loads(x) for x in (tmp_path / "coordinator" / "rounds.jsonl").read_text().splitlines()]
    assert [r["aggregator"] for r in rounds] == ["secagg-fedavg"] * 2
    closed = server.find(Event.SECAGG_STAGE_CLOSED)
    assert len(closed) == 8 and all(e["answered"] == 3 and not e["failure"] for e in closed)
