"""Test helpers shared across test folders: tiny CLIP directories and generated ImageFolders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import CLIPConfig, CLIPModel

from pfeddc.client.embedded import save_backbone

TINY_CONFIG = {
    "projection_dim": 16,
    "text_config": {"vocab_size": 512, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                    "num_attention_heads": 2, "max_position_embeddings": 77, "bos_token_id": 1,
                    "eos_token_id": 3, "pad_token_id": 0},
    "vision_config": {"hidden_size": 48, "intermediate_size": 96, "num_hidden_layers": 3, "num_attention_heads": 2,
                      "image_size": 32, "patch_size": 8, "num_channels": 3},
}


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
