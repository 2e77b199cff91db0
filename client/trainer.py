"""One client's work in a round, shared by the daemon and the in-process benchmark.

Load the round's global prompts, measure them alone (what a new client would get), take the class statistics of
the site's images and fit the personal part of the class head by a short probe (client/model/head.py), train,
and either hand back the global tensors to send with the metrics, or - when training diverged or collapsed - put
the model back exactly as it was, halve this client's learning rates for its next rounds, and say why.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from ..common.messages import FailureReason, Metrics, TrainSettings
from .model.images import Images
from .model.prompts import PFedDCModel, StatePart
from .model.residual import RESIDUAL_ROUNDS
from .model.train import evaluate, image_features, train_local

LR_BACKOFF = 0.5  # learning-rate factor after a failed round, compounding
PROBE_LR = 0.01  # Adam's: scale-free, the same for every backbone


@dataclass(frozen=True)
class RoundOutcome:
    metrics: Metrics
    tensors: dict[str, np.ndarray] | None  # the global tensors to send; None when the round failed
    failure: str | None = None
    update_norms: dict[str, float] = field(default_factory=dict)  # L2 norm of (sent - received) per tensor

    @property
    def reason(self) -> FailureReason:
        return FailureReason.DIVERGED if (self.failure or "").startswith("diverged") else FailureReason.COLLAPSED


class LocalTrainer:
    def __init__(self, model: PFedDCModel, train: Images, test: Images, device: torch.device,
                 lr_scale: float = 1.0, stop: threading.Event | None = None, progress: bool = False) -> None:
        self.model = model
        self.train = train
        self.test = test
        self.device = device
        self.lr_scale = lr_scale
        self.stop = stop
        self.progress = progress
        self._frozen: dict[str, torch.Tensor] = {}  # image features, while the image tower has no prompts

    def features(self, which: str) -> torch.Tensor | None:
        """The train or test images' features when the image tower is frozen (no vision prompts): the backbone
        never changes, so one pass per trainer serves every round. None when vision prompts move them."""
        if self.model.vision is not None:
            return None
        if which not in self._frozen:
            self._frozen[which] = image_features(self.model, self.train if which == "train" else self.test,
                                                 self.device)
        return self._frozen[which]

    def settings(self, settings: TrainSettings) -> TrainSettings:
        s = self.lr_scale
        return replace(settings, lr=settings.lr * s, lr_vision=settings.lr_vision * s, lr_fusion=settings.lr_fusion * s)

    def run(self, received: dict[str, np.ndarray], settings: TrainSettings, measure: bool = True,
            round_: int | None = None) -> RoundOutcome:
        """Train on `received` for the federation's round `round_` (None: not in a federation); `measure` adds the
        test accuracies (NaN in the metrics when skipped)."""
        model = self.model
        model.load_state(received, StatePart.GLOBAL)
        started = time.monotonic()
        accuracy_global = math.nan
        if measure:
            with model.global_only():
                accuracy_global = evaluate(model, self.test, self.device, features=self.features("test"))
        before_local = model.local_state()
        self._fit_head(settings.probe_steps, round_ is None or round_ <= RESIDUAL_ROUNDS)
        torch.manual_seed(settings.seed)
        result = train_local(model, self.train, self.settings(settings), self.device, self.stop, self.progress,
                             self.features("train"))
        metrics = Metrics(train_loss=result.loss, num_test_examples=len(self.test), accuracy_global=accuracy_global,
                          train_seconds=time.monotonic() - started)
        if result.failure:
            model.load_state(before_local, StatePart.LOCAL)  # nothing of this round survives
            model.load_state(received, StatePart.GLOBAL)
            self.lr_scale *= LR_BACKOFF
            return RoundOutcome(replace(metrics, train_loss=_or_nan(result.loss)), None, result.failure)
        sent = model.global_state()
        norms = {k: round(float(np.linalg.norm(sent[k] - received[k])), 6) for k in sorted(sent)}
        accuracy = evaluate(model, self.test, self.device, features=self.features("test")) if measure else math.nan
        return RoundOutcome(replace(metrics, accuracy_after=accuracy, train_seconds=time.monotonic() - started),
                            sent, None, norms)

    def _fit_head(self, probe_steps: int, residual_step: bool) -> None:
        """The site's class statistics (sent, or kept when classes are not shared), its step on the shared residual
        (in the federation's first RESIDUAL_ROUNDS rounds) and the personal probe, from one pass of the image tower
        over the training images (client/model/head.py)."""
        head = self.model.head
        if head is None:
            return
        features = self.features("train")
        if features is None:
            features = image_features(self.model, self.train, self.device)
        labels = self.train.labels.to(self.device)
        head.observe(features, labels)
        with torch.no_grad():
            text_logits = self.model.logit_scale() * features @ self.model.text_features().t()
        head.fit_calibration(features, labels, text_logits)
        if residual_step:
            head.fit_residual(features, labels, text_logits)
        head.fit_personal(features, labels, text_logits, probe_steps, PROBE_LR)


def _or_nan(value: float) -> float:
    return value if math.isfinite(value) else math.nan
