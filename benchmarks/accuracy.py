"""Accuracy benchmark: pFedDC against its baselines and its own ablations, fairly tuned, several seeds.

    python benchmarks/accuracy.py                        # everything (hours on 2 CPU cores), resumable
    python benchmarks/accuracy.py --settings dir0.5 --methods pfeddc,promptfl --seeds 0   # a quick look
    python benchmarks/accuracy.py --report-only          # tables and plots of the recorded runs

Settings (embedded backbone, 10 rounds x 1 local epoch, 10 clients unless said):
  dir0.5, dir0.1  Fashion-MNIST test split (3,000 images), Dirichlet label shift
  fewshot         Fashion-MNIST test split, Dirichlet 0.5, at most 16 training images per class per client
  domain          digit domains (MNIST, inverted, MNIST-M-style, UCI 8x8; 3,000 images), 8 clients
  newclients      dir0.5 where 2 of the 10 clients never train: the final global prompts alone, then after
                  one local epoch of personalization
  part0.5         dir0.5 with half the clients sampled each round
Every method gets the same learning-rate grid; each method's rate is chosen once, on dir0.5 seeds 0-2, by the
mean accuracy on validation splits held out of each client's training data (never a test split), among the
rates whose runs had no collapse, and then used in every setting and seed. The ablations run at pFedDC's rate
(they are pFedDC minus one part).
Federations run in process (benchmarks/inproc.py: the coordinator's and the clients' real round code).
Results are appended to benchmarks/results/accuracy_runs.jsonl as they finish; tables go to
benchmarks/results/accuracy.md, plots to benchmarks/results/*.png.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from inproc import ClientSplit, RunResult, run_federation  # noqa: E402

from pfeddc.client.model.backbone import Backbone, load_backbone, preprocess  # noqa: E402
from pfeddc.client.model.images import ImageSet  # noqa: E402
from pfeddc.client.partition import partition, train_test_split  # noqa: E402
from pfeddc.client.sim.sources import load_source  # noqa: E402
from pfeddc.common.logs import configure_logging  # noqa: E402
from pfeddc.common.messages import TrainSettings  # noqa: E402
from pfeddc.common.spec import PromptConfig  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
METHODS = ["pfeddc", "promptfl", "coop", "vision-only", "zeroshot"]
ABLATIONS = ["pfeddc-nopersonal", "pfeddc-prompts", "pfeddc-noproto", "pfeddc-nofusion", "pfeddc-novision",
             "pfeddc-notext", "pfeddc-nolocal"]
# The prompts' rate was chosen on dir0.5 before the class head (those runs are pfeddc-noproto's): pfeddc-prompts
# and its ablations use it (pfeddc itself trains no prompts: its rate is unused).
TUNED_AS = {m: "pfeddc-noproto" for m in ["pfeddc", *ABLATIONS]}
LR_GRID = (0.01, 0.03, 0.1, 0.3)  # the text prompts' rate; vision and fusion rates scale with it (defaults' ratios)
SELECT_ON, SELECT_SEEDS = "dir0.5", (0, 1, 2)
SEEDS = (0, 1, 2, 3, 4)
ROUNDS = 10


@dataclass(frozen=True)
class Setting:
    source: str
    clients: int
    scheme: str
    alpha: float = 0.5
    max_samples: int = 3000
    fewshot: int = 0  # training images per class per client (0: all)
    new_clients: int = 0  # clients that never train, evaluated at the end
    fraction: float = 1.0


SETTINGS = {
    "dir0.5": Setting("fashion-mnist", 10, "dirichlet", 0.5),
    "dir0.1": Setting("fashion-mnist", 10, "dirichlet", 0.1),
    "fewshot": Setting("fashion-mnist", 10, "dirichlet", 0.5, max_samples=0, fewshot=16),
    "domain": Setting("digits-domains", 8, "domain", max_samples=3000),
    "newclients": Setting("fashion-mnist", 10, "dirichlet", 0.5, new_clients=2),
    "part0.5": Setting("fashion-mnist", 10, "dirichlet", 0.5, fraction=0.5),
}


VISION_PER_TEXT, FUSION_PER_TEXT = 1.0 / 0.03, 0.2  # fixed ratios, measured first on dir0.5 (docs/method.md)


def train_settings(lr: float) -> TrainSettings:
    """One knob per method: the text prompts' rate, with the vision and fusion rates in fixed ratios to it."""
    return replace(TrainSettings(), lr=lr, lr_vision=lr * VISION_PER_TEXT, lr_fusion=lr * FUSION_PER_TEXT)


