"""The class head: the federation's discriminant over image features, from pooled statistics, and this site's
correction of it.

Where each site has few labelled images, what a federation can give is what pooling the data would give. For a
linear classifier on frozen features there is a closed form that needs only sums: linear discriminant analysis
(class-conditional Gaussians with one shared covariance; with CLIP features, the training-free GDA baseline of
Wang et al., ICLR 2024; federated, the sufficient-statistics idea of Fed3R, ICML 2024). Every site sends its
statistics as means over its training images,

    head.counts  [C]     n_c / n              (its label distribution)
    head.sums    [C, P]  sum of x over class c / n
    head.moment  [P, P]  sum of x x^T / n

and FedAvg weighted by example counts turns them into exactly the pooled statistics: the federation's head is
the discriminant of all sites' images together, with no image moved and no drift between sites. A site that
joins late gets it at once. docs/method.md has the measurements behind every choice here.

The discriminant is generative: short of a discriminative classifier on the pooled images once sites hold more
than a few images per class (Twemoji-64, 16 per class: 74% against 79% for a pooled logistic regression). The
federation also learns a residual, `head.residual` [C, P + 1] (rows R_c and biases r_c on whitened features, added
to the logits): one gradient step per site and round whose federation mean is exactly the step on the pooled images
(residual.py), with the site's label prior in place of the federation's (logit adjustment, FedLC), so it learns
what separates classes, not each site's label mix.

Each site's personal model corrects the federation's head where its own data says so:

    logits_c(x) = w s <x, t_c> + (x.W_c + b_c) / T + x.R_c + r_c + x.L_c + [log p~_c - log p_c] + beta_c

W, b the discriminant of the pooled statistics (b includes the federation's class prior log p_c); T and w its
calibration (`head.calibration`: log T and w, fitted by each site on its images and averaged like the
statistics: a discriminant from few images per class in a narrow feature cone is overconfident, by 5-100x on
the embedded backbone's own domain, which would drown every correction below); R, r the shared residual; the
bracket replaces that prior by this site's own (Bayes' rule under label shift), shrunk toward the federation's by
as much as the site's counts say sites differ (prior.py: empirical Bayes); L and beta personal rows and biases,
fitted by a short ridge-penalised probe (Ditto's pull toward the shared model: few images move them little).
The text term (`s` CLIP's logit scale, `t_c` the prompted class text features) is the whole model before any
statistics exist (the first global model is zero-shot CLIP) and a prior of fitted weight w after.

Without a federation class list the statistics stay on the site (`.local`) and the head is the site's own.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ...common.spec import HEAD_STATISTICS, LOG_TEMPERATURE_RANGE, TEXT_WEIGHT_RANGE, head_key
from .prior import site_prior
from .residual import residual_logits, residual_step, whitening

SHRINKAGE = 0.02  # covariance shrinkage toward a multiple of the identity (measured: docs/method.md)
CALIBRATION_STEPS = 100
CALIBRATION_LR = 0.05  # Adam on (log T, w), full batch
RIDGE = 0.03  # the personal rows' and biases' L2 penalty in the probe
UNHELD_PRIOR = 1e-3  # prior, relative to a uniform share, of a class no site has shown an image of


def site_statistics(features: torch.Tensor, labels: torch.Tensor, classes: int) -> dict[str, torch.Tensor]:
    """This site's statistics as means over its readable images (zero features mark unreadable ones)."""
    readable = features.norm(dim=-1) > 0
    x = F.normalize(features[readable].double(), dim=-1)
    y = labels[readable.to(labels.device)].to(x.device).long()
    n = max(len(y), 1)
    counts = torch.bincount(y, minlength=classes).double()
    sums = torch.zeros(classes, x.shape[1], dtype=torch.float64, device=x.device).index_add_(0, y, x)
    return {"counts": (counts / n).float(), "sums": (sums / n).float(), "moment": (x.t() @ x / n).float()}


def calibrated(calibration: torch.Tensor) -> tuple[float, float]:
    """(T, w) from the stored (log T, w), within their ranges (a noisy or hostile average stays usable)."""
    log_t = float(calibration[0].clamp(*LOG_TEMPERATURE_RANGE))
    return math.exp(log_t), float(calibration[1].clamp(*TEXT_WEIGHT_RANGE))


def discriminant(counts: torch.Tensor, sums: torch.Tensor, moment: torch.Tensor, shrinkage: float | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor] | None:
    """LDA weights [C, P] and biases [C] of these statistics, or None when they hold no image.

    Scale-free (any common factor of the three cancels) and robust to noisy sums (DP): counts are clipped at
    zero, the within-class covariance is made symmetric and positive semi-definite before shrinkage."""
    shrinkage = SHRINKAGE if shrinkage is None else shrinkage
    counts, sums, moment = counts.double().clamp(min=0), sums.double(), moment.double()
    total = float(counts.sum())
    if not math.isfinite(total) or total <= 0:
        return None
    classes, width = sums.shape
    held = counts > total * 1e-9
    prior = counts / total
    means = torch.zeros_like(sums)
    means[held] = sums[held] / counts[held, None]
    within = moment / total - (means.t() * prior) @ means
    within = 0.5 * (within + within.t())
    values, vectors = torch.linalg.eigh(within)
    within = (vectors * values.clamp(min=0)) @ vectors.t()
    level = float(torch.trace(within)) / width
    cov = (1 - shrinkage) * within + (shrinkage * level + 1e-6) * torch.eye(width, dtype=within.dtype,
                                                                          device=within.device)
    overall = (prior[held, None] * means[held]).sum(0) / float(prior[held].sum())
    means[~held] = overall  # a class nobody holds: scored as the average class, at a tiny prior
    prior = torch.where(held, prior, torch.full_like(prior, UNHELD_PRIOR / classes))
    weights = torch.linalg.solve(cov, means.t()).t()
    bias = -0.5 * (weights * means).sum(1) + prior.log()
    return weights.float(), bias.float()


