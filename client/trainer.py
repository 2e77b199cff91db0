"""One client's work in a round, shared by the daemon and the in-process benchmark.

Load the round's global prompts, measure them alone (what a new client would get), start the class embeddings
from the site's own images (first round) and fit them by a short probe, train, and either hand back the global
tensors to send with the metrics, or - when training diverged or collapsed - put the model back exactly as it
was, halve this client's learning rates for its next rounds, and say why.
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
        self.model, self.train, self.test, self.device = model, train, test, device
        self.lr_scale, self.stop, self.progress = lr_scale, stop, progress

    def settings(self, settings: TrainSettings) -> TrainSettings:
        s = self.lr_scale
        return replace(settings, lr=settings.lr * s, lr_vision=settings.lr_vision * s, lr_fusion=settings.lr_fusion * s)

    def run(self, received: dict[str, np.ndarray], settings: TrainSettings, measure: bool = True) -> RoundOutcome:
        """Train on `received`; `measure` adds the test accuracies (NaN in the metrics when skipped)."""
        model = self.model
        model.load_state(received, StatePart.GLOBAL)
        started = time.monotonic()
        accuracy_global = math.nan
        if measure:
            with model.global_only():
                accuracy_global = evaluate(model, self.test, self.device)
        before_local = model.local_state()
        self._start_class_embeddings(settings.probe_steps)
        torch.manual_seed(settings.seed)
        result = train_local(model, self.train, self.settings(settings), self.device, self.stop, self.progress)
        metrics = Metrics(train_loss=result.loss, num_test_examples=len(self.test), accuracy_global=accuracy_global,
                          train_seconds=time.monotonic() - started)
        if result.failure:
            model.load_state(before_local, StatePart.LOCAL)  # nothing of this round survives
            model.load_state(received, StatePart.GLOBAL)
            self.lr_scale *= LR_BACKOFF
            return RoundOutcome(replace(metrics, train_loss=_or_nan(result.loss)), None, result.failure)
        sent = model.global_state()
        norms = {k: round(float(np.linalg.norm(sent[k] - received[k])), 6) for k in sorted(sent)}
        accuracy = evaluate(model, self.test, self.device) if measure else math.nan
        return RoundOutcome(replace(metrics, accuracy_after=accuracy, train_seconds=time.monotonic() - started),
                            sent, None, norms)

    def _start_class_embeddings(self, probe_steps: int) -> None:
        """On this site's first round its classes' embeddings start from its own images; every round a linear
        probe fits them before the joint training (client/model/classes.py)."""
        embeddings = self.model.class_embeddings
        if embeddings is None or (embeddings.started and probe_steps <= 0):
            return
        features = image_features(self.model, self.train, self.device)
        labels = self.train.labels.to(self.device)
        if not embeddings.started:
            embeddings.start(features, labels)
        with torch.no_grad():
            text = self.model.prompt_text_features()
        embeddings.fit(text, features, labels, probe_steps, PROBE_LR, self.model.logit_scale())


def _or_nan(value: float) -> float:
    return value if math.isfinite(value) else math.nan
