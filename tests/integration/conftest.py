"""Real processes on loopback: a pfeddc-server and pfeddc-client daemons on tiny models and generated images."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests_support import GENTLE_RATES

from pfeddc.client.sim.processes import LoggedProcess
from pfeddc.common.logs import Event

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


class Federation:
    def __init__(self, tmp: Path, model_dir: Path) -> None:
        self.tmp, self.model_dir = tmp, model_dir
        self.procs: list[LoggedProcess] = []
        self.port = 0

    def server(self, *flags: str, state_dir: Path | None = None, port: int = 0) -> LoggedProcess:
        """A coordinator on the tiny model, at gentle learning rates unless `flags` set others."""
        argv = [sys.executable, "-m", "pfeddc.server.app", "--bind", "127.0.0.1", "--port", str(port),
                "--state-dir", str(state_dir or self.tmp / "coordinator"), "--model", str(self.model_dir),
                "--log-format", "json", "--poll-interval", "0.2", "--linger", "5", *GENTLE_RATES, *flags]
        proc = LoggedProcess(argv, self.tmp / "server.log", ENV)
        self.procs.append(proc)
        self.port = proc.wait_event(Event.SERVER_STARTED, 30)["port"]
        return proc

    def client(self, name: str, data: Path, *flags: str) -> LoggedProcess:
        argv = [sys.executable, "-m", "pfeddc.client.app", "--data", str(data), "--server",
                f"127.0.0.1:{self.port}", "--state-dir", str(self.tmp / f"state-{name}"), "--client-id", name,
                "--log-format", "json", "--no-progress", *flags]
        proc = LoggedProcess(argv, self.tmp / f"client-{name}.log", ENV)
        self.procs.append(proc)
        return proc


@pytest.fixture
def federation(tmp_path: Path, tiny_model_dir: Path) -> Iterator[Federation]:
    fed = Federation(tmp_path, tiny_model_dir)
    yield fed
    for proc in fed.procs:
        proc.kill()