DP_EPSILONS = (1.0, 4.0, 8.0)
DP_SETTING, DP_CLIP = "fewshot", 0.1  # the smallest setting; clip near the honest per-round update norm


def prepare(setting: Setting, seed: int, backbone: Backbone) -> tuple[list[str], dict[str, ClientSplit],
                                                                        dict[str, ClientSplit]]:
    from PIL import Image

    source = load_source(setting.source)
    if setting.max_samples:
        source = source.subset(setting.max_samples, seed)
    assert source.images is not None
    size = backbone.image_size
    pixels = torch.from_numpy(np.stack([preprocess(Image.fromarray(img), size) for img in source.images]))
    labels = source.labels
    parts = partition(labels, setting.clients, setting.scheme, seed, alpha=setting.alpha, domains=source.domains)
    rng = np.random.default_rng(seed)
    splits = {}
    for i, part in enumerate(parts):
        held = train_test_split(part, labels, 0.2, seed + i)
        fit = train_test_split(held.train, labels, 0.2, seed + 100 + i)  # validation: 20% of training data
        train = fit.train
        if setting.fewshot:
            train = [j for c in np.unique(labels[train]) for j in
                     rng.permutation([k for k in train if labels[k] == c])[:setting.fewshot].tolist()]
        sets = [ImageSet(pixels[idx], torch.from_numpy(labels[idx]))
                for idx in (np.array(train), np.array(fit.test), np.array(held.test))]
        splits[f"client_{i:02d}"] = ClientSplit(*sets)
    names = sorted(splits)
    new = {cid: splits.pop(cid) for cid in names[len(names) - setting.new_clients:]} if setting.new_clients else {}
    return list(source.classnames), splits, new


def record(setting: str, method: str, seed: int, lr: float | None, role: str, result: RunResult) -> dict[str, Any]:
    accs = list(result.final.values())
    return {
        "setting": setting, "method": method, "seed": seed, "lr": lr, "role": role, "val": result.val,
        "mean_accuracy": statistics.fmean(accs), "std_across_clients": statistics.pstdev(accs),
        "worst_client": min(accs), "global_alone": statistics.fmean(result.final_global.values()),
        "new_clients": result.new_clients, "failures": result.failures, "global_moved": result.global_moved,
        "rounds": result.rounds, "wall_s": result.wall_s,
    }


class Runner:
    def __init__(self, log: Path, rounds: int) -> None:
        self.log, self.rounds = log, rounds
        self.records = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
        self.backbone = load_backbone("embedded")
        self._data: dict[tuple[str, int], Any] = {}

    def find(self, **match: Any) -> list[dict[str, Any]]:
        return [r for r in self.records if all(r.get(k) == v for k, v in match.items())]

    def run(self, setting: str, method: str, seed: int, lr: float | None, role: str,
            epsilon: float | None = None) -> dict[str, Any]:
        done = self.find(setting=setting, method=method, seed=seed, lr=lr, epsilon=epsilon)
        if done:
            return done[0]
        if (setting, seed) not in self._data:
            self._data = {(setting, seed): prepare(SETTINGS[setting], seed, self.backbone)}
        classnames, clients, new = self._data[(setting, seed)]
        dp = None
        if epsilon is not None:
            from pfeddc.server.pipeline.privacy import DpSettings, noise_for_epsilon

            dp = DpSettings(noise_for_epsilon(epsilon, self.rounds), DP_CLIP)
        # under DP the class rows stay local (the coordinator refuses DP with --classes: noise on the share
        # would be divided into the rows)
        prompt = PromptConfig() if dp else None
        result = run_federation(self.backbone, classnames, clients, method, train_settings(lr or TrainSettings().lr),
                                self.rounds, seed, SETTINGS[setting].fraction, new, prompt=prompt, dp=dp)
        rec = {**record(setting, method, seed, lr, role, result), "epsilon": epsilon}
        self.records.append(rec)
        with open(self.log, "a") as fh:
            fh.write(json.dumps(rec) + "\n")
        print(f"  {setting:>10} {method:>15} seed {seed} lr {lr}: {100 * rec['mean_accuracy']:.1f}% "
              f"(val {100 * rec['val']:.1f}, worst {100 * rec['worst_client']:.1f}, failures "
              f"{len(rec['failures'])}, {rec['wall_s']} s)", flush=True)
        return rec

    def learning_rate(self, method: str) -> float:
        """The method's rate: chosen on dir0.5, seeds 0-2 (pfeddc's for its ablations); see `best_rate`."""
        tuned = TUNED_AS.get(method, method)
        tried = [self.run(SELECT_ON, tuned, seed, lr, "select") for lr in LR_GRID for seed in SELECT_SEEDS]
        return best_rate(tried)

    def method(self, setting: str, method: str, seeds: list[int]) -> None:
        lr = None if method == "zeroshot" else self.learning_rate(method)
        for seed in seeds:
            self.run(setting, method, seed, lr, "final")

    def privacy(self, seeds: list[int]) -> None:
        """pFedDC under central DP (DP-FedAvg) at a few privacy budgets, on the smallest setting."""
        lr = self.learning_rate("pfeddc")
        for epsilon in DP_EPSILONS:
            for seed in seeds:
                self.run(DP_SETTING, "pfeddc", seed, lr, "privacy", epsilon)


