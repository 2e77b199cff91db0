"""Few-shot federation benchmark: many sites, few labelled images each, beside what pooling all the data gives.

    python benchmarks/few_shot.py                                # the whole grid, 3 seeds, resumable
    python benchmarks/few_shot.py --sources digits-inverted --sites 10 --shots 6 --alphas 100 --seeds 0
    python benchmarks/few_shot.py --ablation                     # also the ablations (seed 0, 10 sites)
    python benchmarks/few_shot.py --report-only                  # tables of the recorded runs

The grid is fixed, so no choice in it can lower the bar: the new-domain benchmark's sources (styles the embedded
backbone never saw); 10 and 30 sites; 2, 6 and 16 training images per class per site on average (a site's label
distribution ~ Dirichlet(alpha) over the classes, its training set shots x classes images); alpha 100 (near
IID) and 1.0; 20 test images per site from its own label distribution; 2 more sites that join late (never
train: the final global model alone, then one round of local work); seeds 0-2. A cell that needs more images of
a class than its source holds is reported as such, never shrunk (the Twemoji sources draw as many augmented
views of their drawings as a cell needs).

Per cell: pfeddc with the shipped defaults (8 rounds, in process: benchmarks/inproc.py runs the coordinator's
and the clients' real round code), pfeddc at each site alone (a one-site federation each), a logistic
regression on the same frozen image features by each site alone and on the pooled training images of all sites
(C chosen by the same 5-fold cross-validation on the training images, from C_GRID), and FedAvg of a linear
softmax head on those features (8 rounds of 20 local full-batch steps, then 5 local fine-tuning steps: the
federated baseline). Every method is scored on each site's own test split; "captured" is the share of the
headroom (pooled LR - LR alone) a method's mean closes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy import RESULTS, train_settings  # noqa: E402
from inproc import ClientSplit, run_federation  # noqa: E402

from pfeddc.client.model.backbone import Backbone, load_backbone, preprocess  # noqa: E402
from pfeddc.client.model.images import ImageSet  # noqa: E402
from pfeddc.client.model.prompts import PFedDCModel  # noqa: E402
from pfeddc.client.model.train import image_features  # noqa: E402
from pfeddc.client.sim.sources import TWEMOJI, Source, load_source, twemoji  # noqa: E402
from pfeddc.common.logs import configure_logging  # noqa: E402
from pfeddc.common.spec import PromptConfig  # noqa: E402

SOURCES = ("digits-inverted", "digits-mnist-m", "digits-uci", "twemoji-10", "twemoji-64")
SITES, SHOTS, ALPHAS, SEEDS = (10, 30), (2, 6, 16), (100.0, 1.0), (0, 1, 2)
TEST_PER_SITE, LATE_SITES, ROUNDS = 20, 2, 8
C_GRID = (0.01, 0.1, 1.0, 10.0, 100.0)
FOLDS = 5
# FedAvg of a linear head: its rates chosen on splits of seeds 100-101 (never the benchmark's), the best of each
HEAD_STEPS, HEAD_FINETUNE, HEAD_LR, HEAD_FINETUNE_LR = 20, 5, 10.0, 1.0
METHODS = ("references", "zeroshot", "fedavg-head", "pfeddc", "pfeddc-alone")
ABLATIONS = ("pfeddc-noresidual", "pfeddc-nopersonal", "pfeddc-prompts", "pfeddc-nofusion", "pfeddc-novision",
             "pfeddc-notext", "pfeddc-nolocal", "pfeddc-noproto")
LOG = RESULTS / "few_shot_runs.jsonl"


@dataclass(frozen=True)
class Cell:
    source: str
    sites: int
    shots: int
    alpha: float

    @property
    def key(self) -> str:
        return f"{self.source}/{self.sites}x{self.shots}/a{self.alpha:g}"


def sample_sites(labels: np.ndarray, cell: Cell, seed: int) -> list[tuple[np.ndarray, np.ndarray]] | None:
    """Per site (training sites, then the late ones): training and test indices, without overlap; None when a
    class runs out of images."""
    rng = np.random.default_rng(seed)
    classes = int(labels.max()) + 1
    pools = {c: list(rng.permutation(np.flatnonzero(labels == c))) for c in range(classes)}
    out = []
    for _ in range(cell.sites + LATE_SITES):
        p = rng.dirichlet(np.full(classes, cell.alpha))
        train, test = rng.multinomial(cell.shots * classes, p), rng.multinomial(TEST_PER_SITE, p)
        idx_train, idx_test = [], []
        for c in range(classes):
            if len(pools[c]) < train[c] + test[c]:
                return None
            taken = [pools[c].pop() for _ in range(train[c] + test[c])]
            idx_train += taken[:train[c]]
            idx_test += taken[train[c]:]
        out.append((np.array(idx_train, dtype=np.int64), np.array(idx_test, dtype=np.int64)))
    return out


def source_for(cell: Cell) -> Source:
    """The cell's source; a Twemoji source draws enough augmented views for the cell (1.5x its expected need)."""
    if cell.source in TWEMOJI:
        count = TWEMOJI[cell.source][0]
        need = (cell.sites + LATE_SITES) * (cell.shots * count + TEST_PER_SITE) / count
        return twemoji(cell.source, count, int(1.5 * need) + 20)  # the new-domain benchmark's concepts
    return load_source(cell.source)


