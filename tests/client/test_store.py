"""The client's state dir: a crash mid-write leaves no temporary file behind once the client starts again."""

from __future__ import annotations

import os
from pathlib import Path
from unittest import mock

import pytest

from pfeddc.client.store import ClientStore
from pfeddc.common import serde


def test_store_removes_the_temp_file_of_an_interrupted_write_on_start(tmp_path: Path) -> None:
    with mock.patch.object(os, "replace", side_effect=KeyboardInterrupt), pytest.raises(KeyboardInterrupt):
        serde.atomic_write(tmp_path / "meta.json", b"{}")  # the write's own cleanup runs: nothing is left
    assert not list(tmp_path.glob(".*.tmp"))
    stale = tmp_path / ".meta.json.k2j3.tmp"  # what a SIGKILL between write and rename leaves
    stale.write_bytes(b"{half")
    ClientStore(tmp_path)
    assert not stale.exists()
