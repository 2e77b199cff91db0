"""Accuracy benchmark: every method on the same partitions, several seeds, label and domain shift.

    python benchmarks/accuracy.py --out runs/accuracy                  # full run (hours on 2 CPU cores)
    python benchmarks/accuracy.py --seeds 0 --rounds 3 --parts label   # a quick look

Parts:
  label          Fashion-MNIST test split, 10 clients, Dirichlet alpha 0.5 and 0.1, all methods
  domain         digit domains (MNIST, MNIST-M-style, inverted MNIST, UCI 8x8), 8 clients, all methods
  participation  Dirichlet 0.5 at participation 0.5 for the federated methods (1.0 comes from `label`)
  ablation       pFedDC design choices on Dirichlet 0.5: prompt lengths, deep vs shallow, fusion query side
Each federation is a real `pfeddc-sim` run (coordinator + one process per client). Results are appended to
OUT/runs.jsonl as they finish, so an interrupted run keeps what it measured; the tables go to OUT/accuracy.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ALL_METHODS = ["pfeddc", "pfeddc-nofusion", "promptfl", "coop", "vision-only", "zeroshot"]
FEDERATED = ["pfeddc", "pfeddc-nofusion", "promptfl"]
SETTINGS = {
    "dir0.5": ["--source", "fashion-mnist", "--clients", "10", "--scheme", "dirichlet", "--alpha", "0.5"],
    "dir0.1": ["--source", "fashion-mnist", "--clients", "10", "--scheme", "dirichlet", "--alpha", "0.1"],
    "domain": ["--source", "digits-domains", "--clients", "8", "--scheme", "domain"],
}
ABLATIONS = {
    "default": [],
    "text_ctx=8": ["--text-ctx", "8"],
    "vision_tokens=8": ["--vision-tokens", "8"],
    "deep (depth 4)": ["--vision-depth", "4"],
    "query=global": ["--fusion-query", "global"],
    "fusion=concat": ["--fusion", "concat"],
}


def plan(parts: list[str]) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    if "label" in parts:
        runs += [{"setting": s, "method": m, "fraction": 1.0, "variant": "default"} for s in ("dir0.5", "dir0.1")
                 for m in ALL_METHODS]
    if "domain" in parts:
        runs += [{"setting": "domain", "method": m, "fraction": 1.0, "variant": "default"} for m in ALL_METHODS]
    if "participation" in parts:
        runs += [{"setting": "dir0.5", "method": m, "fraction": 0.5, "variant": "default"} for m in FEDERATED]
    if "ablation" in parts:
        runs += [{"setting": "dir0.5", "method": "pfeddc", "fraction": 1.0, "variant": v} for v in ABLATIONS
                 if v != "default"]
    return runs


def key(run: dict[str, Any], seed: int) -> str:
    return f"{run['setting']}|{run['method']}|{run['fraction']}|{run['variant']}|{seed}"


def execute(run: dict[str, Any], seed: int, args: argparse.Namespace) -> dict[str, Any]:
    data = args.out / "partitions" / f"{run['setting']}-seed{seed}"
    name = key(run, seed).replace("|", "_").replace(" ", "").replace("=", "-").replace("(", "").replace(")", "")
    out = args.out / "sims" / name
    shutil.rmtree(out, ignore_errors=True)  # the benchmark's own scratch: a failed earlier attempt is redone
    cmd = [sys.executable, "-m", "pfeddc.client.sim.app", "--data", str(data), "--rounds", str(args.rounds),
           "--methods",
           run["method"], "--out", str(out), "--seed", str(seed), "--fraction", str(run["fraction"]), "--lr",
           str(args.lr), "--local-epochs", str(args.local_epochs), "--threads", str(args.threads),
           "--device", args.device, *ABLATIONS[run["variant"]]]
    started = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{key(run, seed)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    summary = json.loads((out / "results.json").read_text())[0]["summary"]
    return {**run, "seed": seed, **summary, "wall_s": round(time.monotonic() - started, 1)}


def partition_all(settings: set[str], seeds: list[int], args: argparse.Namespace) -> None:
    from pfeddc.client.sim.partition_app import main as partition_main

    for setting in sorted(settings):
        for seed in seeds:
            target = args.out / "partitions" / f"{setting}-seed{seed}"
            if not (target / "manifest.json").exists():
                extra = ["--max-samples", str(args.max_samples)] if args.max_samples else []
                if partition_main([*SETTINGS[setting], "--seed", str(seed), "--out", str(target), *extra]) != 0:
                    raise RuntimeError(f"partition {setting} seed {seed} failed")


def fmt(values: list[float]) -> str:
    if not values:
        return "-"
    mean = 100 * statistics.fmean(values)
    return f"{mean:.1f} ± {100 * statistics.pstdev(values):.1f}" if len(values) > 1 else f"{mean:.1f}"


def tables(records: list[dict[str, Any]], header: str) -> str:
    lines = [header, ""]

    def group(**match: Any) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        for r in records:
            if all(r[k] == v for k, v in match.items()):
                out.setdefault(r["method"] if "variant" in match else r["variant"], []).append(r)
        return out

    for setting in SETTINGS:
        rows = group(setting=setting, fraction=1.0, variant="default")
        if not rows:
            continue
        lines += [f"### {setting}: personalized accuracy % (mean ± std over seeds)", "",
                  "| method | accuracy | std across clients | worst client | seeds |", "|---|---:|---:|---:|---:|"]
        for method in ALL_METHODS:
            rs = rows.get(method, [])
            if rs:
                lines.append(f"| {method} | {fmt([r['mean_accuracy'] for r in rs])} | "
                             f"{fmt([r['std_across_clients'] for r in rs])} | {fmt([r['worst_client'] for r in rs])} "
                             f"| {len(rs)} |")
        lines.append("")
    part = [r for r in records if r["setting"] == "dir0.5" and r["variant"] == "default" and r["method"] in FEDERATED]
    if any(r["fraction"] == 0.5 for r in part):
        lines += ["### participation (dir0.5): accuracy % at 1.0 vs 0.5", "", "| method | 1.0 | 0.5 |",
                  "|---|---:|---:|"]
        for method in FEDERATED:
            full = [r["mean_accuracy"] for r in part if r["method"] == method and r["fraction"] == 1.0]
            half = [r["mean_accuracy"] for r in part if r["method"] == method and r["fraction"] == 0.5]
            lines.append(f"| {method} | {fmt(full)} | {fmt(half)} |")
        lines.append("")
    ablation = [r for r in records if r["setting"] == "dir0.5" and r["method"] == "pfeddc" and r["fraction"] == 1.0]
    if any(r["variant"] != "default" for r in ablation):
        lines += ["### pFedDC design choices (dir0.5)", "", "| variant | accuracy | worst client |", "|---|---:|---:|"]
        for variant in ABLATIONS:
            rs = [r for r in ablation if r["variant"] == variant]
            if rs:
                lines.append(f"| {variant} | {fmt([r['mean_accuracy'] for r in rs])} | "
                             f"{fmt([r['worst_client'] for r in rs])} |")
    return "\n".join(lines)


def run_all(runs: list[dict[str, Any]], seeds: list[int], args: argparse.Namespace, log: Path) -> None:
    partition_all({r["setting"] for r in runs}, seeds, args)
    from pfeddc.client.embedded import embedded_dir

    embedded_dir()
    done = {key(r, r["seed"]) for r in map(json.loads, log.read_text().splitlines())} if log.exists() else set()
    todo = [(r, s) for s in seeds for r in runs if key(r, s) not in done]
    print(f"{len(todo)} federations to run ({len(done)} already in {log})", flush=True)
    with ThreadPoolExecutor(args.jobs) as pool:
        for record in pool.map(lambda rs: execute(rs[0], rs[1], args), todo):
            with open(log, "a") as fh:
                fh.write(json.dumps(record) + "\n")
            print(f"  {key(record, record['seed'])}: {100 * record['mean_accuracy']:.1f}% "
                  f"(worst {100 * record['worst_client']:.1f}%, {record['wall_s']} s)", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("runs/accuracy"))
    p.add_argument("--parts", default="label,domain,participation,ablation")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--local-epochs", type=int, default=1)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--max-samples", type=int, default=0, help="subsample each source (0 = all)")
    p.add_argument("--jobs", type=int, default=1, help="federations run at the same time")
    p.add_argument("--threads", type=int, default=1, help="torch threads per client process")
    p.add_argument("--device", default="cpu")
    p.add_argument("--log", type=Path, help="results file (default: OUT/runs.jsonl)")
    p.add_argument("--report-only", action="store_true", help="print the tables of an existing results file")
    args = p.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    runs = plan(args.parts.split(","))
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.log or args.out / "runs.jsonl"
    if not args.report_only:
        run_all(runs, seeds, args, log)
    records = [json.loads(x) for x in log.read_text().splitlines()]
    header = (f"Accuracy benchmark: {args.rounds} rounds x {args.local_epochs} local epoch(s), lr {args.lr}, seeds "
              f"{args.seeds}, embedded backbone; {platform.machine()}, {os.cpu_count()} cores, device {args.device}")
    text = tables(records, header)
    (args.out / "accuracy.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
