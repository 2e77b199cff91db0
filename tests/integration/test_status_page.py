"""The live status page in a real browser: headless Chromium (Debian `chromium`) loads it from a running
coordinator, runs its script, and renders the round, the clients and the accuracy curves, in every state
(before any client, training, a client gone, retrying, aborted, finished) with nothing on the page's console.

Set PFEDDC_SCREENSHOT=docs/status-page.png to refresh the screenshot in the docs from this test."""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from tests_support import StartCoordinator

from pfeddc.client.connection import Backoff, Connection, global_tensors
from pfeddc.client.heartbeat import Heartbeat
from pfeddc.common.messages import FailureReason, Metrics
from pfeddc.common.spec import TensorSpec

from .debian import ensure

pytestmark = pytest.mark.integration  # starts a browser
FLAGS = ("--rounds", "5", "--min-clients", "3", "--method", "promptfl", "--text-ctx", "4", "--metrics-port", "0",
         "--round-timeout", "900")
SITES = {"hospital-a": (120, 0.52), "hospital-b": (300, 0.61), "hospital-c": (80, 0.44)}


def chromium() -> str:
    return ensure("chromium", "chromium", "fonts-dejavu-core")


def browse(url: str, tmp: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--enable-logging=stderr", "--v=0",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp / 'chromium-profile'}", "--virtual-time-budget=8000", *extra, url]
    return subprocess.run([chromium(), *flags], capture_output=True, text=True, timeout=120)


def console(out: subprocess.CompletedProcess[str]) -> list[str]:
    """What the page wrote to its console (errors, uncaught exceptions, CSP refusals); it writes nothing else."""
    return [line for line in out.stderr.splitlines() if ":CONSOLE" in line]


def load(url: str, tmp: Path) -> str:
    """The rendered DOM, once the page's script ran, with no error banner and nothing on the console."""
    out = browse(url, tmp, "--dump-dom")
    dom = out.stdout
    assert 'data-loaded="true"' in dom, f"the page's script did not render:\n{out.stderr[-2000:]}\n{dom[:2000]}"
    assert '<div id="error" style="display: none;">' in dom, dom[:3000]  # every fetch and render succeeded
    assert console(out) == []
    return dom


def badges(dom: str) -> dict[str, str]:
    return dict(re.findall(r'<tr data-client="([^"]+)">.*?class="badge (\w+)"', dom))


def connect(port: int, cid: str) -> Connection:
    return Connection(f"127.0.0.1:{port}", cid, backoff=Backoff(0.05, 0.2, 3), rpc_timeout_s=10)


