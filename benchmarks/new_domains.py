"""New-domain benchmark: data the embedded backbone never saw, next to the references that keep it honest.

    python benchmarks/new_domains.py                          # every setting and method, 5 seeds, resumable
    python benchmarks/new_domains.py --settings inverted --methods pfeddc --seeds 0   # a quick look
    python benchmarks/new_domains.py --report-only            # tables of the recorded runs
    python benchmarks/new_domains.py --model /models/clip-vit-base-patch16 --device cuda   # real weights, GPU

Settings (embedded backbone, 6 rounds x 1 local epoch, Dirichlet 0.3 label shift unless said):
  inverted   MNIST digits inverted (a style every site shares and the backbone never saw), 10 sites, 2 of
             them new (never train: the final global prompts alone, then one local epoch)
  mnist-m    MNIST-M-style digits (blended with photo patches), the same layout
  uci        UCI 8x8 digits upscaled, the same layout
  mixed      four digit domains (plain, inverted, MNIST-M-style, UCI), two sites per domain, 8 sites
  twemoji10  10 emoji concepts drawn in Twitter's style (held out of pretraining), augmented views, 10 sites
             (2 new)
  twemoji64  64 emoji concepts, the same layout
Each setting reports: zero-shot; a logistic regression on the same frozen image features trained by each site
alone and pooled over every training site (C chosen on each site's validation split, then fitted on the training
split the methods train on); every method at the
learning rate benchmarks/accuracy.py chose for it on Fashion-MNIST; pFedDC trained by each site alone (a
one-site federation: no federation). Mean, worst site, the global prompts alone, new sites, failed rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy import RESULTS, Setting, best_rate, fmt, prepare, select_runs, train_settings  # noqa: E402
from inproc import ClientSplit, run_federation  # noqa: E402

from pfeddc.client.model.backbone import Backbone, load_backbone  # noqa: E402
from pfeddc.client.model.prompts import PFedDCModel  # noqa: E402
from pfeddc.client.model.train import image_features  # noqa: E402
from pfeddc.common.logs import configure_logging  # noqa: E402
from pfeddc.common.spec import PromptConfig  # noqa: E402

SETTINGS = {
    "inverted": Setting("digits-inverted", 10, "dirichlet", 0.3, max_samples=0, new_clients=2),
    "mnist-m": Setting("digits-mnist-m", 10, "dirichlet", 0.3, max_samples=0, new_clients=2),
    "uci": Setting("digits-uci", 10, "dirichlet", 0.3, max_samples=0, new_clients=2),
    "mixed": Setting("digits-domains", 8, "domain", max_samples=3000),
    "twemoji10": Setting("twemoji-10", 10, "dirichlet", 0.3, max_samples=0, new_clients=2),
    "twemoji64": Setting("twemoji-64", 10, "dirichlet", 0.3, max_samples=0, new_clients=2),
}
METHODS = ["pfeddc", "pfeddc-noresidual", "pfeddc-nopersonal", "pfeddc-prompts", "pfeddc-noproto", "coop", "promptfl",
           "vision-only", "zeroshot", "pfeddc-alone"]
SEEDS = (0, 1, 2, 3, 4)
ROUNDS = 6
EMBEDDED = "embedded"
C_GRID = (0.1, 1.0, 10.0, 100.0)


def learning_rate(method: str) -> float | None:
    """The rate benchmarks/accuracy.py chose for the method on Fashion-MNIST validation splits."""
    if method == "zeroshot":
        return None
    same = ("pfeddc-alone", "pfeddc-noresidual")  # pfeddc's rate (it sets only prompts, which neither has)
    return best_rate(select_runs("pfeddc" if method in same else method))


def federated(backbone: Backbone, names: list[str], clients: dict[str, ClientSplit], new: dict[str, ClientSplit],
              method: str, seed: int, device: str) -> dict[str, Any]:
    lr = learning_rate(method)
    settings = train_settings(lr if lr is not None else 0.1)
    if method == "pfeddc-alone":  # every site a one-site federation
        finals, failures = {}, []
        for cid, split in clients.items():
            alone = run_federation(backbone, names, {cid: split}, "pfeddc", settings, ROUNDS, seed,
                                   device_name=device)
            finals.update(alone.final)
            failures += alone.failures
        return {"lr": lr, "final": finals, "global_alone": None, "new_clients": {}, "failures": failures}
    result = run_federation(backbone, names, clients, method, settings, ROUNDS, seed, new_clients=new,
                            device_name=device)
    return {"lr": lr, "final": result.final, "global_alone": statistics.fmean(result.final_global.values()),
            "new_clients": result.new_clients, "failures": result.failures, "global_moved": result.global_moved,
            "rounds": result.rounds}


def references(backbone: Backbone, names: list[str], clients: dict[str, ClientSplit], device_name: str
               ) -> dict[str, Any]:
    """Logistic regressions on the frozen image features: each site alone, and pooled over every site."""
    device = torch.device(device_name)
    model = PFedDCModel(backbone, names, PromptConfig(method="zeroshot")).to(device)
    feats = {cid: {part: (image_features(model, getattr(s, part), device).cpu().numpy(),
                          getattr(s, part).labels.numpy())
                   for part in ("train", "val", "test")} for cid, s in clients.items()}
    alone = {cid: _fit_and_score([f["train"]], [f["val"]], f["test"]) for cid, f in feats.items()}
    pooled_train = [f["train"] for f in feats.values()]
    pooled_val = [f["val"] for f in feats.values()]
    pooled = {cid: _fit_and_score(pooled_train, pooled_val, f["test"]) for cid, f in feats.items()}
    return {"lr_alone": alone, "lr_pooled": pooled}


def _fit_and_score(train: list[tuple[np.ndarray, np.ndarray]], val: list[tuple[np.ndarray, np.ndarray]],
                   test: tuple[np.ndarray, np.ndarray]) -> float:
    from sklearn.linear_model import LogisticRegression

    x, y = np.concatenate([t[0] for t in train]), np.concatenate([t[1] for t in train])
    vx, vy = np.concatenate([v[0] for v in val]), np.concatenate([v[1] for v in val])
    if len(np.unique(y)) < 2:  # a site that holds one class predicts it
        return float((test[1] == y[0]).mean())
    best: tuple[float, float] = (-1.0, C_GRID[0])
    for c in C_GRID:
        fit = LogisticRegression(C=c, max_iter=2000).fit(x, y)
        score = float(fit.score(vx, vy)) if len(vy) else 0.0
        best = max(best, (score, c))
    fit = LogisticRegression(C=best[1], max_iter=2000).fit(x, y)  # the methods' training data, no more
    return float(fit.score(*test))


class Runner:
    def __init__(self, log: Path, model: str, device: str) -> None:
        self.log, self.device = log, device
        self.records = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
        self.backbone = load_backbone(model)
        self._data: dict[tuple[str, int], Any] = {}

    def run(self, setting: str, method: str, seed: int) -> None:
        if any(r["setting"] == setting and r["method"] == method and r["seed"] == seed for r in self.records):
            return
        if (setting, seed) not in self._data:
            self._data = {(setting, seed): prepare(SETTINGS[setting], seed, self.backbone)}
        names, clients, new = self._data[(setting, seed)]
        started = time.monotonic()
        if method == "references":
            rec: dict[str, Any] = references(self.backbone, names, clients, self.device)
        else:
            rec = federated(self.backbone, names, clients, new, method, seed, self.device)
        wall = round(time.monotonic() - started, 1)
        rec = {"setting": setting, "method": method, "seed": seed, **rec, "wall_s": wall}
        self.records.append(rec)
        with open(self.log, "a") as fh:
            fh.write(json.dumps(rec) + "\n")
        print(f"  {setting:>10} {method:>15} seed {seed}: {summary_line(rec)} ({rec['wall_s']} s)", flush=True)


def summary_line(rec: dict[str, Any]) -> str:
    if rec["method"] == "references":
        alone, pooled = list(rec["lr_alone"].values()), list(rec["lr_pooled"].values())
        return (f"LR alone {100 * statistics.fmean(alone):.1f} / {100 * min(alone):.1f}, "
                f"pooled {100 * statistics.fmean(pooled):.1f}")
    accs = list(rec["final"].values())
    return f"{100 * statistics.fmean(accs):.1f} / worst {100 * min(accs):.1f}, failures {len(rec['failures'])}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--settings", default=",".join(SETTINGS), help="comma list of settings (default: all)")
    p.add_argument("--methods", default=",".join(METHODS), help="comma list of methods (default: all)")
    p.add_argument("--seeds", default=",".join(map(str, SEEDS)), help="comma list (default: 0-4)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: all cores)")
    p.add_argument("--model", default=EMBEDDED, help="backbone: embedded (default), a local directory or a hub name")
    p.add_argument("--device", default="cpu")
    p.add_argument("--log", type=Path, help="runs file (default: results/new_domains_runs[_<model>].jsonl)")
    p.add_argument("--report-only", action="store_true")
    args = p.parse_args(argv)
    suffix = "" if args.model == EMBEDDED else "_" + Path(args.model).name
    args.log = args.log or RESULTS / f"new_domains_runs{suffix}.jsonl"
    configure_logging("console", "error")
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.report_only:
        runner = Runner(args.log, args.model, args.device)
        started = time.monotonic()
        for seed in [int(s) for s in args.seeds.split(",")]:
            for setting in args.settings.split(","):
                for method in ["references", *args.methods.split(",")]:
                    runner.run(setting, method, seed)
        print(f"done in {time.monotonic() - started:.0f} s")
    from report_new_domains import render

    records = [json.loads(line) for line in args.log.read_text().splitlines()]
    text = (f"Recorded on {platform.machine()} with {os.cpu_count()} CPU cores ({args.device}), torch "
            f"{torch.__version__}, {ROUNDS} rounds x 1 local epoch, backbone {args.model}.\n\n"
            + render(records, SETTINGS, fmt))
    (RESULTS / f"new_domains{suffix}.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