def best_rate(tried: list[dict[str, Any]]) -> float:
    """The rate with the best mean validation accuracy, among those whose runs had no collapse (stability
    first; all rates when every one collapsed somewhere)."""
    by_rate: dict[float, list[dict[str, Any]]] = {}
    for r in tried:
        by_rate.setdefault(float(r["lr"]), []).append(r)
    stable = {lr: rs for lr, rs in by_rate.items() if not any(r["failures"] for r in rs)} or by_rate
    return max(stable, key=lambda lr: statistics.fmean(r["val"] for r in stable[lr]))


def chosen(records: list[dict[str, Any]], setting: str, method: str) -> list[dict[str, Any]]:
    """The runs that count: zero-shot's, or those at the method's chosen learning rate, one per seed."""
    rs = [r for r in records if r["setting"] == setting and r["method"] == method and r.get("epsilon") is None]
    if method == "zeroshot":
        return rs
    select = select_runs(method, records)
    if not select:
        return []
    lr = best_rate(select)
    return [r for r in rs if r["lr"] == lr]


def select_runs(method: str, records: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """The learning-rate selection runs that decide `method`'s rate (recorded ones when `records` is None)."""
    if records is None:
        log = RESULTS / "accuracy_runs.jsonl"
        records = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    tuned = TUNED_AS.get(method, method)
    return [r for r in records if r["setting"] == SELECT_ON and r["method"] == tuned and r["seed"] in SELECT_SEEDS
            and r["lr"] in LR_GRID and r.get("epsilon") is None]


def fmt(values: list[float], scale: float = 100.0, digits: int = 1) -> str:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return "-"
    mean = scale * statistics.fmean(values)
    spread = scale * statistics.pstdev(values)
    return f"{mean:.{digits}f} ± {spread:.{digits}f}" if len(values) > 1 else f"{mean:.{digits}f}"


def report(records: list[dict[str, Any]]) -> str:
    from report_accuracy import render

    return render(records, chosen, fmt, SETTINGS, METHODS, ABLATIONS)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--settings", default=",".join(SETTINGS), help="comma list of settings (default: all)")
    p.add_argument("--methods", default=",".join(METHODS), help="comma list of methods (default: all)")
    p.add_argument("--ablation", action=argparse.BooleanOptionalAction, default=True,
                   help="also the pFedDC ablations on dir0.5 (default: on)")
    p.add_argument("--privacy", action=argparse.BooleanOptionalAction, default=True,
                   help=f"also pFedDC under DP-FedAvg at epsilon {DP_EPSILONS} on {DP_SETTING} (default: on)")
    p.add_argument("--seeds", default=",".join(map(str, SEEDS)), help="comma list (default: 0-4)")
    p.add_argument("--rounds", type=int, default=ROUNDS)
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: all cores)")
    p.add_argument("--log", type=Path, default=RESULTS / "accuracy_runs.jsonl")
    p.add_argument("--report-only", action="store_true")
    args = p.parse_args(argv)
    configure_logging("console", "error")
    if args.threads:
        torch.set_num_threads(args.threads)
    RESULTS.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        runner = Runner(args.log, args.rounds)
        seeds = [int(s) for s in args.seeds.split(",")]
        started = time.monotonic()
        for setting in args.settings.split(","):
            for method in args.methods.split(","):
                runner.method(setting, method, seeds)
        if args.ablation and "dir0.5" in args.settings.split(","):
            for method in ABLATIONS:
                runner.method("dir0.5", method, seeds)
        if args.privacy:
            runner.privacy(seeds)
        print(f"done in {time.monotonic() - started:.0f} s")
    records = [json.loads(line) for line in args.log.read_text().splitlines()]
    text = (f"Recorded on {platform.machine()} with {os.cpu_count()} CPU cores, torch {torch.__version__}, "
            f"{args.rounds} rounds x 1 local epoch, embedded backbone.\n\n" + report(records))
    (RESULTS / "accuracy.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
