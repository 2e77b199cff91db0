"""The live status page in a real browser: headless Chromium (Debian `chromium`) loads it from a running
coordinator, runs its script, and renders the round, the clients and the accuracy curves.

Set PFEDDC_SCREENSHOT=docs/status-page.png to refresh the screenshot in the docs from this test."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from tests_support import StartCoordinator

from pfeddc.client.connection import Backoff, Connection
from pfeddc.common.messages import Metrics

from .debian import ensure

pytestmark = pytest.mark.integration  # starts a browser
FLAGS = ("--rounds", "5", "--min-clients", "3", "--method", "promptfl", "--text-ctx", "4", "--metrics-port", "0",
         "--round-timeout", "900")
SITES = {"hospital-a": (120, 0.52), "hospital-b": (300, 0.61), "hospital-c": (80, 0.44)}


def chromium() -> str:
    return ensure("chromium", "chromium", "fonts-dejavu-core")


def browse(url: str, tmp: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp / 'chromium-profile'}", "--virtual-time-budget=8000", *extra, url]
    return subprocess.run([chromium(), *flags], capture_output=True, text=True, timeout=120)


def run_rounds(port: int, rounds: int, partial: bool) -> None:
    conns = {cid: Connection(f"127.0.0.1:{port}", cid, backoff=Backoff(0.05, 0.2, 3), rpc_timeout_s=10)
             for cid in SITES}
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
            update = {k: np.full_like(v, accuracy) for k, v in task.tensors().items()}
            conn.submit(task.round, update, examples, Metrics(
                train_loss=1.5 - accuracy, accuracy_before=accuracy - 0.05, accuracy_after=accuracy,
                num_test_examples=examples // 4, train_seconds=3.0))
    for conn in conns.values():
        conn.close()


def test_status_page_renders_round_clients_and_curves_in_chromium(coordinator: StartCoordinator,
                                                                  tmp_path: Path) -> None:
    server = coordinator(*FLAGS)
    run_rounds(server.port, rounds=3, partial=True)
    assert server.side and server.side.metrics_port
    url = f"http://127.0.0.1:{server.side.metrics_port}/"
    out = browse(url, tmp_path, "--dump-dom")
    dom = out.stdout
    assert 'data-loaded="true"' in dom, f"the page's script did not render:\n{out.stderr[-2000:]}\n{dom[:2000]}"
    assert "3 / 5 rounds completed" in dom
    assert "round 4: 1 of 3 updates received" in dom
    rows = dict(re.findall(r'<tr data-client="([^"]+)">.*?class="badge (\w+)"', dom))
    assert rows == {"hospital-a": "submitted", "hospital-b": "training", "hospital-c": "training"}
    assert "64.0%" in dom  # hospital-a's accuracy after training in the last closed round (0.52 + 2 * 0.06)
    # the curves: one weighted line after, one before, one thin line per site, a point per completed round
    after = re.search(r'<polyline points="([^"]+)"[^>]*class="after"', dom)
    assert after and len(after.group(1).split()) == 3
    assert len(re.findall(r'<polyline[^>]*class="site"', dom)) == 3
    assert '<div id="error" style="display: none;">' in dom  # every fetch succeeded

    shot = Path(os.environ.get("PFEDDC_SCREENSHOT") or tmp_path / "status-page.png")
    browse(url, tmp_path, f"--screenshot={shot.resolve()}", "--window-size=1280,820", "--hide-scrollbars")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
