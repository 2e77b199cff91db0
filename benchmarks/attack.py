"""One hostile site among 5 equal ones: how far can it move each global tensor, and what does it cost the others?

    python benchmarks/attack.py                 # every run below (about 15 min on 2 CPU cores), resumable
    python benchmarks/attack.py --report-only   # the table of the recorded runs

The attacker never trains: every round it submits the global it was handed plus a change of L2 norm
`--update-clip-norm` (the whole fixed budget, 10 by default) spent on one tensor, always in the same direction
(a fixed random unit vector), so its pushes add up over the rounds. Runs, all on the same data and seed
(Fashion-MNIST, Dirichlet 0.5 over 5 sites, embedded backbone, pFedDC with prompts (`pfeddc-prompts`: the
tensors attacked here; the class head has its own benchmark, attack_head.py), the shipped settings, 20 rounds):
  honest          no attacker, with the default per-tensor adaptive clip and with the fixed clip only
  null            the attacker's site submits the global unchanged (the floor: the attack minus its push)
  attack:<tensor> one attacker, with each of the two, pushing in a fixed random direction
  flip:<tensor>   ... pushing against the tensor's current value (it shrinks the prompts, then inverts them)
Reported per tensor: its movement per round (L2 norm of the global's change) under attack over the honest run's,
and the honest sites' final personalized accuracy against the honest run's and the null run's. Federations run
in process (benchmarks/inproc.py: the coordinator's real round code and the clients' real training).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy import Setting, prepare  # noqa: E402
from inproc import Attack, run_federation  # noqa: E402

from pfeddc.client.model.backbone import load_backbone  # noqa: E402
from pfeddc.common.logs import configure_logging  # noqa: E402
from pfeddc.common.messages import TrainSettings  # noqa: E402
from pfeddc.server.pipeline.combine import DEFAULT_CLIP_NORM  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SETTING = Setting("fashion-mnist", 5, "dirichlet", 0.5, max_samples=2000)
TENSORS = ("text.global", "vision.global", "vision.gate.global")
ATTACKER = "client_04"
CLIPS = {"adaptive": {}, "fixed-only": {"adaptive_clip": 0.0}}  # FederationConfig overrides


def push(tensor: str, budget: float, seed: int, flip: bool = False) -> Attack:
    """Random: a fixed random direction. `flip`: against the tensor's current value (shrink it, then invert it)."""
    def attack(_round: int, global_: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        direction = np.random.default_rng(seed).normal(size=global_[tensor].shape)
        if flip and np.any(global_[tensor]):
            direction = -global_[tensor].astype(np.float64)
        out = dict(global_)
        out[tensor] = (global_[tensor] + budget * direction / np.linalg.norm(direction)).astype(global_[tensor].dtype)
        return out

    return attack


def run(name: str, clip: str, rounds: int, seed: int) -> dict[str, Any]:
    backbone = load_backbone("embedded")
    classnames, clients, _ = prepare(SETTING, seed, backbone)
    attackers: dict[str, Attack] = {}
    if name == "null":  # the same site submitting the global unchanged: the attack minus the push
        attackers = {ATTACKER: lambda _round, global_: dict(global_)}
    elif name != "honest":
        kind, tensor = name.split(":", 1)
        attackers = {ATTACKER: push(tensor, DEFAULT_CLIP_NORM, seed, flip=kind == "flip")}
    result = run_federation(backbone, classnames, clients, "pfeddc-prompts", TrainSettings(), rounds, seed,
                            attackers=attackers, overrides=CLIPS[clip])
    return {"run": name, "clip": clip, "seed": seed, "rounds": rounds, "accuracy": result.final,
            "accuracy_global_alone": result.final_global,
            "history": result.rounds, "wall_s": result.wall_s, "failures": result.failures}


def report(records: list[dict[str, Any]]) -> str:
    by = {(r["run"], r["clip"]): r for r in records}
    lines = ["| run | clip | " + " | ".join(f"{t} moved/round (x honest)" for t in TENSORS)
             + " | honest sites' accuracy | vs honest run (points) | vs null run (points) "
             "| global prompts alone (vs honest) | rounds clipped on the attacked tensor |",
             "|---|---|" + "---:|" * len(TENSORS) + "---:|---:|---:|---:|---:|"]
    order = {"honest": 0, "null": 1}
    for (name, clip), r in sorted(by.items(), key=lambda kv: (order.get(kv[0][0], 2), kv[0])):
        honest = by.get(("honest", clip))
        if honest is None:
            continue
        honest_ids = [c for c in r["accuracy"] if c != ATTACKER]
        acc = statistics.mean(r["accuracy"][c] for c in honest_ids)
        base = statistics.mean(honest["accuracy"][c] for c in honest_ids)
        null = by.get(("null", clip))
        floor = statistics.mean(null["accuracy"][c] for c in honest_ids) if null else math.nan
        cells = []
        for t in TENSORS:
            moved = statistics.mean(h["global_change"][t] for h in r["history"])
            ref = statistics.mean(h["global_change"][t] for h in honest["history"])
            cells.append(f"{moved:.4f} ({moved / ref:.1f}x)")
        target = name.split(":", 1)[1] if ":" in name else None
        alone = "-"
        if "accuracy_global_alone" in r and "accuracy_global_alone" in honest:
            g = statistics.mean(r["accuracy_global_alone"][c] for c in honest_ids)
            g0 = statistics.mean(honest["accuracy_global_alone"][c] for c in honest_ids)
            alone = f"{100 * g:.1f}% ({100 * (g - g0):+.1f})"
        clipped = sum(1 for h in r["history"] if target and target in h.get("clipped_tensors", {}))
        lines.append(f"| {name} | {clip} | " + " | ".join(cells)
                     + f" | {100 * acc:.1f}% | {100 * (acc - base):+.1f} | {100 * (acc - floor):+.1f} "
                     f"| {alone} | {clipped if target else '-'} |")
    fixed, adaptive = by.get(("honest", "fixed-only")), by.get(("honest", "adaptive"))
    if fixed and adaptive:
        a = statistics.mean(adaptive["accuracy"].values())
        f = statistics.mean(fixed["accuracy"].values())
        lines.append(f"\nHonest federation, all 5 sites: {100 * f:.1f}% with the fixed clip only, {100 * a:.1f}% with "
                     f"the adaptive clip ({100 * (a - f):+.1f} points).")
    return "\n".join(lines)


def run_logged(log: Path, wanted: list[dict[str, Any]], run_one: Callable[[dict[str, Any]], dict[str, Any]],
               ) -> list[dict[str, Any]]:
    """The runs recorded in `log` (JSON lines), after running each of `wanted` (the fields that name a run) that
    no record matches yet and appending its record: a benchmark stopped midway resumes where it was."""
    records = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    for want in wanted:
        if any(all(r.get(k) == v for k, v in want.items()) for r in records):
            continue
        record = run_one(want)
        records.append(record)
        with log.open("a") as fh:
            fh.write(json.dumps(record) + "\n")
        print(f"{' '.join(str(v) for v in want.values())}: {record['wall_s']} s", flush=True)
    return records


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--runs", default="honest,null," + ",".join(f"attack:{t}" for t in TENSORS)
                   + ",flip:text.global")
    p.add_argument("--clips", default="adaptive,fixed-only")
    p.add_argument("--log", type=Path, default=RESULTS / "attack_runs.jsonl")
    p.add_argument("--report-only", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    configure_logging("json", "error")
    wanted = [] if args.report_only else [{"run": name, "clip": clip, "seed": args.seed}
                                          for name in args.runs.split(",") for clip in args.clips.split(",")]
    records = run_logged(args.log, wanted, lambda w: run(w["run"], w["clip"], args.rounds, args.seed))
    hardware = f"{os.cpu_count()}-core {platform.machine()} CPU (shared), torch {torch.__version__}, 1 thread"
    print(f"# One attacker among 5 sites, {args.rounds} rounds ({hardware})\n\n{report(records)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
