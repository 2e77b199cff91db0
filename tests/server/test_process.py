"""The coordinator process's own settings (server/ops/process.py), read in fresh processes: each changes the
whole process, so none is applied to the test run's own."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

CHURN = """
import ctypes, json, sys, threading
from pfeddc.server.ops.process import tune_allocator
applied = tune_allocator() if sys.argv[1] == "tuned" else []
def churn():  # a thread that allocates, as the event loop's, gRPC's and the workers' do
    blocks = [bytearray(50_000) for _ in range(100)]
    del blocks
thread = threading.Thread(target=churn)
thread.start()
thread.join()
ctypes.CDLL(None).malloc_stats()  # one "Arena N:" block per arena, to stderr
print(json.dumps(applied))
"""


def churned(mode: str, **env: str) -> tuple[list[str], int]:
    """(the options tune_allocator set, how many malloc arenas a thread's allocations left)."""
    done = subprocess.run([sys.executable, "-c", CHURN, mode], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **env})
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr.count("Arena ")


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt and malloc_stats are glibc's")
def test_the_allocator_keeps_one_arena_and_an_operators_environment_wins() -> None:
    assert churned("plain") == ([], 2)  # a new thread gets an arena of its own
    applied, arenas = churned("tuned")
    assert applied == ["MALLOC_ARENA_MAX", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_"] and arenas == 1
    assert churned("tuned", MALLOC_TOP_PAD_="4096")[0] == ["MALLOC_ARENA_MAX", "MALLOC_TRIM_THRESHOLD_"]
    assert churned("tuned", MALLOC_ARENA_MAX="4") == (["MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_"], 2)
