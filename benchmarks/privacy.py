"""Privacy audit: membership inference against what each party sees of a pFedDC federation, with and without DP.

    python benchmarks/privacy.py                               # every setting and DP level, resumable
    python benchmarks/privacy.py --settings inverted --levels off,shipped --rounds 2 \
        --log /tmp/p.jsonl --out /tmp/p.md                     # a smoke run (~2 min), away from the results
    python benchmarks/privacy.py --report-only                 # tables of the recorded runs

Views (benchmarks/membership.py's `Audit` says how each is scored):
  a   one site's update as the coordinator sees it without secure aggregation (the update, local parts at 0)
  a'  the coordinator's view of that site under secure aggregation: only the round's aggregate
  b   the final global prompts (any site, a new site, whoever gets them)
  c   the site's personalized model (global + its local prompts and fusion: an insider or an API user)
  0   control: the initial prompts, never trained (level "control": no federation, loss attack only)
Attacks: loss threshold, and calibrated (loss under a reference the attacker holds minus loss under the view).
Members: each target site's training examples; non-members: as many of the same site's held-out examples
(validation + test split, never trained on), drawn at random; every training site is a target, pooled.
DP levels: off (class rows shared: the default without DP), off-local (class rows local, as every DP run must:
the coordinator refuses DP with shared class rows), eps1/eps4/eps16 (noise multiplier calibrated to that epsilon
at delta 1e-5 over the run's rounds) and shipped (see SHIPPED_*). DP clip 0.1 throughout (accuracy.py's).
Under secure aggregation with DP each site adds its share of the noise (common/secagg/noise.py); with every
site surviving that is n/t times the central noise, so the central DP run here is the weakest case of (a').
Federations run in process (inproc.py), pFedDC at the rate accuracy.py chose; 1 torch thread by default.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy import RESULTS, Setting, best_rate, prepare, select_runs, train_settings  # noqa: E402
from inproc import run_federation  # noqa: E402
from membership import Audit, candidates, metrics  # noqa: E402

from pfeddc.client.model.backbone import load_backbone  # noqa: E402
from pfeddc.common.logs import configure_logging  # noqa: E402
from pfeddc.common.spec import PromptConfig  # noqa: E402
from pfeddc.server.pipeline.privacy import DEFAULT_DELTA, DpSettings, epsilon_after, noise_for_epsilon  # noqa: E402

SETTINGS = {  # accuracy.py's dir0.5 and new_domains.py's inverted / twemoji10, every site training
    "fmnist": Setting("fashion-mnist", 10, "dirichlet", 0.5, max_samples=3000),
    "inverted": Setting("digits-inverted", 10, "dirichlet", 0.3, max_samples=0),
    "twemoji10": Setting("twemoji-10", 10, "dirichlet", 0.3, max_samples=0),
}
LEVELS = ["control", "off", "off-local", "eps16", "shipped", "eps4", "eps1"]
# No noise multiplier ships as a default (--dp-noise-multiplier has none). The setting the project documents is
# accuracy.py's: clip 0.1 at delta 1e-5, its least noisy recorded budget being epsilon 8 over 10 rounds; its
# multiplier (2.016) is "shipped" here, whatever the run's rounds (it then spends less than 8).
SHIPPED_EPSILON, SHIPPED_ROUNDS, DP_CLIP = 8.0, 10, 0.1
ROUNDS, SEED = 5, 0
TITLE = "# Privacy audit: membership inference against each view of a federation (benchmarks/privacy.py)"
# The written parts of the results file, before the tables and after them, are kept when the tables are redone.
RECORDED, FINDINGS = "Recorded on ", "## What the numbers say"


def dp_for(level: str, rounds: int) -> DpSettings | None:
    if level.startswith("off") or level == "control":
        return None
    if level == "shipped":
        return DpSettings(noise_for_epsilon(SHIPPED_EPSILON, SHIPPED_ROUNDS), DP_CLIP)
    return DpSettings(noise_for_epsilon(float(level.removeprefix("eps")), rounds), DP_CLIP)


def pfeddc_rate() -> float:
    """pFedDC's rate as accuracy.py chose it on Fashion-MNIST validation splits (0.1 when not recorded)."""
    runs = select_runs("pfeddc")
    return best_rate(runs) if runs else 0.1