def lr_cv(x: np.ndarray, y: np.ndarray, seed: int) -> Any:
    """A logistic regression whose C is chosen by FOLDS-fold cross-validation on (x, y), refitted on all of it;
    a constant predictor when only one class is there."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import KFold

    if len(np.unique(y)) < 2:
        return ("constant", int(y[0]))
    folds = list(KFold(min(FOLDS, len(y)), shuffle=True, random_state=seed).split(x))
    best = (-1.0, C_GRID[0])
    for c in C_GRID:
        scores = []
        for fit, held in folds:
            if len(np.unique(y[fit])) < 2:
                scores.append(float((y[held] == y[fit][0]).mean()))
                continue
            scores.append(LogisticRegression(C=c, max_iter=3000).fit(x[fit], y[fit]).score(x[held], y[held]))
        best = max(best, (float(np.mean(scores)), c))
    return ("fitted", LogisticRegression(C=best[1], max_iter=3000).fit(x, y))


def lr_score(model: Any, x: np.ndarray, y: np.ndarray) -> float:
    kind, value = model
    return float((y == value).mean()) if kind == "constant" else float(value.score(x, y))


def references(feats: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]], sites: int, seed: int
               ) -> dict[str, Any]:
    """LR by each training site alone and pooled over them, on each site's test split (late sites: pooled)."""
    train = feats[:sites]
    alone = {f"site_{i:02d}": lr_score(lr_cv(x, y, seed), tx, ty) for i, (x, y, tx, ty) in enumerate(train)}
    pooled_model = lr_cv(np.concatenate([f[0] for f in train]), np.concatenate([f[1] for f in train]), seed)
    pooled = {f"site_{i:02d}": lr_score(pooled_model, tx, ty) for i, (_, _, tx, ty) in enumerate(feats)}
    return {"lr_alone": alone, "lr_pooled": {k: v for k, v in pooled.items() if int(k[5:]) < sites},
            "late_lr_pooled": {k: v for k, v in pooled.items() if int(k[5:]) >= sites}}


def zero_shot(backbone: Backbone, names: list[str], feats: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
              sites: int) -> dict[str, Any]:
    """Zero-shot CLIP (the class names' text features, no training) on each training site's test split."""
    model = PFedDCModel(backbone, names, PromptConfig(method="zeroshot"))
    with torch.no_grad():
        text = F.normalize(model.text_features().float(), dim=-1).numpy()
    return {"zeroshot": {f"site_{i:02d}": float(((tx @ text.T).argmax(1) == ty).mean())
                         for i, (_, _, tx, ty) in enumerate(feats[:sites])}}


