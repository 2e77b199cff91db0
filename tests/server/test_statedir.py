"""One coordinator per state dir, and no quiet resume of an aborted federation."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests_support import StartCoordinator

from pfeddc.server.ops.statedir import ABORTED_FILE, StateDirBusy, StateDirLock, check_aborted, mark_aborted

FLAGS = ("--rounds", "2", "--method", "promptfl", "--text-ctx", "4")


def test_state_dir_lock_refuses_a_second_holder_until_the_first_releases(tmp_path: Path) -> None:
    first = StateDirLock(tmp_path / "state").acquire()
    with pytest.raises(StateDirBusy, match=r"another coordinator \(pid \d+\) is using --state-dir"):
        StateDirLock(tmp_path / "state").acquire()
    first.release()
    StateDirLock(tmp_path / "state").acquire().release()


def test_second_coordinator_on_one_state_dir_is_refused_on_another_port(coordinator: StartCoordinator,
                                                                       tmp_path: Path) -> None:
    running = coordinator(*FLAGS, state_dir=tmp_path / "shared")
    with pytest.raises(ValueError, match="is using --state-dir"):
        coordinator(*FLAGS, state_dir=tmp_path / "shared")
    running.stop(0)
    coordinator(*FLAGS, state_dir=tmp_path / "shared")  # the lock went with the first one


def test_aborted_marker_refuses_a_restart_unless_resumed_or_fresh(tmp_path: Path) -> None:
    assert check_aborted(tmp_path, resume=False, fresh=False) is None
    mark_aborted(tmp_path, 3, "round 3 failed 6 times; last: only failures")
    with pytest.raises(ValueError, match=r"aborted at round 3 \(round 3 failed 6 times.*--resume-aborted"):
        check_aborted(tmp_path, resume=False, fresh=False)
    record = check_aborted(tmp_path, resume=True, fresh=False)
    assert record and record["round"] == 3 and not (tmp_path / ABORTED_FILE).exists()
    mark_aborted(tmp_path, 3, "again")
    assert check_aborted(tmp_path, resume=False, fresh=True) is not None
