"""Datasets the embedded backbone is pretrained on, readable offline from registry packages.

Fashion-MNIST's idx files come from Debian `dataset-fashion-mnist` (PFEDDC_FASHION_DIR points elsewhere);
digits are drawn with Pillow's scalable font.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

FASHION_DIR = Path(os.environ.get("PFEDDC_FASHION_DIR", "/usr/share/datasets/fashion-mnist"))
FASHION_CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
                   "ankle boot"]
DIGIT_CLASSES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def read_idx(images: Path, labels: Path) -> tuple[np.ndarray, np.ndarray]:
    """idx files (gzip): images uint8 [N, 28, 28], labels uint8 [N]."""
    with gzip.open(images) as fh:
        x = np.frombuffer(fh.read(), np.uint8, offset=16)
    with gzip.open(labels) as fh:
        y = np.frombuffer(fh.read(), np.uint8, offset=8)
    return x.reshape(len(y), 28, 28), y


def fashion_mnist(split: str, directory: Path = FASHION_DIR) -> tuple[np.ndarray, np.ndarray]:
    prefix = "train" if split == "train" else "t10k"
    images, labels = directory / f"{prefix}-images-idx3-ubyte.gz", directory / f"{prefix}-labels-idx1-ubyte.gz"
    if not images.exists():
        raise FileNotFoundError(f"Fashion-MNIST not found at {directory}: apt-get install dataset-fashion-mnist")
    return read_idx(images, labels)


def font_digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Digits drawn with Pillow's scalable font at random sizes, offsets, rotations and strokes: [n, 28, 28]."""
    from PIL import Image, ImageDraw, ImageFont

    rng = np.random.default_rng(seed)
    fonts = {s: ImageFont.load_default(size=s) for s in range(14, 25, 2)}
    out, labels = np.zeros((n, 28, 28), np.uint8), rng.integers(0, 10, n).astype(np.uint8)
    for i in range(n):
        img = Image.new("L", (28, 28))
        draw = ImageDraw.Draw(img)
        size = int(rng.choice(list(fonts)))
        xy = (float(14 + rng.integers(-3, 4)), float(14 + rng.integers(-3, 4)))
        draw.text(xy, str(labels[i]), fill=255, font=fonts[size], anchor="mm",
                  stroke_width=int(rng.integers(0, 3)), stroke_fill=255)
        out[i] = np.asarray(img.rotate(float(rng.uniform(-15, 15)), resample=Image.Resampling.BILINEAR))
    return out, labels