def run_rounds(port: int, rounds: int, partial: bool) -> None:
    conns = {cid: connect(port, cid) for cid in SITES}
    spec = next(iter(conns.values())).federation().spec
    for cid, conn in conns.items():
        conn.join(SITES[cid][0], spec)
    for r in range(rounds + partial):
        for i, (cid, conn) in enumerate(conns.items()):
            if r == rounds and i > 0:
                break  # the open round: one update in, two clients still training
            examples, base = SITES[cid]
            task = conn.task()
            accuracy = min(0.95, base + 0.06 * r)
            update = {k: np.full_like(v, accuracy) for k, v in global_tensors(task).items()}
            conn.submit(task.round, update, examples, Metrics(
                train_loss=1.5 - accuracy, accuracy_global=accuracy - 0.05, accuracy_after=accuracy,
                num_test_examples=examples // 4, train_seconds=3.0))
    for conn in conns.values():
        conn.close()


def test_status_page_renders_round_clients_and_curves_in_chromium(coordinator: StartCoordinator,
                                                                  tmp_path: Path) -> None:
    server = coordinator(*FLAGS)
    run_rounds(server.port, rounds=3, partial=True)
    assert server.side and server.side.metrics_port
    url = f"http://127.0.0.1:{server.side.metrics_port}/"
    dom = load(url, tmp_path)
    assert "3 / 5 rounds completed" in dom
    assert "round 4 of 5: 1 of 3 updates received" in dom
    assert badges(dom) == {"hospital-a": "submitted", "hospital-b": "training", "hospital-c": "training"}
    assert "64.0%" in dom  # hospital-a's accuracy after training in the last closed round (0.52 + 2 * 0.06)
    assert "59.0%" in dom  # ... and of the global prompts alone, before it
    # the curves: one weighted line after, one of the global prompts, one thin line per site, a point a round
    for curve in ("after", "global"):
        points = re.search(rf'<polyline points="([^"]+)"[^>]*class="{curve}"', dom)
        assert points and len(points.group(1).split()) == 3
    assert len(re.findall(r'<polyline[^>]*class="site"', dom)) == 3
    assert "none: no round retried, no client failed" in dom

    shot = Path(os.environ.get("PFEDDC_SCREENSHOT") or tmp_path / "status-page.png")
    browse(url, tmp_path, f"--screenshot={shot.resolve()}", "--window-size=1280,820", "--hide-scrollbars")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000


def test_status_page_before_any_client_joins_shows_no_error(coordinator: StartCoordinator, tmp_path: Path) -> None:
    server = coordinator(*FLAGS)
    assert server.side and server.side.metrics_port
    dom = load(f"http://127.0.0.1:{server.side.metrics_port}/", tmp_path)
    assert "no client has joined yet" in dom and "no round completed yet" in dom
    assert "round 1 of 5: waiting for clients (0 online, 3 needed)" in dom
    assert 'class="badge waiting"' in dom


def test_status_page_shows_a_stopped_client_offline_within_the_heartbeat_window(
        coordinator: StartCoordinator, tmp_path: Path) -> None:
    server = coordinator("--rounds", "2", "--min-clients", "2", "--method", "promptfl", "--text-ctx", "4",
                         "--metrics-port", "0", "--round-timeout", "3600", "--heartbeat-window", "11")
    assert server.side and server.side.metrics_port
    alive, gone = connect(server.port, "alive"), connect(server.port, "gone")
    spec = alive.federation().spec
    alive.join(10, spec)
    gone.join(10, spec)
    stop = threading.Event()
    started = time.monotonic()
    with Heartbeat(alive, stop, interval_s=2.0) as beat:  # "alive" trains and beats; "gone" was killed
        while time.monotonic() - started < 12.0:
            time.sleep(0.5)
        dom = load(f"http://127.0.0.1:{server.side.metrics_port}/", tmp_path)
        assert beat.sent >= 4
    assert badges(dom) == {"alive": "training", "gone": "offline"}
    assert "deadline in 3" in dom  # the round itself still waits for its timeout (an hour)
    alive.close()
    gone.close()


def test_status_page_lists_retries_and_failures_then_the_abort(coordinator: StartCoordinator,
                                                               tmp_path: Path) -> None:
    server = coordinator("--rounds", "3", "--min-clients", "1", "--method", "promptfl", "--text-ctx", "4",
                         "--metrics-port", "0", "--max-retries", "1")
    assert server.side and server.side.metrics_port
    url = f"http://127.0.0.1:{server.side.metrics_port}/"
    site = connect(server.port, "site-a")
    site.join(10, [TensorSpec("text.global", (4, 128))])
    site.task()
    site.report_failure(1, FailureReason.DIVERGED, "loss became NaN at step 3")
    dom = load(url, tmp_path)
    assert "round 1 of 3, attempt 2 of 2 (retrying)" in dom
    assert re.findall(r'<tr data-incident="(\w+)">', dom) == ["round_retried", "client_failed"]
    assert "diverged: loss became NaN at step 3" in dom

    time.sleep(site.task().retry_after_s + 0.1)  # the round is handed out again after a backoff
    assert site.task().round == 1
    site.report_failure(1, FailureReason.OUT_OF_MEMORY)
    dom = load(url, tmp_path)
    assert 'class="badge aborted"' in dom and "round 1 of 3 (aborted): round 1 failed 2 times" in dom
    assert re.findall(r'<tr data-incident="(\w+)">', dom)[:2] == ["federation_aborted", "client_failed"]
    site.close()


def test_status_page_of_a_finished_federation_says_all_rounds_done(coordinator: StartCoordinator,
                                                                   tmp_path: Path) -> None:
    server = coordinator("--rounds", "2", "--min-clients", "3", "--method", "promptfl", "--text-ctx", "4",
                         "--metrics-port", "0", "--linger", "inf")
    run_rounds(server.port, rounds=2, partial=False)
    assert server.side and server.side.metrics_port
    dom = load(f"http://127.0.0.1:{server.side.metrics_port}/", tmp_path)
    assert 'class="badge finished"' in dom and "2 / 2 rounds completed" in dom
    assert "2 of 2 rounds (finished)" in dom and "round 3" not in dom
