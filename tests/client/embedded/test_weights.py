"""The shipped embedded backbone: the sizes the coordinator announces, a complete card, and real alignment."""

from __future__ import annotations

import json

import numpy as np
import torch
from PIL import Image

from pfeddc.client.embedded import WEIGHTS_DIR, embedded_dir
from pfeddc.client.model.backbone import load_backbone, preprocess
from pfeddc.client.model.images import ImageSet
from pfeddc.client.model.prompts import PFedDCModel
from pfeddc.client.model.train import evaluate
from pfeddc.client.sim.datasets import DIGIT_CLASSES, font_digits
from pfeddc.common.backbones import EMBEDDED_MODEL, dims_from_config, resolve_dims
from pfeddc.common.embedded import EMBEDDED_CONFIG
from pfeddc.common.spec import PromptConfig


def test_weights_config_matches_what_the_coordinator_announces() -> None:
    shipped = json.loads((embedded_dir() / "config.json").read_text())
    assert dims_from_config(shipped) == resolve_dims(EMBEDDED_MODEL) == dims_from_config(EMBEDDED_CONFIG)
    for tower in ("text_config", "vision_config"):
        for key, value in EMBEDDED_CONFIG[tower].items():
            assert shipped[tower][key] == value, (tower, key)


def test_weights_card_names_sources_licences_command_and_results() -> None:
    card = json.loads((WEIGHTS_DIR / "card.json").read_text())
    assert card["command"].startswith("python -m tools.embedded build") and card["seed"] == 0
    assert card["torch"] and card["transformers"] and card["parameters"] > 1_000_000
    assert all(source["license"] and source["use"] for source in card["sources"])
    # These read the card's recorded figures: a rebuild whose card falls below the goals cannot ship. The
    # figures themselves are measured again by `pytest --run-slow -m slow` (a rebuild) and, for digits, below.
    results = card["zero_shot"]
    assert results["fashion-mnist test"]["top1"] >= 0.75
    held_out = results["emoji twitter style (held out)"]
    assert held_out["mean_10_way_top1"] > 4 * 0.1 and held_out["top1"] > 20 * held_out["chance_top1"]


def test_weights_tell_digits_apart_by_name_zero_shot() -> None:
    backbone = load_backbone(EMBEDDED_MODEL)
    x, y = font_digits(200, seed=1234)  # a fresh draw of the font digits, never these exact images
    pixels = torch.from_numpy(np.stack([preprocess(Image.fromarray(img), backbone.image_size) for img in x]))
    model = PFedDCModel(backbone, DIGIT_CLASSES, PromptConfig(method="zeroshot"))
    assert evaluate(model, ImageSet(pixels, torch.from_numpy(y.astype(np.int64))), torch.device("cpu")) > 0.5
