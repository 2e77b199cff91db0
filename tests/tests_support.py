"""Test helpers shared across test folders: tiny CLIP directories and generated ImageFolders."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import CLIPConfig, CLIPModel

from pfeddc.client.model.backbone import save_backbone
from pfeddc.server.app import RunningServer

# coordinator(*flags, state_dir=None): a real gRPC coordinator on 127.0.0.1:<free port> (tests/conftest.py)
StartCoordinator = Callable[..., RunningServer]

TINY_CONFIG = {
    "projection_dim": 16,
    # the real CLIP tokenizer (copied from the shipped embedded backbone), so tiny models tokenize like production
    "text_config": {"vocab_size": 49408, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                    "num_attention_heads": 2, "max_position_embeddings": 77, "bos_token_id": 49406,
                    "eos_token_id": 49407, "pad_token_id": 49407},
    "vision_config": {"hidden_size": 48, "intermediate_size": 96, "num_hidden_layers": 3, "num_attention_heads": 2,
                      "image_size": 32, "patch_size": 8, "num_channels": 3},
}


# The shipped learning rates are tuned on the embedded backbone. A tiny random CLIP gives its classes
# near-identical text features, and steps that large merge them: a collapse the clients rightly report and
# retry. Tests of the federation's machinery on tiny models step gently (flags of pfeddc-server / pfeddc-sim).
GENTLE_RATES = ("--lr", "0.005", "--lr-vision", "0.05", "--lr-fusion", "0.001")


def make_tiny_model_dir(directory: Path, seed: int = 0) -> Path:
    """A random tiny CLIP saved like a real one (weights, config, tokenizer, preprocessing)."""
    torch.manual_seed(seed)
    save_backbone(CLIPModel(CLIPConfig.from_dict(TINY_CONFIG)).eval(), directory)
    return directory


COLORS = [(220, 40, 40), (40, 200, 40), (40, 40, 220), (200, 200, 40)]

def make_image_folder(root: Path, classes: list[str], per_class: int, seed: int, split: bool = False) -> Path:
    """Class c is a noisy image around its own color: separable, so training has signal."""
    rng = np.random.default_rng(seed)
    parts = {"train": per_class, "test": max(2, per_class // 2)} if split else {"": per_class}
    for part, count in parts.items():
        for c, name in enumerate(classes):
            folder = root / part / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                pixels = np.clip(np.array(COLORS[c % len(COLORS)]) + rng.normal(0, 30, (20, 20, 3)), 0, 255)
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i}.png")
    return root


def write_idx(directory: Path, prefix: str, images: np.ndarray, labels: np.ndarray) -> None:
    """Write images uint8 [N, 28, 28] and labels [N] as gzip idx files, like Fashion-MNIST ships them."""
    import gzip

    directory.mkdir(parents=True, exist_ok=True)
    header = np.array([2051, len(labels), 28, 28], dtype=">i4").tobytes()
    with gzip.open(directory / f"{prefix}-images-idx3-ubyte.gz", "wb") as fh:
        fh.write(header + images.astype(np.uint8).tobytes())
    with gzip.open(directory / f"{prefix}-labels-idx1-ubyte.gz", "wb") as fh:
        fh.write(np.array([2049, len(labels)], dtype=">i4").tobytes() + labels.astype(np.uint8).tobytes())


def fake_fashion_dir(directory: Path, per_split: int = 200, seed: int = 0) -> Path:
    """Idx files with class-dependent blobs: a stand-in for Fashion-MNIST in tests (10 classes)."""
    rng = np.random.default_rng(seed)
    for prefix in ("train", "t10k"):
        labels = rng.integers(0, 10, per_split)
        images = rng.integers(0, 40, (per_split, 28, 28))
        for i, label in enumerate(labels):
            images[i, 2 * label:2 * label + 8, 4:24] = 255
        write_idx(directory, prefix, images, labels)
    return directory