def audit(setting_name: str, level: str, seed: int, rounds: int, backbone: Any, data: Any) -> dict[str, Any]:
    classnames, clients, _ = data
    dp = dp_for(level, rounds)
    cfg = PromptConfig(classes=tuple(classnames)) if level == "off" else PromptConfig()
    targets = {cid: candidates(s.train, [s.val, s.test], seed * 1000 + i) for i, (cid, s) in
               enumerate(sorted(clients.items()))}
    started = time.monotonic()
    observer = Audit(backbone, classnames, replace(cfg, method="pfeddc"), targets, seed, torch.device("cpu"))
    sites = {cid: {"train": len(s.train.labels), "held": len(s.val.labels) + len(s.test.labels),
                   "candidates": targets[cid].size} for cid, s in sorted(clients.items())}
    if level == "control":  # no federation: the initial prompts on the same candidates
        return {"setting": setting_name, "level": level, "seed": seed, "rounds": rounds, "sites": sites,
                "views": {"0": {"loss": metrics(observer.views()["0"]["loss"])}},
                "wall_s": round(time.monotonic() - started, 1)}
    result = run_federation(backbone, classnames, clients, "pfeddc", train_settings(pfeddc_rate()), rounds, seed,
                            prompt=cfg, dp=dp, observer=observer)
    views = observer.views()
    return {
        "setting": setting_name, "level": level, "seed": seed, "rounds": rounds,
        "noise_multiplier": dp.noise_multiplier if dp else None, "clip": dp.clip if dp else None,
        "epsilon": epsilon_after(rounds, dp.noise_multiplier) if dp else None, "delta": DEFAULT_DELTA,
        "classes_shared": cfg.shared_classes, "lr": pfeddc_rate(),
        "mean_accuracy": statistics.fmean(result.final.values()),
        "global_alone": statistics.fmean(result.final_global.values()),
        "views": {v: {a: metrics(s) for a, s in attacks.items()} for v, attacks in views.items()},
        "per_site_auc": observer.per_site_auc(),
        "sites": sites, "failures": result.failures, "wall_s": round(time.monotonic() - started, 1),
    }


class Runner:
    def __init__(self, log: Path) -> None:
        self.log = log
        self.records = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
        self.backbone = load_backbone("embedded")
        self._data: dict[tuple[str, int], Any] = {}

    def run(self, setting: str, level: str, seed: int, rounds: int) -> None:
        key = {"setting": setting, "level": level, "seed": seed, "rounds": rounds}
        if any(all(r.get(k) == v for k, v in key.items()) for r in self.records):
            return
        if (setting, seed) not in self._data:
            self._data = {(setting, seed): prepare(SETTINGS[setting], seed, self.backbone)}
        rec = audit(setting, level, seed, rounds, self.backbone, self._data[(setting, seed)])
        self.records.append(rec)
        with open(self.log, "a") as fh:
            fh.write(json.dumps(rec) + "\n")
        if level == "control":
            print(f"  {setting:>9} {level:>9} seed {seed}: loss AUC of the initial prompts "
                  f"{rec['views']['0']['loss']['auc']:.3f}", flush=True)
            return
        aucs = " ".join(f"{view} {m['calibrated']['auc']:.3f}" for view, m in rec["views"].items()
                        if "calibrated" in m)
        print(f"  {setting:>9} {level:>9} seed {seed}: accuracy {100 * rec['mean_accuracy']:.1f}, global alone "
              f"{100 * rec['global_alone']:.1f}; calibrated AUC {aucs} ({rec['wall_s']} s)", flush=True)


def hardware(threads: int) -> str:
    return (f"{platform.machine()} CPU, {os.cpu_count()} cores (shared), {threads} torch thread(s), torch "
            f"{torch.__version__}, numpy {np.__version__}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--settings", default=",".join(SETTINGS),
                   help=f"comma list among {', '.join(SETTINGS)} (default: all)")
    p.add_argument("--levels", default=",".join(LEVELS), help=f"comma list of DP levels among {', '.join(LEVELS)} "
                   "(default: all)")
    p.add_argument("--seeds", default=str(SEED), help="comma list of seeds (default: %(default)s)")
    p.add_argument("--rounds", type=int, default=ROUNDS, help="rounds of 1 local epoch (default: %(default)s)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default: %(default)s)")
    p.add_argument("--log", type=Path, default=RESULTS / "privacy_runs.jsonl",
                   help="runs file, appended and resumed from (default: results/privacy_runs.jsonl)")
    p.add_argument("--out", type=Path, default=RESULTS / "privacy.md", help="tables (default: results/privacy.md)")
    p.add_argument("--report-only", action="store_true", help="only the tables of the recorded runs")
    args = p.parse_args(argv)
    configure_logging("console", "error")
    torch.set_num_threads(args.threads)
    started = time.monotonic()
    if not args.report_only:
        runner = Runner(args.log)
        for seed in [int(s) for s in args.seeds.split(",")]:
            for setting in args.settings.split(","):
                for level in args.levels.split(","):
                    runner.run(setting, level, seed, args.rounds)
        print(f"done in {time.monotonic() - started:.0f} s")
    from report_privacy import render

    records = [json.loads(line) for line in args.log.read_text().splitlines()] if args.log.exists() else []
    text = f"{RECORDED}{hardware(args.threads)}; embedded backbone.\n\n" + render(records)
    print(text)
    old = args.out.read_text() if args.out.exists() else ""
    head = old.split(RECORDED, 1)[0] if RECORDED in old else f"{TITLE}\n\n"
    kept = old.split(FINDINGS, 1)
    args.out.write_text(head + text + "\n" + (f"\n{FINDINGS}{kept[1]}" if len(kept) == 2 else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
