"""Class embeddings: a per-class offset of the text features, started from a site's own images.

Where CLIP is confidently wrong (a style it never saw), prompt context shared by every class cannot undo the
wrong class features quickly, and from a loss above ln C the fastest way down is to merge them (uniform
prediction): the collapse issue 18 measured. A class embedding gives each class its own handle, started where
the site's images of that class are:

    feature_c = normalize(t_c + G_c + L_c)

t_c is the class's normalized prompted text feature, G_c the federated embedding (`text.classes.global`, only
when the federation names its classes, so every site indexes the same rows) and L_c the personal one
(`text.classes.local`). On a site's first round, before training, every class it holds whose shared embedding
is still weak (norm below half the site's own class mean, e.g. no site had it yet) gets the site's class mean of
normalized image features: into G_c when the classes are shared, so the federation learns it at once and a new
site gets it without training; into L_c when they are not. `text.classes.counts` keeps how many images of each
class started it (local, never sent): it says the start happened, so a restart never starts twice.

Shared rows travel as rows x the site's share of images of each class, with the share (`to_wire`), so the
coordinator's plain weighted mean averages each row by class counts (`from_wire` divides). Every round, before
the joint training, `fit` runs a short linear probe of the rows on the cached image features (LP-FT).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...common.spec import CLASS_SHARE_FLOOR

WEAK_FRACTION = 0.5  # a shared row below this fraction of the site's class mean is filled from the site's images
FLOOR_SHARE = CLASS_SHARE_FLOOR  # a site's say over rows of classes it does not hold (never 0: no row is ever 0/0)


class ClassEmbeddings(nn.Module):
    counts: torch.Tensor

    def __init__(self, classes: int, width: int, shared: bool, local: bool) -> None:
        super().__init__()
        self.global_rows = nn.Parameter(torch.zeros(classes, width)) if shared else None
        self.local_rows = nn.Parameter(torch.zeros(classes, width)) if local else None
        self.register_buffer("counts", torch.zeros(classes))

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        """[C, proj] prompted text features -> normalized class features."""
        out = F.normalize(text.float(), dim=-1)
        for rows in (self.global_rows, self.local_rows):
            if rows is not None:
                out = out + rows
        return F.normalize(out, dim=-1)

    def named_tensors(self) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {"text.classes.counts": self.counts}
        if self.global_rows is not None:
            out["text.classes.global"] = self.global_rows
        if self.local_rows is not None:
            out["text.classes.local"] = self.local_rows
        return out

    def share(self) -> torch.Tensor:
        """This site's say over each shared row: its share of images of that class (FLOOR_SHARE when none)."""
        total = float(self.counts.sum())
        return (self.counts / total if total > 0 else torch.zeros_like(self.counts)).clamp(min=FLOOR_SHARE)

    def to_wire(self, tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Class-weighted FedAvg through a plain weighted mean: send rows times share, and the share; the mean
        of the first over the mean of the second is each row averaged by the sites' image counts of that class
        (a row is not diluted by the sites that never saw the class)."""
        if "text.classes.global" not in tensors:
            return tensors
        share = self.share().cpu().numpy().astype(np.float32)
        return {**tensors, "text.classes.global": tensors["text.classes.global"] * share[:, None],
                "text.classes.share.global": share}

    @staticmethod
    def from_wire(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if "text.classes.global" not in tensors:
            return tensors
        out = dict(tensors)
        share = out.pop("text.classes.share.global")
        rows = out["text.classes.global"]
        # the coordinator refuses shares below the floor; a mean of them stays above it (no clip or noise here:
        # the coordinator refuses median, trimmed mean and DP with shared rows), the floor guards the division
        out["text.classes.global"] = (rows / np.maximum(share, FLOOR_SHARE)[:, None]).astype(np.float32)
        return out

    def fit(self, text: torch.Tensor, image_features: torch.Tensor, labels: torch.Tensor, steps: int, lr: float,
            scale: float) -> None:
        """A linear probe before the round's training (LP-FT): only the class rows move, on the cached features
        of the site's images, full batch; the prompts and the backbone stay as they are."""
        rows = [r for r in (self.global_rows, self.local_rows) if r is not None]
        readable = image_features.norm(dim=-1) > 0
        x, y = F.normalize(image_features[readable].float(), dim=-1), labels[readable.to(labels.device)]
        if not rows or steps <= 0 or len(y) == 0:
            return
        text = text.detach()
        opt = torch.optim.Adam(rows, lr=lr)
        for _ in range(steps):
            loss = F.cross_entropy(scale * x @ self(text).t(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    @property
    def started(self) -> bool:
        return bool(self.counts.sum() > 0)

    @torch.no_grad()
    def restart(self) -> None:
        """Forget that the start happened (a new federation): the next round fills its weak shared rows."""
        self.counts.zero_()

    @torch.no_grad()
    def start(self, image_features: torch.Tensor, labels: torch.Tensor) -> list[int]:
        """Fill the rows of the classes this site holds from their mean normalized image features; returns the
        classes filled. Shared rows are filled only where still weak; the others keep the federation's."""
        readable = image_features.norm(dim=-1) > 0  # unreadable images have zero features
        features, labels = F.normalize(image_features[readable].float(), dim=-1), labels[readable.cpu()]
        counts = torch.bincount(labels.long().cpu(), minlength=self.counts.shape[0]).float()
        filled = []
        for c in torch.nonzero(counts).flatten().tolist():
            mean = features[labels == c].mean(0).to(self.counts.device)
            if self.global_rows is not None:
                if float(self.global_rows[c].norm()) < WEAK_FRACTION * float(mean.norm()):
                    self.global_rows[c] += mean
                    filled.append(c)
            elif self.local_rows is not None:
                self.local_rows[c] = mean
                filled.append(c)
        self.counts.copy_(counts.to(self.counts.device))
        return filled
