"""Local training and evaluation of the personalized model: SGD on prompts and fusion, cosine schedule."""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ...common.messages import TrainSettings
from .prompts import PFedDCModel

MOMENTUM = 0.9


class Interrupted(RuntimeError):
    """Training stopped on request (SIGTERM); the round's partial work is discarded."""


@dataclass
class ImageSet:
    """Preprocessed images uint8 [N, 3, S, S] and labels [N]; normalization happens on the device."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _pixels(model: PFedDCModel, images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 [B, 3, S, S] -> normalized float on the device (normalization on the device, not per image)."""
    mean = torch.tensor(model.backbone.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(model.backbone.std, device=device).view(1, 3, 1, 1)
    return (images.to(device, non_blocking=True).float().div_(255.0) - mean) / std


def _autocast(device: torch.device) -> torch.autocast:
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def train_local(model: PFedDCModel, data: ImageSet, cfg: TrainSettings, device: torch.device,
                stop: threading.Event | None = None, progress: bool = False) -> float:
    """Train prompts and fusion for `cfg.local_epochs`; returns the mean training loss."""
    from tqdm import tqdm

    params = model.trainable_parameters()
    if not params:
        return float("nan")  # zero-shot: nothing to train
    model.train()
    opt = torch.optim.SGD(params, lr=cfg.lr, momentum=MOMENTUM)
    steps_per_epoch = math.ceil(len(data) / cfg.batch_size)
    total = cfg.local_epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / total)))
    gen = torch.Generator().manual_seed(cfg.seed)
    loss_sum, seen = 0.0, 0
    bar = tqdm(total=total, desc="training", disable=not progress, leave=False)
    for _ in range(cfg.local_epochs):
        order = torch.randperm(len(data), generator=gen)
        for start in range(0, len(order), cfg.batch_size):
            if stop is not None and stop.is_set():
                raise Interrupted("training interrupted")
            idx = order[start:start + cfg.batch_size]
            x, y = _pixels(model, data.images[idx], device), data.labels[idx].to(device)
            with _autocast(device):
                loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.item() * len(idx)
            seen += len(idx)
            bar.update(1)
    bar.close()
    model.eval()
    return loss_sum / max(seen, 1)


@torch.no_grad()
def predict_proba(model: PFedDCModel, images: torch.Tensor, device: torch.device, batch_size: int = 256
                  ) -> torch.Tensor:
    """Class probabilities [N, C]; the class text features are computed once for all batches."""
    model.eval()
    with _autocast(device):
        text = model.text_features()
        out = [model.logits(_pixels(model, images[s:s + batch_size], device), text).float().softmax(-1).cpu()
               for s in range(0, len(images), batch_size)]
    return torch.cat(out) if out else torch.zeros((0, len(model.classnames)))


def evaluate(model: PFedDCModel, data: ImageSet, device: torch.device, batch_size: int = 256) -> float:
    if len(data) == 0:
        return float("nan")
    probs = predict_proba(model, data.images, device, batch_size)
    return float((probs.argmax(-1) == data.labels).float().mean())
