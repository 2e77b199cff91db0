"""Membership inference for benchmarks/privacy.py: the attack's metrics, its candidate splits, and the observer
that scores every view of a federation while it runs (benchmarks/inproc.py's `Observer`).

Scores are "higher = more likely a member". The loss attack (Yeom et al. 2018) scores -loss(target, x); the
calibrated attack scores loss(reference, x) - loss(target, x): how much the target lowered this example's loss
against a model the attacker already holds (the global it handed out, or the initial prompts). That is an
offline likelihood-ratio-style test (Carlini et al. 2022, without shadow models) that removes each example's
own difficulty. The metric functions need numpy only (tests/benchmarks/test_membership.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

    from pfeddc.client.model.backbone import Backbone
    from pfeddc.client.model.images import ImageSet
    from pfeddc.client.model.prompts import PFedDCModel
    from pfeddc.common.spec import PromptConfig

FPR = 0.01
Scores = tuple[np.ndarray, np.ndarray]  # (members' scores, non-members' scores)


def auc(members: np.ndarray, nonmembers: np.ndarray) -> float:
    """Area under the ROC curve = P(a member's score > a non-member's), ties counting one half (Mann-Whitney U
    from average ranks)."""
    m, n = np.asarray(members, np.float64).ravel(), np.asarray(nonmembers, np.float64).ravel()
    if not len(m) or not len(n):
        return math.nan
    _, inverse, counts = np.unique(np.concatenate([m, n]), return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2.0)[inverse]  # the average 1-based rank of each value
    return float((ranks[: len(m)].sum() - len(m) * (len(m) + 1) / 2.0) / (len(m) * len(n)))


def tpr_at_fpr(members: np.ndarray, nonmembers: np.ndarray, fpr: float = FPR) -> float:
    """The largest true-positive rate of a threshold rule "score >= t" whose false-positive rate is <= `fpr`:
    the ROC's own points, no interpolation (a threshold above every score gives TPR 0 at FPR 0)."""
    m, n = np.sort(np.asarray(members, np.float64).ravel()), np.sort(np.asarray(nonmembers, np.float64).ravel())
    if not len(m) or not len(n):
        return math.nan
    allowed = int(math.floor(fpr * len(n) + 1e-9))  # non-members that may score >= t
    if allowed >= len(n):
        return 1.0
    # t must be above the (allowed + 1)-th highest non-member score; the lowest such t among the scores
    above = n[len(n) - 1 - allowed]
    return float((m > above).mean())


def null_auc_std(members: int, nonmembers: int) -> float:
    """Standard deviation of the AUC of a score that carries no information (Mann-Whitney under the null)."""
    return math.sqrt((members + nonmembers + 1) / (12.0 * members * nonmembers))


def metrics(scores: Scores) -> dict[str, float]:
    return {"auc": auc(*scores), "tpr": tpr_at_fpr(*scores), "members": len(scores[0]),
            "nonmembers": len(scores[1])}


@dataclass
class Candidates:
    """One target site's attack set: `size` members drawn from its training split, then `size` non-members
    drawn from its held-out data (validation + test: never trained on, the same site's distribution)."""

    images: ImageSet
    size: int

    def split(self, scores: np.ndarray) -> Scores:
        return scores[: self.size], scores[self.size:]


def candidates(train: ImageSet, held: list[ImageSet], seed: int) -> Candidates:
    """Balanced: min(|train|, |held|) of each, drawn without replacement by a seeded generator."""
    import torch

    from pfeddc.client.model.images import ImageSet

    held_images, held_labels = torch.cat([h.images for h in held]), torch.cat([h.labels for h in held])
    size = min(len(train.labels), len(held_labels))
    rng = np.random.default_rng(seed)
    mi = torch.from_numpy(np.sort(rng.choice(len(train.labels), size, replace=False)))
    ni = torch.from_numpy(np.sort(rng.choice(len(held_labels), size, replace=False)))
    return Candidates(ImageSet(torch.cat([train.images[mi], held_images[ni]]),
                               torch.cat([train.labels[mi], held_labels[ni]])), size)


def example_losses(model: PFedDCModel, data: ImageSet, device: torch.device, batch_size: int = 256) -> np.ndarray:
    """Per-example cross-entropy of `model`, as it stands, on `data`, in order."""
    import torch
    import torch.nn.functional as F

    from pfeddc.client.model.images import batches
    from pfeddc.client.model.train import _pixels

    model.eval()
    out = np.zeros(len(data.labels))
    with torch.no_grad():
        text = model.text_features()
        for idx, pixels, labels in batches(data, torch.arange(len(data.labels)), batch_size):
            logits = model.logits(_pixels(model, pixels, device), text).float()
            out[idx.numpy()] = F.cross_entropy(logits, labels.to(logits.device), reduction="none").cpu().numpy()
    return out