class ClassHead(nn.Module):
    """Classifies image features: the discriminant of the received statistics, plus this site's correction."""

    site_counts: torch.Tensor

    def __init__(self, classes: int, width: int, shared: bool, personal: bool, residual: bool = False) -> None:
        super().__init__()
        self.classes = classes
        self.width = width
        self.shared = shared
        self.personal = personal
        self.stats_part = "global" if shared else "local"
        self.names = tuple(k for k in HEAD_STATISTICS if residual or k != "residual")  # without it: never sent
        zeros = {"counts": torch.zeros(classes), "sums": torch.zeros(classes, width),
                 "moment": torch.zeros(width, width), "calibration": torch.zeros(2),
                 "residual": torch.zeros(classes, width + 1)}
        self.received = {k: v.clone() for k, v in zeros.items()}  # the federation's (what W, b come from)
        self.own = {k: v.clone() for k, v in zeros.items()}  # this site's, from its latest round (what it sends)
        self.register_buffer("site_counts", torch.zeros(classes))  # images per class here: the personal prior
        self.rows = nn.Parameter(torch.zeros(classes, width)) if personal else None
        self.bias = nn.Parameter(torch.zeros(classes)) if personal else None
        self._fit: tuple[torch.Tensor, torch.Tensor] | None = None  # W, b of `received`
        self._whiten: torch.Tensor | None = None  # the residual's coordinates under `received` (residual.py)
        self._residual_ready = False  # the discriminant the residual corrects is the federation's (or the site's own)

    # ----- state: the tensors as stored and sent
    def stat_names(self) -> dict[str, str]:
        return {k: head_key(k, self.stats_part) for k in self.names}

    def named_tensors(self) -> dict[str, torch.Tensor]:
        """Stored and sent: this site's own statistics; the personal part (never sent)."""
        out = {name: self.own[k] for k, name in self.stat_names().items()}
        out["head.site_counts.local"] = self.site_counts
        if self.rows is not None and self.bias is not None:
            out["head.rows.local"] = self.rows
            out["head.bias.local"] = self.bias
        return out

    def load_statistics(self, tensors: dict[str, torch.Tensor]) -> None:
        """The statistics the head classifies with (the federation's, or this site's own when not shared)."""
        names = self.stat_names()
        device = self.site_counts.device
        self.received |= {k: tensors[name].to(device).float() for k, name in names.items()}
        self.own = {k: v.clone() for k, v in self.received.items()}  # until this site observes its own images
        self._refit()

    def _refit(self) -> None:
        """W, b (and the residual's whitening) of the received statistics."""
        r = self.received
        self._fit = discriminant(r["counts"], r["sums"], r["moment"])
        has_residual = self._fit is not None and "residual" in self.names
        self._whiten = whitening(r["counts"], r["sums"], r["moment"], SHRINKAGE) if has_residual else None

    def _residual(self, features: torch.Tensor) -> torch.Tensor | float:
        """The shared residual's logits (0 without one)."""
        if self._whiten is None:
            return 0.0
        return residual_logits(features, self.received["residual"], self._whiten)

    @property
    def fitted(self) -> bool:
        return self._fit is not None

    # ----- classification
    def forward(self, features: torch.Tensor, text_logits: torch.Tensor) -> torch.Tensor:
        """Image features [B, P] and the text term [B, C] -> class logits [B, C]."""
        logits = self.shared_logits(features, text_logits, calibrated(self.received["calibration"]))
        if self.rows is not None and self.bias is not None:
            logits = logits + features.float() @ self.rows.t() + self.bias + self.prior_shift()
        return logits

    def shared_logits(self, features: torch.Tensor, text_logits: torch.Tensor, calibration: tuple[float, float]
                      ) -> torch.Tensor:
        """The federation's part: the text term alone before any statistics, then w text + discriminant / T."""
        if self._fit is None:
            return text_logits.float()
        temperature, text_weight = calibration
        logits = text_weight * text_logits.float() + self._scaled(features, torch.tensor(temperature))
        return logits + self._residual(features)

    def prior_shift(self) -> torch.Tensor:
        """log p~_c - log p_c: this site's smoothed label prior in place of the federation's (0 without either)."""
        mine = self.site_counts.double()
        if not self.shared or self._fit is None or float(mine.sum()) <= 0:
            return torch.zeros_like(self.site_counts)
        counts = self.received["counts"].double().clamp(min=0)
        federation = counts / counts.sum() if float(counts.sum()) > 0 else torch.full_like(counts, 1 / self.classes)
        federation = federation.clamp(min=UNHELD_PRIOR / self.classes)
        federation = federation / federation.sum()
        return (site_prior(mine, federation).log() - federation.log()).float()

    # ----- a round's work
    @torch.no_grad()
    def observe(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """This round's statistics of the site's training images; with no federation statistics yet (the first
        round), the head classifies with the site's own so training starts from its data, not from zero-shot."""
        own = site_statistics(features, labels, self.classes)
        device = self.site_counts.device
        self._residual_ready = not self.shared or self._fit is not None
        self.own = {k: v.to(device) for k, v in own.items()} | {
            k: self.received[k].clone() for k in ("calibration", "residual")}
        readable = features.norm(dim=-1) > 0
        counts = torch.bincount(labels[readable.to(labels.device)].long().cpu(), minlength=self.classes)
        self.site_counts.copy_(counts.float().to(device))
        if not self.shared or self._fit is None:
            self.received = {k: v.clone() for k, v in self.own.items()}
            self._refit()

    def fit_calibration(self, features: torch.Tensor, labels: torch.Tensor, text_logits: torch.Tensor) -> None:
        """This site's (log T, w) for the received discriminant, on its images: sent (averaged by the federation)
        and used from now on (this round's training and probe)."""
        readable = features.norm(dim=-1) > 0
        y = labels[readable.to(labels.device)].to(features.device).long()
        if self._fit is None or len(y) == 0:
            return
        x = features[readable].float()
        text = text_logits[readable].detach().float()
        residual = self._residual(x)
        raw = self._raw(x)  # the steps move only (T, w): the discriminant's logits once
        params = self.received["calibration"].clone().requires_grad_(True)
        opt = torch.optim.Adam([params], lr=CALIBRATION_LR)
        for _ in range(CALIBRATION_STEPS):
            temperature = params[0].clamp(*LOG_TEMPERATURE_RANGE).exp()
            text_weight = params[1].clamp(*TEXT_WEIGHT_RANGE)
            loss = F.cross_entropy(text_weight * text + raw / temperature + residual, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        fitted = params.detach().clone()
        fitted[0], fitted[1] = fitted[0].clamp(*LOG_TEMPERATURE_RANGE), fitted[1].clamp(*TEXT_WEIGHT_RANGE)
        self.received["calibration"] = fitted
        self.own["calibration"] = fitted.clone()

    def fit_residual(self, features: torch.Tensor, labels: torch.Tensor, text_logits: torch.Tensor) -> None:
        """This round's step on the shared residual (residual.py), with this site's label prior in place of the
        federation's: sent, not used here (one site's step is the federation's step with one site's images; the site
        classifies with the federation's residual until the next one arrives). Not in a shared head's first round:
        the discriminant is then the site's own."""
        readable = features.norm(dim=-1) > 0
        y = labels[readable.to(labels.device)].to(features.device).long()
        if self._fit is None or self._whiten is None or not self._residual_ready or len(y) == 0:
            return
        x = features[readable].float()
        temperature, text_weight = calibrated(self.received["calibration"])
        with torch.no_grad():
            fixed = (text_weight * text_logits[readable].float() + self._scaled(x, torch.tensor(temperature))
                     + self.prior_shift())
        self.own["residual"] = residual_step(x, y, fixed, self.received["residual"], self._whiten)
        if not self.shared:  # the site's own head: its step is the whole federation's
            self.received["residual"] = self.own["residual"].clone()

    def _scaled(self, features: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
        return self._raw(features) / temperature

    def _raw(self, features: torch.Tensor) -> torch.Tensor:
        assert self._fit is not None
        weights, bias = self._fit
        return features.float() @ weights.t() + bias

    def fit_personal(self, features: torch.Tensor, labels: torch.Tensor, text_logits: torch.Tensor, steps: int,
                     lr: float) -> None:
        """The probe: only the personal rows and biases move, on the cached features, full batch, with a ridge
        penalty that keeps them near zero (the shared model) unless the site's images say otherwise."""
        if self.rows is None or self.bias is None or steps <= 0:
            return
        readable = features.norm(dim=-1) > 0
        x = features[readable].float()
        y = labels[readable.to(labels.device)].to(features.device).long()
        if len(y) == 0:
            return
        with torch.no_grad():  # what forward adds the personal part to: fixed during the probe, so computed once
            shared = self.shared_logits(x, text_logits[readable].float(), calibrated(self.received["calibration"]))
            prior = self.prior_shift()
        opt = torch.optim.Adam([self.rows, self.bias], lr=lr)
        for _ in range(steps):
            logits = shared + x @ self.rows.t() + self.bias + prior
            loss = F.cross_entropy(logits, y) + RIDGE * (self.rows.square().sum() + self.bias.square().sum())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    @torch.no_grad()
    def reset_personal(self) -> None:
        """Forget the personal correction (it was fitted against another federation's head)."""
        for p in (self.rows, self.bias):
            if p is not None:
                p.zero_()

