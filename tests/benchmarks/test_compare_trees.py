"""The coordinator's regression guard (benchmarks/coordinator.py --against): a tiny interleaved run of the working
tree against HEAD prints a row per tree and a finite ratio."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.integration
def test_against_head_prints_both_trees_and_a_finite_ratio() -> None:
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], check=True, capture_output=True,
                          text=True).stdout.strip()
    out = subprocess.run([sys.executable, "benchmarks/coordinator.py", "--against", "HEAD", "--sizes", "3",
                          "--rounds", "3", "--repeats", "1"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    # each tree imported its own package: the working tree's from ROOT, HEAD's from the temporary worktree
    assert f"working tree: pfeddc.server from {ROOT.resolve() / 'server'}" in out.stdout
    assert re.search(rf"^{head} \(HEAD\): pfeddc\.server from (?!{re.escape(str(ROOT.resolve()))}/)\S+/server/",
                     out.stdout, re.MULTILINE)
    rows = [line.split("|")[1:-1] for line in out.stdout.splitlines() if line.startswith("| 3 |")]
    assert [r[1].strip() for r in rows] == ["working tree", f"{head} (HEAD)", f"ratio working / {head}"]
    for r in rows[:2]:
        assert r[2].strip() == "1 x 2" and float(r[4]) > 0  # one run of 2 measured rounds, some CPU
    assert math.isfinite(float(rows[2][3])) and math.isfinite(float(rows[2][4])) and float(rows[2][4]) > 0
    # this run's temporary worktree is gone (another guard may be running meanwhile: only ours is checked)
    ours = re.search(r"(/\S*pfeddc-guard-[^/\s]+)/", out.stdout)
    assert ours, out.stdout
    worktrees = subprocess.run(["git", "-C", str(ROOT), "worktree", "list"], check=True, capture_output=True,
                               text=True).stdout
    assert ours.group(1) not in worktrees and not Path(ours.group(1)).exists()