class Audit:
    """inproc.Observer: each target site's candidates scored under every view, as the federation runs.

    (a) site k's update (plain mode), evaluated as "global = the update, local parts at zero": loss of the
        last round's update; calibrated: sum over rounds of loss(global handed to k) - loss(k's update).
    (a') the round's aggregate (secure aggregation: the coordinator's only view of k): loss of the last
        aggregate; calibrated: loss(previous global) - loss(new global) in the last round.
    (b) the final global prompts: loss; calibrated against the initial prompts (with full participation this
        is also (a') summed over every round: the sum telescopes).
    (c) site k's personalized model (final global + its local prompts and fusion): loss; calibrated against
        the initial prompts alone.
    (0) the control: the initial prompts, never trained (loss): what a blind attack scores on these very splits.
    """

    def __init__(self, backbone: Backbone, classnames: list[str], cfg: PromptConfig,
                 targets: dict[str, Candidates], seed: int, device: torch.device) -> None:
        """`cfg` and `seed` as the federation's: the initial prompts are the federation's own."""
        from pfeddc.client.model.prompts import PFedDCModel
        from pfeddc.common.spec import initial_prompts

        self.targets, self.device = targets, device
        self.scratch = PFedDCModel(backbone, classnames, cfg, seed=0).to(device)  # the attacker's evaluator
        self.initial = self._global_losses(initial_prompts(self.scratch.spec, seed), list(targets))
        self.previous = dict(self.initial)
        self.update_loss: dict[str, np.ndarray] = {}
        self.update_gain = {cid: np.zeros_like(v) for cid, v in self.initial.items()}
        self.round_gain: dict[str, np.ndarray] = {}
        self.personal: dict[str, np.ndarray] = {}

    def _global_losses(self, tensors: dict[str, np.ndarray], cids: list[str]) -> dict[str, np.ndarray]:
        from pfeddc.client.model.prompts import StatePart

        self.scratch.load_state(tensors, StatePart.GLOBAL)
        with self.scratch.global_only():
            return {cid: example_losses(self.scratch, self.targets[cid].images, self.device) for cid in cids}

    def update(self, round_: int, cid: str, received: dict[str, np.ndarray], sent: dict[str, np.ndarray]) -> None:
        if cid in self.targets:
            loss = self._global_losses(sent, [cid])[cid]
            self.update_gain[cid] += self.previous[cid] - loss  # `previous` is the global `received` holds
            self.update_loss[cid] = loss

    def committed(self, round_: int, before: dict[str, np.ndarray], after: dict[str, np.ndarray]) -> None:
        new = self._global_losses(after, list(self.targets))
        self.round_gain = {cid: self.previous[cid] - new[cid] for cid in self.targets}
        self.previous = new

    def finished(self, models: dict[str, PFedDCModel], final_global: dict[str, np.ndarray]) -> None:
        self.personal = {cid: example_losses(m, self.targets[cid].images, self.device)
                         for cid, m in models.items() if cid in self.targets}

    def views(self) -> dict[str, dict[str, Scores]]:
        """view -> attack -> members' and non-members' scores, pooled over the target sites."""
        final, init = self.previous, self.initial
        per_site = {
            "0": {"loss": {c: -v for c, v in init.items()}},
            "a": {"loss": {c: -v for c, v in self.update_loss.items()}, "calibrated": self.update_gain},
            "a'": {"loss": {c: -v for c, v in final.items()}, "calibrated": self.round_gain},
            "b": {"loss": {c: -v for c, v in final.items()}, "calibrated": {c: init[c] - final[c] for c in final}},
            "c": {"loss": {c: -v for c, v in self.personal.items()},
                  "calibrated": {c: init[c] - v for c, v in self.personal.items()}},
        }
        out: dict[str, dict[str, Scores]] = {}
        for view, attacks in per_site.items():
            out[view] = {}
            for attack, by_site in attacks.items():
                parts = [self.targets[c].split(s) for c, s in sorted(by_site.items())]
                if parts:
                    out[view][attack] = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
        return out

    def per_site_auc(self) -> dict[str, dict[str, float]]:
        """The calibrated attack's AUC on each target site alone, per view (the spread behind the pooled AUC)."""
        gains = {"a": self.update_gain, "a'": self.round_gain,
                 "c": {c: self.initial[c] - v for c, v in self.personal.items()}}
        return {view: {c: round(auc(*self.targets[c].split(s)), 4) for c, s in sorted(g.items())}
                for view, g in gains.items()}
