"""Real processes on loopback: a pfeddc-server and pfeddc-client daemons on tiny models and generated images."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests_support import make_image_folder, make_tiny_model_dir  # noqa: F401

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
class Proc:
    """A child process whose stderr JSON log lines are collected by a reader thread."""

    def __init__(self, argv: list[str], log_path: Path) -> None:
        self.argv, self.log_path = argv, log_path
        self.lines: list[str] = []
        self.events: list[dict] = []
        self.popen = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        with open(self.log_path, "a") as log:
            for line in self.popen.stdout:
                log.write(line)
                self.lines.append(line)
                if line.startswith("{"):
                    with contextlib.suppress(json.JSONDecodeError):
                        self.events.append(json.loads(line))

    def wait_event(self, name: str, timeout: float = 60.0, count: int = 1) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [e for e in self.events if e.get("event") == name]
            if len(found) >= count:
                return found[count - 1]
            if self.popen.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.05)
        tail = "".join(self.lines[-40:])
        raise AssertionError(f"no {name!r} (x{count}) from {self.argv[0]} within {timeout}s:\n{tail}")

    def wait(self, timeout: float = 60.0) -> int:
        code = self.popen.wait(timeout)
        self._reader.join(5)
        return code

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(10)


class Federation:
    def __init__(self, tmp: Path, model_dir: Path) -> None:
        self.tmp, self.model_dir = tmp, model_dir
        self.procs: list[Proc] = []
        self.port = 0

    def server(self, *flags: str, state_dir: Path | None = None, port: int = 0) -> Proc:
        argv = [sys.executable, "-m", "pfeddc.server.app", "--bind", "127.0.0.1", "--port", str(port),
                "--state-dir", str(state_dir or self.tmp / "coordinator"), "--model", str(self.model_dir),
                "--log-format", "json", "--poll-interval", "0.2", "--linger", "5", *flags]
        proc = Proc(argv, self.tmp / "server.log")
        self.procs.append(proc)
        self.port = proc.wait_event("server_started", 30)["port"]
        return proc

    def client(self, name: str, data: Path, *flags: str) -> Proc:
        argv = [sys.executable, "-m", "pfeddc.client.app", "--data", str(data), "--server",
                f"127.0.0.1:{self.port}", "--state-dir", str(self.tmp / f"state-{name}"), "--client-id", name,
                "--log-format", "json", "--no-progress", *flags]
        proc = Proc(argv, self.tmp / f"client-{name}.log")
        self.procs.append(proc)
        return proc


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny-clip"))


@pytest.fixture
def federation(tmp_path: Path, tiny_model_dir: Path) -> Iterator[Federation]:
    fed = Federation(tmp_path, tiny_model_dir)
    yield fed
    for proc in fed.procs:
        proc.kill()
