"""Child processes that log JSON lines: start, collect events, wait for one. Used by pfeddc-sim and tests."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def installed_command(name: str) -> str:
    """The path of an installed console script (`pfeddc-server`, ...): beside this Python (its environment's
    bin/), else on PATH. The sim starts the coordinator and clients as a user would, through their commands,
    so it never names another package's modules."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.is_file() else shutil.which(name)
    if found is None:
        raise ValueError(f"{name} is not installed beside {sys.executable} nor on PATH: pip install pfeddc")
    return found


class LoggedProcess:
    """A child process whose combined output goes to `log_path`; JSON lines are parsed into `events`."""

    def __init__(self, argv: list[str], log_path: Path, env: Mapping[str, str] | None = None) -> None:
        self.argv = argv
        self.log_path = Path(log_path)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.lines: list[str] = []
        self.events: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self.popen = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                      env=dict(env) if env is not None else None)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        with open(self.log_path, "a", encoding="utf-8") as log:
            for line in self.popen.stdout:
                log.write(line)
                log.flush()
                with self._cond:
                    self.lines.append(line)
                    if line.startswith("{"):
                        with contextlib.suppress(json.JSONDecodeError):
                            self.events.append(json.loads(line))
                    self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def find(self, name: str) -> list[dict[str, Any]]:
        with self._cond:
            return [e for e in self.events if e.get("event") == name]

    def wait_event(self, name: str, timeout: float = 60.0, count: int = 1) -> dict[str, Any]:
        """The `count`-th event called `name`; raises with the log's tail if it does not come in time."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [e for e in self.events if e.get("event") == name]
                if len(found) >= count:
                    return found[count - 1]
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (not self._reader.is_alive() and self.popen.poll() is not None):
                    break
                self._cond.wait(min(remaining, 0.5))
        raise TimeoutError(f"no {name!r} (x{count}) from {' '.join(self.argv[:4])} within {timeout}s; "
                           f"log tail:\n{self.tail()}")

    def tail(self, n: int = 30) -> str:
        with self._cond:
            return "".join(self.lines[-n:])

    def wait(self, timeout: float | None = None) -> int:
        """The exit code; raises TimeoutError with the log's tail if the process is still running."""
        try:
            code = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"{' '.join(self.argv[:4])} still running after {timeout}s; log tail:\n"
                               f"{self.tail()}") from None
        self._reader.join(5)
        return code

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(10)
        self._reader.join(5)