def fedavg_head(feats: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]], sites: int, classes: int
                ) -> dict[str, Any]:
    """FedAvg of a linear softmax head (weights and biases from zero) on the frozen features, weighted by example
    counts: ROUNDS rounds of HEAD_STEPS full-batch SGD steps per site, then HEAD_FINETUNE local steps."""
    data = [(torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(tx), torch.from_numpy(ty))
            for x, y, tx, ty in feats]
    width = data[0][0].shape[1]
    weights, bias = torch.zeros(classes, width), torch.zeros(classes)

    def local(w: torch.Tensor, b: torch.Tensor, x: torch.Tensor, y: torch.Tensor, steps: int, lr: float = HEAD_LR
              ) -> tuple[torch.Tensor, torch.Tensor]:
        w, b = w.clone().requires_grad_(True), b.clone().requires_grad_(True)
        opt = torch.optim.SGD([w, b], lr=lr)
        for _ in range(steps):
            loss = F.cross_entropy(x @ w.t() + b, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        return w.detach(), b.detach()

    counts = torch.tensor([len(d[1]) for d in data[:sites]], dtype=torch.float32)
    for _ in range(ROUNDS):
        fitted = [local(weights, bias, x, y, HEAD_STEPS) for x, y, _, _ in data[:sites]]
        weights = sum(n * w for n, (w, _) in zip(counts, fitted, strict=True)) / counts.sum()
        bias = sum(n * b for n, (_, b) in zip(counts, fitted, strict=True)) / counts.sum()

    def score(w: torch.Tensor, b: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> float:
        return float(((x @ w.t() + b).argmax(1) == y).float().mean())

    out: dict[str, Any] = {"global": {}, "finetuned": {}}
    for i, (x, y, tx, ty) in enumerate(data):
        key = "late_" if i >= sites else ""
        out.setdefault(f"{key}global", {})[f"site_{i:02d}"] = score(weights, bias, tx, ty)
        tuned = local(weights, bias, x, y, HEAD_FINETUNE, HEAD_FINETUNE_LR)
        out.setdefault(f"{key}finetuned", {})[f"site_{i:02d}"] = score(*tuned, tx, ty)
    return out


class Runner:
    def __init__(self, log: Path, device: str) -> None:
        self.log, self.device = log, device
        self.records = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
        self.backbone: Backbone = load_backbone("embedded")
        self._cell: tuple[Cell, int] | None = None
        self._data: Any = None

    def done(self, cell: Cell, method: str, seed: int) -> bool:
        return any(r["cell"] == cell.key and r["method"] == method and r["seed"] == seed for r in self.records)

    def write(self, rec: dict[str, Any]) -> None:
        self.records.append(rec)
        with open(self.log, "a") as fh:
            fh.write(json.dumps(rec) + "\n")

    def prepare(self, cell: Cell, seed: int) -> Any:
        """(class names, per-site ImageSets, per-site frozen features) of the cell, or None when too small."""
        if self._cell == (cell, seed):
            return self._data
        source = source_for(cell)
        split = sample_sites(source.labels, cell, seed)
        data = None
        if split is not None:
            assert source.images is not None
            used = np.unique(np.concatenate([np.concatenate(s) for s in split]))
            pixels = torch.zeros((len(source.labels), 3, self.backbone.image_size, self.backbone.image_size),
                                 dtype=torch.uint8)
            pixels[used] = torch.from_numpy(np.stack([preprocess(_image(source.images[i]), self.backbone.image_size)
                                                      for i in used]))
            labels = torch.from_numpy(source.labels)
            sets = [(ImageSet(pixels[tr], labels[tr]), ImageSet(pixels[te], labels[te])) for tr, te in split]
            model = PFedDCModel(self.backbone, list(source.classnames), PromptConfig(method="zeroshot"))
            device = torch.device(self.device)
            feats = [tuple(t for s in pair for t in (F.normalize(image_features(model.to(device), s, device), dim=-1)
                                                     .cpu().numpy(), s.labels.numpy())) for pair in sets]
            data = (list(source.classnames), sets, feats)
        self._cell, self._data = (cell, seed), data
        return data

    def run(self, cell: Cell, method: str, seed: int) -> None:
        if self.done(cell, method, seed):
            return
        data = self.prepare(cell, seed)
        started = time.monotonic()
        if data is None:
            rec: dict[str, Any] = {"too_small": True}
        else:
            names, sets, feats = data
            if method == "references":
                rec = references(feats, cell.sites, seed)
            elif method == "zeroshot":
                rec = zero_shot(self.backbone, names, feats, cell.sites)
            elif method == "fedavg-head":
                rec = fedavg_head(feats, cell.sites, len(names))
            else:
                rec = self.federation(cell, method, seed, names, sets)
        rec = {"cell": cell.key, "method": method, "seed": seed, **rec,
               "wall_s": round(time.monotonic() - started, 1)}
        self.write(rec)
        print(f"  {cell.key:>28} {method:>18} seed {seed}: {summary_line(rec)} ({rec['wall_s']} s)", flush=True)

    def federation(self, cell: Cell, method: str, seed: int, names: list[str],
                   sets: list[tuple[ImageSet, ImageSet]]) -> dict[str, Any]:
        clients = {f"site_{i:02d}": ClientSplit(tr, te, te) for i, (tr, te) in enumerate(sets[:cell.sites])}
        late = {f"site_{cell.sites + i:02d}": ClientSplit(tr, te, te)
                for i, (tr, te) in enumerate(sets[cell.sites:])}
        settings = train_settings(0.1)  # the shipped text rate (pfeddc has no prompts; its ablations do)
        device = self.device
        if method == "pfeddc-alone":
            finals: dict[str, float] = {}
            failures: list[str] = []
            seconds: list[float] = []
            for cid, split in clients.items():
                alone = run_federation(self.backbone, names, {cid: split}, "pfeddc", settings, ROUNDS, seed,
                                       device_name=device)
                finals.update(alone.final)
                failures += alone.failures
                seconds += [r["seconds"] for r in alone.rounds]
            return {"final": finals, "failures": failures, "round_seconds": statistics.fmean(seconds)}
        result = run_federation(self.backbone, names, clients, method, settings, ROUNDS, seed, new_clients=late,
                                device_name=device)
        return {"final": result.final, "final_global": result.final_global, "late": result.new_clients,
                "failures": result.failures, "global_moved": result.global_moved,
                "rounds": [{k: r[k] for k in ("round", "accuracy_after", "accuracy_global", "seconds")}
                           for r in result.rounds],
                "round_seconds": statistics.fmean(r["seconds"] for r in result.rounds)}


def _image(array: np.ndarray) -> Any:
    from PIL import Image

    return Image.fromarray(array)


def summary_line(rec: dict[str, Any]) -> str:
    if rec.get("too_small"):
        return "source too small for this cell"
    if rec["method"] == "references":
        return (f"LR alone {100 * statistics.fmean(rec['lr_alone'].values()):.1f}, "
                f"pooled {100 * statistics.fmean(rec['lr_pooled'].values()):.1f}")
    if rec["method"] == "zeroshot":
        return f"zero-shot {100 * statistics.fmean(rec['zeroshot'].values()):.1f}"
    if rec["method"] == "fedavg-head":
        return (f"global {100 * statistics.fmean(rec['global'].values()):.1f}, "
                f"fine-tuned {100 * statistics.fmean(rec['finetuned'].values()):.1f}")
    return f"{100 * statistics.fmean(rec['final'].values()):.1f}, failures {len(rec['failures'])}"


def grid(args: argparse.Namespace) -> list[Cell]:
    return [Cell(src, n, k, a) for src in args.sources.split(",") for n in map(int, args.sites.split(","))
            for k in map(int, args.shots.split(",")) for a in map(float, args.alphas.split(","))]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sources", default=",".join(SOURCES), help="comma list (default: all)")
    p.add_argument("--sites", default=",".join(map(str, SITES)))
    p.add_argument("--shots", default=",".join(map(str, SHOTS)))
    p.add_argument("--alphas", default=",".join(f"{a:g}" for a in ALPHAS))
    p.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    p.add_argument("--methods", default=",".join(METHODS), help="comma list (default: %(default)s)")
    p.add_argument("--ablation", action="store_true", help=f"also {', '.join(ABLATIONS)} (seed 0, 10 sites)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: all cores)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--log", type=Path, default=LOG)
    p.add_argument("--report-only", action="store_true")
    args = p.parse_args(argv)
    configure_logging("console", "error")
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.report_only:
        runner = Runner(args.log, args.device)
        started = time.monotonic()
        cells = grid(args)
        for seed in map(int, args.seeds.split(",")):
            for cell in cells:
                for method in args.methods.split(","):
                    runner.run(cell, method, seed)
                if args.ablation and seed == 0 and cell.sites == 10:
                    for method in ABLATIONS:
                        runner.run(cell, method, seed)
        print(f"done in {time.monotonic() - started:.0f} s")
    from report_few_shot import render

    records = [json.loads(line) for line in args.log.read_text().splitlines()]
    text = (f"Recorded on {platform.machine()} with {os.cpu_count()} CPU cores ({args.device}), torch "
            f"{torch.__version__}, embedded backbone, {ROUNDS} rounds, {TEST_PER_SITE} test images per site, "
            f"{LATE_SITES} late sites per cell.\n\n" + render(records))
    (RESULTS / "few_shot.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
