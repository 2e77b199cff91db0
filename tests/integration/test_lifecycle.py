"""Processes start, stop and end as an operator expects: signals honoured within 2 s in every state, exit codes
that mean something, one coordinator per port, --version and PFEDDC_SERVER_* defaults."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests_support import make_image_folder

from pfeddc.client.connection import Backoff, Connection, global_tensors
from pfeddc.client.sim.processes import LoggedProcess
from pfeddc.common.lifecycle import STOP_DEADLINE_S, ExitCode
from pfeddc.common.logs import Event

from .conftest import ENV, Federation

pytestmark = pytest.mark.integration  # starts real processes


def stop_within_deadline(proc: LoggedProcess, sig: int) -> int:
    """Send `sig`, return the exit code, and fail unless the process was gone within 2 s."""
    started = time.monotonic()
    proc.popen.send_signal(sig)
    code = proc.wait(10)
    elapsed = time.monotonic() - started
    assert elapsed < STOP_DEADLINE_S, f"took {elapsed:.2f}s to stop on {signal.Signals(sig).name}:\n{proc.tail()}"
    return code


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_coordinator_stops_within_2s_in_every_state_with_meaningful_codes(federation: Federation) -> None:
    waiting = federation.server("--rounds", "2", "--min-clients", "2")
    assert stop_within_deadline(waiting, signal.SIGINT) == ExitCode.interrupted(signal.SIGINT)

    training = federation.server("--rounds", "2", "--min-clients", "1", "--round-timeout", "600")
    conn = Connection(f"127.0.0.1:{federation.port}", "site-a", backoff=Backoff(0.05, 0.2, 3), rpc_timeout_s=10)
    conn.join(10, conn.federation().spec)
    training.wait_event(Event.ROUND_STARTED, 10)  # a round is open and the client holds a task
    assert stop_within_deadline(training, signal.SIGTERM) == ExitCode.interrupted(signal.SIGTERM)
    conn.close()

    finished = federation.server("--rounds", "1", "--min-clients", "1", "--linger", "inf",
                                 state_dir=federation.tmp / "finished")
    conn = Connection(f"127.0.0.1:{federation.port}", "site-a", backoff=Backoff(0.05, 0.2, 3), rpc_timeout_s=10)
    conn.join(10, conn.federation().spec)
    from pfeddc.common.messages import Metrics

    task = conn.task()
    conn.submit(task.round, global_tensors(task), 10, Metrics(num_test_examples=1, train_loss=0.1,
                                                              accuracy_before=0.5, accuracy_after=0.6))
    finished.wait_event(Event.LINGERING, 10)  # over, still serving: it does not exit on its own (linger inf)
    time.sleep(1.0)
    assert finished.popen.poll() is None
    assert stop_within_deadline(finished, signal.SIGTERM) == ExitCode.OK  # the federation had finished
    conn.close()


def test_second_coordinator_on_the_same_port_fails_clearly(federation: Federation, tmp_path: Path) -> None:
    federation.server("--rounds", "1")
    argv = [sys.executable, "-m", "pfeddc.server.app", "--bind", "127.0.0.1", "--port", str(federation.port),
            "--state-dir", str(tmp_path / "second"), "--log-format", "json"]
    second = LoggedProcess(argv, tmp_path / "second.log", ENV)
    assert second.wait(30) == ExitCode.CONFIG
    failed = second.wait_event(Event.SERVER_FAILED, 1)
    assert f"cannot listen on 127.0.0.1:{federation.port}" in failed["error"]
    assert "another coordinator" in failed["error"]


def test_client_stops_within_2s_in_every_state(federation: Federation, tmp_path: Path) -> None:
    data = make_image_folder(tmp_path / "data", ["red", "green"], 6, seed=0)
    # 1. retrying an unreachable coordinator (--max-retries 0: forever): the backoff wait is interrupted
    federation.port = free_port()
    retrying = federation.client("site-r", data, "--max-retries", "0")
    retrying.wait_event(Event.COORDINATOR_UNREACHABLE, 60, count=2)
    assert stop_within_deadline(retrying, signal.SIGINT) == ExitCode.interrupted(signal.SIGINT)

    # 2. joined, waiting for the class list (and the first round) that need another client
    federation.server("--rounds", "2", "--min-clients", "2")
    waiting = federation.client("site-w", data)
    waiting.wait_event(Event.WAITING_FOR_CLASSES, 60)
    time.sleep(0.5)
    assert stop_within_deadline(waiting, signal.SIGTERM) == ExitCode.interrupted(signal.SIGTERM)

    # 3. in the middle of local training
    federation.server("--rounds", "2", "--min-clients", "1", "--method", "pfeddc-noproto",
                      state_dir=tmp_path / "coord-2")
    training = federation.client("site-t", data, "--local-epochs", "200", "--batch-size", "2")
    training.wait_event(Event.ROUND_TRAINING, 60)
    time.sleep(0.5)
    assert stop_within_deadline(training, signal.SIGTERM) == ExitCode.interrupted(signal.SIGTERM)
    stopped = training.find(Event.CLIENT_STOPPED)
    assert stopped and stopped[-1]["reason"] == "SIGTERM" and stopped[-1]["exit_code"] == 143


def test_version_and_environment_defaults(federation: Federation, tmp_path: Path) -> None:
    import subprocess

    for module in ("pfeddc.server.app", "pfeddc.client.app", "pfeddc.server.ops.certs"):
        out = subprocess.run([sys.executable, "-m", module, "--version"], capture_output=True, text=True, env=ENV)
        assert out.returncode == 0 and out.stdout.strip().endswith("0.1.0"), out
    env = {**ENV, "PFEDDC_SERVER_ROUNDS": "7", "PFEDDC_SERVER_LOG_FORMAT": "json", "PFEDDC_SERVER_BIND": "127.0.0.1",
           "PFEDDC_SERVER_PORT": "0", "PFEDDC_SERVER_STATE_DIR": str(tmp_path / "env-state"),
           "PFEDDC_STATUS_SERVER": "elsewhere:1"}  # another tool's variable: neither read nor refused
    proc = LoggedProcess([sys.executable, "-m", "pfeddc.server.app"], tmp_path / "env.log", env)
    started = proc.wait_event(Event.SERVER_STARTED, 30)
    assert started["rounds"] == 7 and (tmp_path / "env-state").is_dir()
    proc.popen.send_signal(signal.SIGTERM)
    proc.wait(10)
    bad = subprocess.run([sys.executable, "-m", "pfeddc.server.app"], capture_output=True, text=True,
                         env={**ENV, "PFEDDC_SERVER_ROUNDS": "many"})
    assert bad.returncode == 2 and "PFEDDC_SERVER_ROUNDS='many'" in bad.stderr
    old = subprocess.run([sys.executable, "-m", "pfeddc.server.app"], capture_output=True, text=True,
                         env={**ENV, "PFEDDC_ROUND_TIMEOUT": "60"})  # the shared name of earlier versions
    assert old.returncode == 2 and "for pfeddc-server it is PFEDDC_SERVER_ROUND_TIMEOUT" in old.stderr



def test_the_coordinator_process_keeps_blas_on_one_thread_and_its_startup_out_of_the_cycle_collector(
        tmp_path: Path) -> None:
    """OpenBLAS's idle threads spin after a call large enough to be shared (11% of a secure round's CPU), and the
    cycle collector's full passes traversed every module (7%): the coordinator's main sets one BLAS thread, whatever
    the environment asked (2 here), and freezes what exists once it serves. Read in the real process as it exits."""
    report = ("import atexit, gc, json, sys\n"
              "from threadpoolctl import threadpool_info\n"
              "atexit.register(lambda: print(json.dumps([[i['num_threads'] for i in threadpool_info()"
              " if i['user_api'] == 'blas'], gc.get_freeze_count()])))\n")
    env = {**ENV, "OPENBLAS_NUM_THREADS": "2"}
    alone = subprocess.run([sys.executable, "-c", report + "import numpy\n"], capture_output=True, text=True,
                           timeout=60, env=env)
    assert json.loads(alone.stdout.strip().splitlines()[-1]) == [[min(2, os.cpu_count() or 1)], 0]  # numpy alone
    server = LoggedProcess([sys.executable, "-c", report + "from pfeddc.server.app import main\n"
                            "sys.exit(main(sys.argv[1:]))\n", "--bind", "127.0.0.1", "--port", "0", "--state-dir",
                            str(tmp_path / "coordinator"), "--rounds", "1", "--log-format", "json"],
                           tmp_path / "server.log", env)
    server.wait_event(Event.SERVER_STARTED, 30)
    assert stop_within_deadline(server, signal.SIGTERM) == ExitCode.interrupted(signal.SIGTERM)
    blas, frozen = json.loads((tmp_path / "server.log").read_text().strip().splitlines()[-1])
    assert blas == [1] and frozen > 10_000  # the modules and the federation: tens of thousands of objects
