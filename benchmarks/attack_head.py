"""One hostile site among 5 equal ones against the class head (`--method pfeddc`, the default): how far it moves
a class's shared mean, and what 20 attacked rounds cost the honest sites.

    python benchmarks/attack_head.py                 # every run below (a few minutes on 2 CPU cores)
    python benchmarks/attack_head.py --report-only   # the table of the recorded runs

The same federation as benchmarks/attack.py (Fashion-MNIST, Dirichlet 0.5 over 5 sites, embedded backbone, the
shipped settings, 20 rounds, in process: the coordinator's real round code and the sites' real class head). The
attacker (site 5) never trains: every round it sends class statistics that pass every check (a distribution of
counts, sums and a second moment consistent with images), claiming that all its images belong to the attacked
classes and lie opposite their current shared mean (unit vectors, as every image's features are):
  honest        site 5 is an honest site
  null          site 5 sends the global statistics unchanged (a site that adds nothing)
  null:<site>   an honest site does so instead, site 5 honest (each honest site's own influence)
  poison:<c>    site 5 claims class c (one run for the class held most evenly by the honest sites, one for the
                class most concentrated at one honest site)
  poison:all    site 5 claims every class, equally
  rows:<c>      site 5 sends the global statistics back and, on the shared residual (head.residual), pushes the
                rows of the same classes as far down as the values allowed (every coordinate -100 along the
                class's mean, bias -100): each row's change bounded on its own (server/pipeline/clipping.py)
Reported: site 5's influence on an attacked class's shared mean, ||mean(run) - mean(null)||, over the largest
honest site's influence on it, max over sites s of ||mean(honest) - mean(null:s)|| (site 5 honest among them),
the worst ratio over the attacked classes (the same for the class counts and the residual rows); the honest
sites' final personalized accuracy against the honest and the null runs.
"""

from __future__ import annotations

import argparse
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
from accuracy import prepare  # noqa: E402
from attack import ATTACKER, SETTING, run_logged  # noqa: E402
from inproc import Attack, ClientSplit, run_federation  # noqa: E402

from pfeddc.client.model.backbone import load_backbone  # noqa: E402
from pfeddc.common.logs import configure_logging  # noqa: E402
from pfeddc.common.messages import TrainSettings  # noqa: E402
from pfeddc.common.spec import METHODS  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
COUNTS = "head.counts.global"
SUMS = "head.sums.global"
MOMENT = "head.moment.global"
RESIDUAL = "head.residual.global"


def class_means(global_: dict[str, np.ndarray]) -> np.ndarray:
    counts = global_[COUNTS].astype(np.float64)
    return global_[SUMS].astype(np.float64) / np.maximum(counts, 1e-12)[:, None]


