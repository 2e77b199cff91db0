"""A secure federation of real client processes: the coordinator commits the weighted FedAvg of what the sites
sent, having seen only masked vectors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pfeddc.common.logs import Event
from pfeddc.server.ops import certs

from .conftest import Federation
from .test_federation import assert_final_is_weighted_mean_of_what_was_sent, client_data

pytestmark = pytest.mark.integration  # starts real processes


def test_secure_federation_commits_the_weighted_mean_of_what_real_clients_sent(federation: Federation,
                                                                               tmp_path: Path) -> None:
    """Without client certificates every advert and check is signed with the key each site bound at Join, and
    each site pins its peers' keys in its state dir: the ones `pfeddc-client signing-key` prints."""
    keys = {}
    for i in range(3):  # what each site's operator would hand the others before the first round
        printed = subprocess.run([sys.executable, "-m", "pfeddc.client.app", "signing-key", "--state-dir",
                                  str(tmp_path / f"state-site-{i}"), "--client-id", f"site-{i}"],
                                 capture_output=True, text=True, check=True, timeout=60)
        keys.update(json.loads(printed.stdout))
    server = federation.server("--rounds", "2", "--min-clients", "3", "--batch-size", "8", "--secure-aggregation",
                               "--secagg-stage-timeout", "20")
    clients = [federation.client(f"site-{i}", d) for i, d in enumerate(client_data(tmp_path, 3))]
    for c in clients:
        assert c.wait(180) == 0, "".join(c.lines[-30:])
    server.wait_event(Event.FEDERATION_FINISHED, 30)
    assert_final_is_weighted_mean_of_what_was_sent(tmp_path, 3, atol=1e-6)  # the unmasked sum is plain FedAvg
    rounds = [json.loads(x) for x in (tmp_path / "coordinator" / "rounds.jsonl").read_text().splitlines()]
    assert [r["aggregator"] for r in rounds] == ["secagg-fedavg"] * 2
    closed = server.find(Event.SECAGG_STAGE_CLOSED)
    assert len(closed) == 10 and all(e["signed"] and e["answered"] == 3 and not e["failure"] for e in closed)
    for i in range(3):
        assert json.loads((tmp_path / f"state-site-{i}" / "peer_keys.json").read_text()) == keys


def test_secure_federation_over_mtls_signs_every_advert_and_check(federation: Federation, tmp_path: Path) -> None:
    """With client certificates the coordinator requires each site's advert and check signed by its certificate,
    and each client requires its peers' (common/secagg/identity.py): the round commits the same weighted mean. Run
    with the head's residual (--method pfeddc, which a secure federation leaves out by default): its rows go
    through the masks and the per-row clips end to end."""
    creds = tmp_path / "creds"
    assert certs.main(["init", "--out", str(creds)]) == 0
    for i in range(3):
        assert certs.main(["client", "--out", str(creds), "--client-id", f"site-{i}"]) == 0
    server = federation.server("--rounds", "2", "--min-clients", "3", "--batch-size", "8", "--secure-aggregation",
                               "--method", "pfeddc", "--secagg-stage-timeout", "20",
                               "--tls-cert", str(creds / "coordinator.pem"),
                               "--tls-key", str(creds / "coordinator.key"), "--tls-client-ca", str(creds / "ca.pem"))
    clients = []
    for i, d in enumerate(client_data(tmp_path, 3)):
        folder = creds / "clients" / f"site-{i}"
        clients.append(federation.client(f"site-{i}", d, "--tls-ca", str(folder / "ca.pem"), "--tls-cert",
                                         str(folder / "client.pem"), "--tls-key", str(folder / "client.key")))
    for c in clients:
        assert c.wait(180) == 0, "".join(c.lines[-30:])
    server.wait_event(Event.FEDERATION_FINISHED, 30)
    assert_final_is_weighted_mean_of_what_was_sent(tmp_path, 3, atol=1e-6)
    assert server.find(Event.SECURE_RESIDUAL_UNBOUNDED)  # the residual was asked for, and the operator told
    closed = server.find(Event.SECAGG_STAGE_CLOSED)
    assert len(closed) == 10 and all(e["signed"] and e["answered"] == 3 and not e["failure"] for e in closed)
