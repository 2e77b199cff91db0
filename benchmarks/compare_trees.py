"""The regression guard of the coordinator (issue 31): two trees' coordinators in one interleaved run.

    python benchmarks/coordinator.py --against main --sizes 10 100        # working tree vs main, 3 repeats
    python benchmarks/coordinator.py --against 1f3bbe5 --repeats 2 --clients push

REV is checked out in a temporary git worktree. Each coordinator is coordinator.run's real `pfeddc-server`
process, started as `python -m pfeddc.server.app` with a PYTHONPATH whose first entry is a folder holding
`pfeddc/{server,common,client}` linked into its tree, so each run imports its own tree's package (a probe prints
where `pfeddc.server` comes from, before anything is measured). The clients are the working tree's (its
generated stubs; pfeddc.v1 is backward compatible) and Join with its 82 KB spec; each tree is started with the
method that serves that spec (`pfeddc-prompts`, or `pfeddc` in trees from before the class head), and a tree
that serves another spec refuses the Join and stops the run.

Runs alternate, working tree then REV, --repeats times at each N. A run's s/round and coordinator CPU-s/round
are its means over its measured rounds (round 1, the joins, excluded; CPU from /proc: everything the process
spends between two commits, gRPC, the round's aggregation and its checkpoint); a tree's are the medians of its
runs'. The mean wall time of the checkpoint after a round (the coordinator's own Prometheus histogram, read after
the last round) is shown apart.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import coordinator_runs as coordinator

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("server", "common", "client")
METHODS = ("pfeddc-prompts", "pfeddc")  # the first a tree knows serves the 82 KB spec (see coordinator.PROMPT)
CALLS = {"threads": "N threads in one process, each GetFederation + Join, then GetTask held up to 30 s and "
                     "SubmitUpdate of the global it was handed (2 calls per client per round)",
         "push": "asyncio push clients (GetTask held, next task in the SubmitUpdate reply: 1 call per client per "
                 "round)"}
_PROBE = ("import json, os, pfeddc.server, pfeddc.common.spec as s; print(json.dumps({'server': "
          "os.path.realpath(pfeddc.server.__file__), 'methods': list(s.METHODS)}))")


@dataclass
class Tree:
    label: str
    root: Path
    env: dict[str, str]
    flags: list[str]  # coordinator.SERVER_FLAGS with the tree's --method


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], check=True, capture_output=True, text=True).stdout.strip()


@contextmanager
def worktree(rev: str, into: Path) -> Iterator[Path]:
    """REV checked out (detached) in a temporary worktree of this repository, removed afterwards."""
    path = into / "against"
    git("worktree", "add", "--detach", "--quiet", str(path), git("rev-parse", "--verify", f"{rev}^{{commit}}"))
    try:
        yield path
    finally:
        git("worktree", "remove", "--force", str(path))


def tree(label: str, root: Path, workdir: Path) -> Tree:
    """A tree ready to run: a `pfeddc` folder whose parts link into `root`, first on PYTHONPATH (byte code kept
    under `workdir`, not in the tree); checked by importing it, and its method chosen."""
    shim = Path(tempfile.mkdtemp(dir=workdir, prefix="path-"))
    (shim / "pfeddc").mkdir()
    (shim / "pfeddc" / "__init__.py").write_text("")
    for part in PARTS:
        (shim / "pfeddc" / part).symlink_to(root / part, target_is_directory=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(shim), os.environ.get("PYTHONPATH")])),
           "PYTHONPYCACHEPREFIX": str(workdir / "pycache")}
    probe = json.loads(subprocess.run([sys.executable, "-c", _PROBE], env=env, cwd=workdir, check=True,
                                      capture_output=True, text=True).stdout)
    if not Path(probe["server"]).is_relative_to(root.resolve()):
        raise RuntimeError(f"{label}: pfeddc.server was imported from {probe['server']}, not from {root}")
    method = next((m for m in METHODS if m in probe["methods"]), None)
    if method is None:
        raise RuntimeError(f"{label}: none of the methods {METHODS} (it knows {probe['methods']})")
    print(f"{label}: pfeddc.server from {probe['server']}, --method {method}", flush=True)
    flags = list(coordinator.SERVER_FLAGS)
    flags[flags.index("--method") + 1] = method
    return Tree(label, root, env, flags)


def _mean(values: list[float]) -> float:
    return statistics.mean(values) if values else math.nan


def _whole(r: coordinator.Run) -> float:
    """CPU-s per round from the coordinator's first sample (started, no client yet) to its last commit: the
    joins and round 1 included."""
    return (r.cpu_at(r.rounds[-1]) - r.cpu[0][1]) / len(r.rounds)


def table(runs: dict[tuple[int, str], list[coordinator.Run]], trees: list[Tree]) -> list[str]:
    """Per N: a row per tree and the ratio of the first tree to the second. A run's figure is its mean over its
    measured rounds (the CPU counters tick in 10 ms: a mean over rounds resolves what one round's cannot); a
    tree's, the median of its runs'."""
    out = ["| N | tree | runs x rounds | s/round | coordinator CPU-s/round | CPU-s/round of each run | "
           "CPU-s/round, joins + round 1 incl. | checkpoint s/round |", "|---:|---|---:|---:|---:|---|---:|---:|"]
    for n in sorted({n for n, _ in runs}):
        medians = []
        for t in trees:
            rs = runs[(n, t.label)]
            measured = [r.per_round(2, len(r.rounds)) for r in rs]
            cpus = [_mean(m[1]) for m in measured]
            checkpoint = [r.checkpoint_s for r in rs if r.checkpoint_s is not None]
            medians.append([statistics.median(v) for v in ([_mean(m[0]) for m in measured], cpus,
                                                           [_whole(r) for r in rs])])
            secs, cpu, whole = medians[-1]
            out.append(f"| {n} | {t.label} | {len(rs)} x {len(measured[0][1])} | {secs:.4f} | {cpu:.4f} | "
                       f"{' '.join(f'{c:.4f}' for c in cpus)} | {whole:.4f} | "
                       f"{f'{statistics.median(checkpoint):.4f}' if checkpoint else 'n/a'} |")
        (s0, c0, w0), (s1, c1, w1) = medians
        out.append(f"| {n} | ratio {trees[0].label.split()[0]} / {trees[1].label.split()[0]} | | {s0 / s1:.3f} | "
                   f"{c0 / c1:.3f} | | {w0 / w1:.3f} | |")
    return out


def main(args: argparse.Namespace) -> int:
    sizes, rounds, clients = args.sizes or [10, 100], args.rounds or 8, args.clients or "threads"
    workdir = Path(tempfile.mkdtemp(prefix="pfeddc-guard-"))
    against = git("rev-parse", "--short", f"{args.against}^{{commit}}")
    with worktree(args.against, workdir) as base:
        trees = [tree("working tree", ROOT, workdir), tree(f"{against} ({args.against})", base, workdir)]
        runs: dict[tuple[int, str], list[coordinator.Run]] = {}
        for n in sizes:
            workers = 1 if clients == "threads" else min(args.workers, max(1, n // 5))
            for repeat in range(args.repeats):
                for t in trees:  # interleaved: A B A B
                    r = coordinator.run(n, rounds, True, workers, workdir, (), coordinator.CLIENTS[clients],
                                        env=t.env, mode=clients, checkpoints=True, server_flags=t.flags)
                    if len(r.rounds) != rounds:
                        raise RuntimeError(f"{t.label} N={n}: {len(r.rounds)} of {rounds} rounds committed")
                    runs.setdefault((n, t.label), []).append(r)
                    print(f"N={n} {t.label} run {repeat + 1}: CPU-s/round {_mean(r.per_round(2, rounds)[1]):.4f}",
                          flush=True)
    load, methods = os.getloadavg()[0], " / ".join(t.flags[t.flags.index("--method") + 1] for t in trees)
    lines = ["", f"# Coordinator: working tree vs {against} ({args.against}), interleaved", "",
             f"Hardware: {coordinator.hardware()}; load average (1 min) at the end: {load:.2f}", "",
             f"Clients: {CALLS[clients]}; {rounds} rounds a run; --method {methods} (an 82 KB update). s/round and "
             "CPU-s/round: a run's mean over rounds 2.. (the joins and round 1 excluded; the tree's figure is the "
             "median of its runs'); CPU from /proc, all the coordinator process spends between two commits, the "
             "checkpoint included. 'joins + round 1 incl.': its CPU from start to the last commit / rounds. "
             "Checkpoint s/round: the checkpoint's mean wall time alone (the coordinator's Prometheus histogram; "
             "its fsync waits included, they are not CPU).", "",
             *table(runs, trees)]
    print("\n".join(lines), flush=True)
    if args.out:
        coordinator._save(args.out, lines)
    shutil.rmtree(workdir, ignore_errors=True)
    return 0
