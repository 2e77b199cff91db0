"""Exit codes that mean something, and SIGINT/SIGTERM handling shared by the coordinator and the clients.

  0    done: the federation finished (client), or the coordinator stopped after it finished
  1    failed: an unexpected error
  2    configuration: bad flags, data, credentials or a refusal that a retry cannot fix
  3    unreachable: the coordinator could not be reached within --max-retries (a retry may work)
  4    aborted: the coordinator gave up on a round that failed --max-retries times (see federation_aborted)
  130  interrupted by SIGINT (128 + 2)
  143  interrupted by SIGTERM (128 + 15)

Kubernetes reads them: the client Job fails at once on 2 and does not count 143 (a drained node) against
its retries (deploy/k8s/client/base/job.yaml).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from types import FrameType, TracebackType
from typing import Any, Generic, TypeVar

# A stopped process must be gone within 2 s on every path (Kubernetes' grace period is not spent waiting).
STOP_DEADLINE_S = 2.0
T = TypeVar("T")


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1
    CONFIG = 2
    UNREACHABLE = 3
    ABORTED = 4

    @staticmethod
    def interrupted(signum: int) -> int:
        return 128 + signum


class Stopper:
    """Turns SIGINT/SIGTERM into an event (and remembers which came) while installed; restores the old handlers."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, event: threading.Event | None = None) -> None:
        self.event = event or threading.Event()
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        self.signum = self.signum or signum
        self.event.set()

    def __enter__(self) -> Stopper:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *_exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    @property
    def signal_name(self) -> str | None:
        return signal.Signals(self.signum).name if self.signum else None

    @property
    def exit_code(self) -> int:
        return ExitCode.interrupted(self.signum) if self.signum else ExitCode.OK


@dataclass
class Outcome(Generic[T]):
    done: bool  # False: the work was still running when the process had to stop
    result: T | None = None
    error: BaseException | None = None


def run_in_worker(work: Callable[[], T], stopper: Stopper, grace_s: float = STOP_DEADLINE_S - 0.5) -> Outcome[T]:
    """Run `work` in a daemon thread; after a signal give it `grace_s` to wind down, then stop waiting.

    The main thread stays free for signals, so a stop is honoured even while the work sits in a model load or
    a blocking call; the caller exits with `stopper.exit_code` (forcibly when `done` is False).
    """
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = work()
        except BaseException as exc:  # handed to the caller, who raises or reports it
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True, name="work")
    thread.start()
    while thread.is_alive() and not stopper.event.wait(0.1):
        pass
    thread.join(grace_s if stopper.event.is_set() else None)
    return Outcome(not thread.is_alive(), box.get("result"), box.get("error"))
