"""The builder: pretraining on a small generated corpus, the directory it writes, and (opt-in) a full rebuild."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tests_support import TINY_CONFIG

from pfeddc.client.embedded import WEIGHTS_DIR
from pfeddc.client.model.backbone import load_backbone
from pfeddc.client.model.images import ImageSet
from pfeddc.client.model.prompts import PFedDCModel
from pfeddc.client.model.train import evaluate
from pfeddc.common.spec import PromptConfig
from tools.embedded.build import augment, build
from tools.embedded.corpus import DIGIT, Corpus

COLORS = {"red square": (220, 30, 30), "green square": (30, 200, 30), "blue square": (30, 30, 220)}


def color_corpus(per_class: int = 40) -> Corpus:
    rng = np.random.default_rng(0)
    images = np.zeros((3 * per_class, 4, 32, 32), dtype=np.uint8)
    for c, rgb in enumerate(COLORS.values()):
        for i in range(per_class):
            noise = rng.normal(0, 20, (3, 32, 32))
            images[c * per_class + i, :3] = np.clip(np.array(rgb)[:, None, None] + noise, 0, 255)
    images[:, 3] = 255
    owner = np.repeat(np.arange(3), per_class)
    return Corpus(images, owner, np.full(len(owner), DIGIT), [(n,) for n in COLORS], [()] * 3)


def bpe_from_shipped(tmp_path: Path) -> Path:
    bpe = tmp_path / "bpe.txt.gz"
    with gzip.open(bpe, "wt", encoding="utf-8") as fh:
        fh.write("header\n" + (WEIGHTS_DIR / "merges.txt").read_text(encoding="utf-8").split("\n", 1)[1])
    return bpe


def test_build_pretrains_a_working_clip_directory_and_leaves_nothing_half_written(tmp_path: Path) -> None:
    out = tmp_path / "weights"
    corpus = color_corpus()
    card = build(out, tmp_path / "cache", epochs=30, seed=0, corpus=corpus, progress=False, evaluate=False,
                 bpe_gz=bpe_from_shipped(tmp_path), config=TINY_CONFIG)
    assert {p.name for p in out.iterdir()} >= {"config.json", "model.safetensors", "vocab.json", "merges.txt",
                                               "tokenizer_config.json", "preprocessor_config.json", "card.json"}
    assert not (tmp_path / "weights.building").exists()
    assert json.loads((out / "card.json").read_text())["seed"] == card["seed"] == 0
    backbone = load_backbone(str(out))
    assert all(p.dtype == torch.float32 for p in backbone.clip.parameters())  # stored fp16, trained in fp32
    model = PFedDCModel(backbone, list(COLORS), PromptConfig(method="zeroshot"))
    images = torch.from_numpy(corpus.images[:, :3].copy())
    accuracy = evaluate(model, ImageSet(images, torch.from_numpy(corpus.owner)), torch.device("cpu"))
    assert accuracy > 0.9  # the captions alone now tell the three colours apart


def test_augment_keeps_grayscale_backgrounds_black_and_gives_emoji_a_background() -> None:
    batch = torch.zeros(4, 4, 32, 32, dtype=torch.uint8)  # fully transparent
    is_emoji = torch.tensor([True, True, False, False])
    x = augment(batch, is_emoji, torch.Generator().manual_seed(0))
    assert x.shape == (4, 3, 32, 32)
    assert torch.allclose(x[2:], torch.full_like(x[2:], -1.0))  # black after (x - 0.5) / 0.5
    assert (x[:2] > -1.0).any()


@pytest.mark.slow
def test_rebuild_lands_within_a_few_points_of_the_shipped_card(tmp_path: Path) -> None:
    """Opt-in (`pytest --run-slow -m slow`): about an hour on 2 CPU cores; needs npm and pip registries."""
    shipped = json.loads((WEIGHTS_DIR / "card.json").read_text())
    card = build(tmp_path / "weights", epochs=shipped["epochs"], seed=shipped["seed"], progress=False)
    for name, result in shipped["zero_shot"].items():
        assert abs(card["zero_shot"][name]["top1"] - result["top1"]) <= 0.05, name
