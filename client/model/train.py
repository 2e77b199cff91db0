"""Local training and evaluation of the personalized model.

SGD with momentum on three parameter groups (text prompts, vision prompts and gates, fusion modules), each
with its own learning rate, a linear warm-up then a cosine decay within the round, and gradient-norm
clipping at every step. Training watches for collapse: a loss stuck at chance (>= 0.98 ln C) for the last
half of an epoch after the model had clearly been better than chance (a running mean of at most 0.9 ln C),
or class prompts whose text features became near-identical (cosine > 0.99) when they had started apart
(at most 0.98). Such a round is reported as collapsed instead of being sent.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ...common.messages import TrainSettings
from ...common.spec import MAX_ABS_VALUE
from .classnames import MAX_COSINE as MAX_TEXT_COSINE
from .images import DECODE_WORKERS, Images, batches
from .prompts import PFedDCModel

MOMENTUM = 0.9
CHANCE_FRACTION = 0.98  # a loss at >= 98% of ln C is chance level
BETTER_FRACTION = 0.9  # ... and one at <= 90% of ln C is clearly better than chance
RUNNING_WINDOW = 4  # batches in the running mean that says the model was better than chance
APART_TEXT_COSINE = 0.98


class Interrupted(RuntimeError):
    """Training stopped on request (SIGTERM); the round's partial work is discarded."""


@dataclass(frozen=True)
class TrainResult:
    loss: float  # mean training loss of the round
    steps: int
    failure: str | None = None  # why the round must not be sent: "diverged: ..." or "collapsed: ..."


def pick_device(name: str) -> torch.device:
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


def max_text_cosine(model: PFedDCModel) -> float:
    """The largest cosine between two classes' text features (1.0 = two classes indistinguishable)."""
    if len(model.classnames) < 2:
        return 0.0
    with torch.no_grad():
        feats = model.text_features()
    return float((feats @ feats.t()).fill_diagonal_(-1.0).max())


def schedule(step: int, total: int, warmup: int) -> float:
    """Learning-rate factor: linear warm-up over `warmup` steps, then cosine decay to zero at `total`."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    span = max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / span))


def train_local(model: PFedDCModel, data: Images, cfg: TrainSettings, device: torch.device,
                stop: threading.Event | None = None, progress: bool = False, features: torch.Tensor | None = None
                ) -> TrainResult:
    """Train prompts, gates and fusion for `cfg.local_epochs`; never raises on a bad round, reports it.
    `features`: the images' features when the image tower is frozen (no vision prompts), already computed."""
    from tqdm import tqdm

    groups = model.param_groups(cfg)
    if not groups:
        return TrainResult(float("nan"), 0)  # zero-shot: nothing to train
    params = [p for g in groups for p in g["params"]]
    model.train()
    opt = torch.optim.SGD(groups, lr=cfg.lr, momentum=MOMENTUM)
    steps_per_epoch = math.ceil(len(data) / cfg.batch_size)
    total = cfg.local_epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: schedule(s, total, min(cfg.warmup_steps, total - 1)))
    gen = torch.Generator().manual_seed(cfg.seed)
    chance = math.log(max(2, len(model.classnames)))
    cosine_at_start = max_text_cosine(model)
    losses: list[float] = []
    failure: str | None = None
    # Without vision prompts the image tower is frozen and deterministic: one pass serves every epoch.
    if model.vision is None:
        cached = features if features is not None else image_features(model, data, device)
    else:
        cached = None
    bar = tqdm(total=total, desc="training", disable=not progress, leave=False)
    for _ in range(cfg.local_epochs):
        order = torch.randperm(len(data), generator=gen)
        epoch: list[float] = []
        for idx, pixels, labels in batches(data, order, cfg.batch_size, 0 if cached is not None else DECODE_WORKERS):
            if stop is not None and stop.is_set():
                raise Interrupted("training interrupted")
            y = labels.to(device)
            with _autocast(device):
                if cached is not None:
                    logits = model.logits(None, image_features=cached[idx.to(cached.device)])
                else:
                    logits = model(_pixels(model, pixels, device))
                loss = F.cross_entropy(logits, y)
            if not torch.isfinite(loss):
                failure = f"diverged: the training loss became {loss.item()} at step {len(losses) + 1}"
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.clip_norm > 0:
                torch.nn.utils.clip_grad_norm_(params, cfg.clip_norm)
            opt.step()
            sched.step()
            losses.append(loss.item())
            epoch.append(losses[-1])
            bar.update(1)
        failure = failure or _collapse(model, epoch, losses, chance, cosine_at_start)
        if failure:
            break
    bar.close()
    model.eval()
    if failure is None:
        largest = max(float(p.detach().abs().max()) for p in params)
        if not math.isfinite(largest) or largest > MAX_ABS_VALUE:
            failure = f"diverged: a prompt or fusion value reached {largest:.3g} (the limit is {MAX_ABS_VALUE:g})"
    return TrainResult(sum(losses) / len(losses) if losses else float("nan"), len(losses), failure)


