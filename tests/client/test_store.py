"""The client's state dir: a crash mid-write leaves no temporary file behind once the client starts again."""

from __future__ import annotations

import os
from pathlib import Path
from unittest import mock

import pytest

from pfeddc.client.store import ClientStore, StateError
from pfeddc.common import serde


def test_store_removes_the_temp_file_of_an_interrupted_write_on_start(tmp_path: Path) -> None:
    with mock.patch.object(os, "replace", side_effect=KeyboardInterrupt), pytest.raises(KeyboardInterrupt):
        serde.atomic_write(tmp_path / "meta.json", b"{}")  # the write's own cleanup runs: nothing is left
    assert not list(tmp_path.glob(".*.tmp"))
    stale = tmp_path / ".meta.json.k2j3.tmp"  # what a SIGKILL between write and rename leaves
    stale.write_bytes(b"{half")
    ClientStore(tmp_path)
    assert not stale.exists()


def test_client_id_generated_on_a_first_run_gives_way_to_a_named_one_until_it_trained(tmp_path: Path) -> None:
    """A first run without --client-id (or certificate) must not tie the state dir to a random id for good."""
    import numpy as np

    from pfeddc.client.store import RoundRecord

    store = ClientStore(tmp_path / "s")
    generated = store.client_id(None)
    assert generated.startswith("client-")
    assert store.client_id("hospital-a", "the common name of --tls-cert client.pem") == "hospital-a"
    assert ClientStore(tmp_path / "s").client_id(None) == "hospital-a"
    zeros = {"x": np.zeros(2, np.float32)}
    store.save_round(1, zeros, zeros, RoundRecord(1, True))
    with pytest.raises(Exception, match=r"belongs to client 'hospital-a' .* not 'hospital-b' \(from --client-id\): "
                                        r"give 'hospital-b' a state dir of its own"):
        store.client_id("hospital-b")


def test_store_refuses_a_client_id_the_coordinator_would_refuse(tmp_path: Path) -> None:
    """The same rule as the coordinator's (common/ids.py), checked before anything is written."""
    store = ClientStore(tmp_path / "state")
    with pytest.raises(StateError, match=r"--client-id: client_id '\.\./x' must be"):
        store.client_id("../x", "--client-id")
    assert not (tmp_path / "state" / "client_id").exists()
    assert store.client_id("site-a", "--client-id") == "site-a"
