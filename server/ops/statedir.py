"""Who owns a --state-dir, and whether its federation may go on: the lock and the aborted marker.

Two coordinators on one state dir (on two ports, or two pods on one volume) would both resume the same
checkpoint and split the clients: the first holds an exclusive `flock` on `coordinator.lock` for its whole
life (the kernel releases it when the process ends, however it ends), and a second one stops with exit 2.

A federation that aborted (a round failed more than --max-retries times, exit 4) leaves `aborted.json`: a
restart (a Deployment's, or an operator's) must not quietly retry the round the clients already gave up on.
The coordinator refuses to start on it (exit 2) unless told `--resume-aborted` (retry that round, after fixing
the cause) or `--fresh` (start over).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from pathlib import Path
from typing import Any

from ...common.serde import atomic_write

LOCK_FILE = "coordinator.lock"
ABORTED_FILE = "aborted.json"


class StateDirBusy(ValueError):
    """Another coordinator holds this state dir (a configuration error: exit 2)."""


class StateDirLock:
    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> StateDirLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StateDirBusy(f"another coordinator (pid {holder}) is using --state-dir {self.path.parent}: two "
                               "would resume the same checkpoint and split the clients. Stop it, or give this one "
                               "another --state-dir") from None
        # the lock is the open file, not its content: the pid is written in place, for the message above only
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
                os.close(self._fd)
            self._fd = None


def mark_aborted(state_dir: Path, round_: int, reason: str) -> None:
    record = {"round": round_, "reason": reason, "time": round(time.time(), 3)}
    atomic_write(Path(state_dir) / ABORTED_FILE, (json.dumps(record) + "\n").encode())


def check_aborted(state_dir: Path, resume: bool, fresh: bool) -> dict[str, Any] | None:
    """The aborted federation's record when the coordinator may go on (and the marker is cleared), None when
    there is none; refuses (ValueError) when it may not."""
    path = Path(state_dir) / ABORTED_FILE
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        record = {}
    if not (resume or fresh):
        round_ = record.get("round", "?")
        why = record.get("reason", "see its federation_aborted event")
        raise ValueError(f"the federation in {state_dir} aborted at round {round_} ({why}). Fix the cause (its "
                         "client_failed_round events say which clients failed and why), then start with "
                         "--resume-aborted to retry that round, or with --fresh to start a new federation")
    path.unlink()
    return record
