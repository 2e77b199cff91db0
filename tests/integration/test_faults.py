"""A real pfeddc-server process that gives up on a round of failures: a clear event and a non-zero exit, and
a restart that does not quietly resume what the clients gave up on."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pfeddc.client.connection import Backoff, Connection
from pfeddc.common.lifecycle import ExitCode
from pfeddc.common.logs import Event
from pfeddc.common.messages import Action, FailureReason

from .conftest import ENV, Federation

pytestmark = pytest.mark.integration  # starts real processes


def test_coordinator_stops_with_exit_4_after_a_round_fails_max_retries_times(federation: Federation) -> None:
    server = federation.server("--rounds", "3", "--min-clients", "1", "--max-retries", "1", "--linger", "0")
    conn = Connection(f"127.0.0.1:{federation.port}", "site-a", backoff=Backoff(0.05, 0.2, 3), rpc_timeout_s=10)
    conn.join(10, conn.federation().spec)
    for attempt in range(2):
        task = conn.task(wait_s=10)  # held until the round is handed out again (after its backoff)
        assert task.action == Action.TRAIN and task.round == 1, (attempt, task)
        conn.report_failure(task.round, FailureReason.OUT_OF_MEMORY, "CUDA out of memory")
    assert server.wait(30) == ExitCode.ABORTED
    aborted = server.find(Event.FEDERATION_ABORTED)
    assert len(aborted) == 1 and aborted[0]["level"] == "error" and aborted[0]["round"] == 1
    assert "out_of_memory: CUDA out of memory" in aborted[0]["reason"]
    assert [e["attempt"] for e in server.find(Event.ROUND_RETRIED)] == [1]

    # a restart (a Deployment's) is refused with the advice, until the operator chooses to resume
    state = federation.tmp / "coordinator"
    assert (state / "aborted.json").exists()
    argv = [sys.executable, "-m", "pfeddc.server.app", "--bind", "127.0.0.1", "--port", "0", "--state-dir",
            str(state), "--rounds", "3", "--min-clients", "1", "--log-format", "json"]
    again = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=ENV)
    assert again.returncode == ExitCode.CONFIG, again.stderr[-2000:]
    assert "aborted at round 1" in again.stderr and "--resume-aborted" in again.stderr
    resumed = federation.server("--rounds", "3", "--min-clients", "1", "--resume-aborted")
    assert resumed.find(Event.FEDERATION_RESUMED)[0]["aborted_round"] == 1
    assert not (state / "aborted.json").exists()


def test_second_coordinator_on_the_same_state_dir_exits_2(federation: Federation) -> None:
    federation.server("--rounds", "3")
    argv = [sys.executable, "-m", "pfeddc.server.app", "--bind", "127.0.0.1", "--port", "0", "--state-dir",
            str(federation.tmp / "coordinator"), "--rounds", "3"]
    second = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=ENV)
    assert second.returncode == ExitCode.CONFIG
    assert "another coordinator (pid" in second.stderr and "is using --state-dir" in second.stderr