def poison(classes: list[int]) -> Attack:
    """Claims `classes` equally, every image the unit vector opposite the class's shared mean."""
    def attack(_round: int, global_: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        means = class_means(global_)
        counts = np.zeros(global_[COUNTS].shape)
        sums = np.zeros(global_[SUMS].shape)
        moment = np.zeros(global_[MOMENT].shape)
        for c in classes:
            length = float(np.linalg.norm(means[c]))
            if length < 1e-6:  # round 1: no shared mean yet, a fixed random direction
                away = np.random.default_rng(c).normal(size=means.shape[1])
                length = float(np.linalg.norm(away))
            else:
                away = -means[c]
            away = away / length  # features are unit vectors
            counts[c] = 1 / len(classes)
            sums[c] = counts[c] * away
            moment += counts[c] * np.outer(away, away)
        return {**global_, COUNTS: counts.astype(np.float32), SUMS: sums.astype(np.float32),
                MOMENT: moment.astype(np.float32)}

    return attack


def push_rows(classes: list[int]) -> Attack:
    """The global statistics unchanged; the residual rows of `classes` moved as far as the values allow against
    each class's shared mean (its own images' logits pushed down), their biases at the floor."""
    def attack(_round: int, global_: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        residual = global_[RESIDUAL].astype(np.float64).copy()
        means = class_means(global_)
        for c in classes:
            length = float(np.linalg.norm(means[c]))
            away = -means[c] / length if length > 1e-6 else np.random.default_rng(c).normal(size=means.shape[1])
            residual[c, :-1] = np.clip(residual[c, :-1] + 100.0 * np.sign(away), -100.0, 100.0)
            residual[c, -1] = -100.0
        return {**global_, RESIDUAL: residual.astype(np.float32)}

    return attack


def held(clients: dict[str, ClientSplit], n_classes: int) -> np.ndarray:
    """[honest site, class] training images."""
    return np.stack([np.bincount(split.train.labels.numpy(), minlength=n_classes)
                     for cid, split in sorted(clients.items()) if cid != ATTACKER])


def targets(clients: dict[str, ClientSplit], n_classes: int) -> dict[str, list[int]]:
    counts = held(clients, n_classes)
    top_share = counts.max(axis=0) / np.maximum(counts.sum(axis=0), 1)
    return {"even": [int(np.argmin(top_share))], "concentrated": [int(np.argmax(top_share))],
            "all": list(range(n_classes))}


def run(name: str, rounds: int, seed: int, method: str = "pfeddc") -> dict[str, Any]:
    backbone = load_backbone("embedded")
    classnames, clients, _ = prepare(SETTING, seed, backbone)
    aims = targets(clients, len(classnames))
    attackers: dict[str, Attack] = {}
    if name == "null" or name.startswith("null:"):  # site 5 (or the site named) sends the global back
        attackers = {name.split(":", 1)[1] if ":" in name else ATTACKER: lambda _round, global_: dict(global_)}
    elif name.startswith("poison:"):
        attackers = {ATTACKER: poison(aims[name.split(":", 1)[1]])}
    elif name.startswith("rows:"):
        attackers = {ATTACKER: push_rows(aims[name.split(":", 1)[1]])}
    final = FinalGlobal()
    result = run_federation(backbone, classnames, clients, method, TrainSettings(), rounds, seed,
                            attackers=attackers, observer=final)
    return {"run": name, "seed": seed, "rounds": rounds, "accuracy": result.final, "targets": aims,
            "held": held(clients, len(classnames)).tolist(), "means": class_means(final.tensors).tolist(),
            "counts": final.tensors[COUNTS].astype(float).tolist(),
            "residual": final.tensors[RESIDUAL].astype(float).tolist() if RESIDUAL in final.tensors else None,
            "wall_s": result.wall_s, "failures": result.failures}


class FinalGlobal:
    """The federation's last global (an inproc Observer)."""

    tensors: dict[str, np.ndarray]

    def update(self, round_: int, cid: str, received: dict[str, np.ndarray], sent: dict[str, np.ndarray]) -> None:
        pass

    def committed(self, round_: int, before: dict[str, np.ndarray], after: dict[str, np.ndarray]) -> None:
        pass

    def finished(self, models: dict[str, Any], final_global: dict[str, np.ndarray]) -> None:
        self.tensors = dict(final_global)


def report(records: list[dict[str, Any]]) -> str:
    by = {r["run"]: r for r in records}
    honest, null = by.get("honest"), by.get("null")
    if honest is None or null is None:
        return "(needs the honest and null runs)"
    ids = [c for c in honest["accuracy"] if c != ATTACKER]
    base = statistics.mean(honest["accuracy"][c] for c in ids)
    floor = statistics.mean(null["accuracy"][c] for c in ids)
    m_honest, m_null = np.array(honest["means"]), np.array(null["means"])
    # each site's influence on each class's mean: the honest run against the run where it sent nothing new
    nulls = [np.array(r["means"]) for n, r in by.items() if n == "null" or n.startswith("null:")]
    honest_influence = np.max([np.linalg.norm(m_honest - m, axis=1) for m in nulls], axis=0)
    # ... and on the class counts (the label prior every site's discriminant weighs classes by), per class
    counted = all("counts" in r for r in by.values())
    if counted:
        c_honest, c_null = np.array(honest["counts"]), np.array(null["counts"])
        c_nulls = [np.array(r["counts"]) for n, r in by.items() if n == "null" or n.startswith("null:")]
        honest_count_influence = np.max([np.abs(c_honest - c) for c in c_nulls], axis=0)
    rowed = all(r.get("residual") is not None for r in by.values())
    if rowed:
        r_honest, r_null = np.array(honest["residual"]), np.array(null["residual"])
        honest_row_influence = np.max([np.linalg.norm(r_honest - np.array(r["residual"]), axis=1)
                                       for n, r in by.items() if n == "null" or n.startswith("null:")], axis=0)
    lines = ["| site 5 | attacked classes (honest holders' images) | its influence on their means (x the largest "
             "honest site's), worst class | on their counts (x the largest honest site's), worst class | on their "
             "residual rows (x the largest honest site's), worst class | honest sites' accuracy | vs honest run | "
             "vs null run |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for name in ("honest", "null", "poison:even", "poison:concentrated", "poison:all", "rows:even",
                 "rows:concentrated", "rows:all"):
        r = by.get(name)
        if r is None:
            continue
        acc = statistics.mean(r["accuracy"][c] for c in ids)
        aims = r["targets"][name.split(":", 1)[1]] if ":" in name else list(range(len(m_null)))
        counts = np.array(r["held"])
        mine = np.array(r["means"])
        ratios = {c: float(np.linalg.norm(mine[c] - m_null[c])) / honest_influence[c] for c in aims}
        worst = max(ratios, key=lambda c: ratios[c])
        moved = float(np.linalg.norm(mine[worst] - m_null[worst]))
        what = ", ".join(f"{c} ({'/'.join(str(int(n)) for n in counts[:, c])})" for c in aims) \
            if len(aims) < 3 else "every class"
        counts_cell = "-"
        if counted:
            c_mine = np.array(r["counts"])
            c_ratios = {c: abs(c_mine[c] - c_null[c]) / max(honest_count_influence[c], 1e-12) for c in aims}
            c_worst = max(c_ratios, key=lambda c: c_ratios[c])
            counts_cell = f"{abs(c_mine[c_worst] - c_null[c_worst]):.4f} ({c_ratios[c_worst]:.1f}x, class {c_worst})"
        rows_cell = "-"
        if rowed:
            r_mine = np.array(r["residual"])
            r_ratios = {c: float(np.linalg.norm(r_mine[c] - r_null[c])) / max(honest_row_influence[c], 1e-12)
                        for c in aims}
            r_worst = max(r_ratios, key=lambda c: r_ratios[c])
            rows_cell = (f"{float(np.linalg.norm(r_mine[r_worst] - r_null[r_worst])):.4f} "
                         f"({r_ratios[r_worst]:.1f}x, class {r_worst})")
        lines.append(f"| {name} | {what} | {moved:.4f} ({ratios[worst]:.1f}x, class {worst}) | {counts_cell} | "
                     f"{rows_cell} | {100 * acc:.1f}% | "
                     f"{100 * (acc - base):+.1f} | {100 * (acc - floor):+.1f} |")
    return "\n".join(lines)


def cli(argv: list[str] | None, doc: str, run_one: Callable[[str, int, int, str], dict[str, Any]],
        attacks: Callable[[str], str], stem: str, method_help: str, setting: str = "") -> int:
    """Run (resumably) and report the attacks of a method: `attacks(method)` its runs after the honest and null ones;
    the log results/<stem>_runs.jsonl for pfeddc, results/<stem>_<method>_runs.jsonl for another."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--method", default="pfeddc", help=method_help)
    p.add_argument("--runs", default=None, help="comma list (default: every run the method has)")
    p.add_argument("--log", type=Path, default=None, help=f"default: results/{stem}_runs.jsonl for pfeddc, "
                   f"results/{stem}_<method>_runs.jsonl for another method")
    p.add_argument("--report-only", action="store_true")
    args = p.parse_args(argv)
    args.runs = args.runs or ("honest,null," + ",".join(f"null:client_0{i}" for i in range(4)) + ","
                              + attacks(args.method))
    args.log = args.log or RESULTS / (f"{stem}_runs.jsonl" if args.method == "pfeddc"
                                      else f"{stem}_{args.method}_runs.jsonl")
    torch.set_num_threads(1)
    configure_logging("json", "error")
    wanted = [] if args.report_only else [{"run": name, "seed": args.seed} for name in args.runs.split(",")]
    records = run_logged(args.log, wanted, lambda w: run_one(w["run"], args.rounds, args.seed, args.method))
    hardware = f"{os.cpu_count()}-core {platform.machine()} CPU, torch {torch.__version__}, 1 thread"
    print(f"# One attacker among 5 sites against the class head (--method {args.method}){setting}, {args.rounds} "
          f"rounds ({hardware})\n\n{report(records)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return cli(argv, __doc__ or "", run, lambda method: "poison:even,poison:concentrated,poison:all" + (
        ",rows:even,rows:concentrated,rows:all" if METHODS[method].residual else ""), "attack_head",
        "pfeddc (the shipped head: its rows:<c> runs attack the shared residual) or one of its ablations "
        "(pfeddc-noresidual: no rows:<c> runs)")


if __name__ == "__main__":
    sys.exit(main())