def _collapse(model: PFedDCModel, epoch: list[float], seen: list[float], chance: float, cosine_at_start: float
              ) -> str | None:
    """Why this epoch looks collapsed, or None: stuck at chance after being clearly better, or merged prompts."""
    tail = epoch[len(epoch) // 2:]
    window = min(RUNNING_WINDOW, len(seen))
    best = min(sum(seen[i:i + window]) / window for i in range(len(seen) - window + 1)) if window else math.inf
    if tail and best <= BETTER_FRACTION * chance and sum(tail) / len(tail) >= CHANCE_FRACTION * chance:
        return (f"collapsed: the loss stayed at chance level ({sum(tail) / len(tail):.3f}, ln C = {chance:.3f}) for "
                f"the last half of an epoch after reaching {best:.3f}")
    cosine = max_text_cosine(model)
    if cosine > MAX_TEXT_COSINE and cosine_at_start <= APART_TEXT_COSINE:
        return f"collapsed: two classes' text features became near-identical (cosine {cosine:.4f})"
    return None


@torch.no_grad()
def image_features(model: PFedDCModel, data: Images, device: torch.device, batch_size: int = 256) -> torch.Tensor:
    """Normalized image features [N, proj] of every readable image, by index (zeros for the others)."""
    out = torch.zeros((len(data), model.backbone.dims.projection), device=device)
    with _autocast(device):
        for idx, pixels, _ in batches(data, torch.arange(len(data)), batch_size):
            out[idx] = model.image_features(_pixels(model, pixels, device)).float()
    return out


@torch.no_grad()
def predict_proba(model: PFedDCModel, data: Images, device: torch.device, batch_size: int = 256) -> torch.Tensor:
    """Class probabilities [N, C] of the readable images; the class text features are computed once."""
    model.eval()
    out = []
    with _autocast(device):
        text = model.text_features()
        for _, pixels, _ in batches(data, torch.arange(len(data)), batch_size):
            out.append(model.logits(_pixels(model, pixels, device), text).float().softmax(-1).cpu())
    return torch.cat(out) if out else torch.zeros((0, len(model.classnames)))


@torch.no_grad()
def evaluate(model: PFedDCModel, data: Images, device: torch.device, batch_size: int = 256,
             features: torch.Tensor | None = None) -> float:
    """Accuracy on the readable images (NaN for an empty set); `features`: theirs, when the tower is frozen."""
    model.eval()
    if features is not None and model.vision is None:
        readable = features.norm(dim=-1) > 0
        labels = data.labels.to(features.device)[readable]
        if not len(labels):
            return float("nan")
        logits = model.logits(None, image_features=features[readable])
        return float((logits.argmax(-1) == labels).float().mean())
    correct = 0
    seen = 0
    with _autocast(device):
        text = model.text_features()
        for _, pixels, labels in batches(data, torch.arange(len(data)), batch_size):
            logits = model.logits(_pixels(model, pixels, device), text)
            correct += int((logits.argmax(-1).cpu() == labels).sum())
            seen += len(labels)
    return correct / seen if seen else float("nan")
