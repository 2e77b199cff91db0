"""Local training: warm-up and cosine schedule, gradient clipping, learning-rate groups, collapse detection."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pfeddc.client.model.backbone import Backbone
from pfeddc.client.model.images import ImageSet
from pfeddc.client.model.prompts import PFedDCModel, StatePart
from pfeddc.client.model.train import schedule, train_local
from pfeddc.common.messages import TrainSettings
from pfeddc.common.spec import PromptConfig

CPU = torch.device("cpu")


def colour_set(n: int = 24) -> ImageSet:
    y = torch.arange(n) % 3
    colours = torch.tensor([[220, 40, 40], [40, 200, 40], [40, 40, 220]])
    noise = torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 30
    return ImageSet((colours[y][:, :, None, None] + noise).clamp(0, 255).to(torch.uint8), y)


def test_schedule_warms_up_linearly_then_decays_to_zero() -> None:
    factors = [schedule(s, 10, 3) for s in range(10)]
    assert factors[:3] == pytest.approx([0.25, 0.5, 0.75]) and factors[3] == pytest.approx(1.0)
    assert all(a > b for a, b in zip(factors[3:], factors[4:], strict=False)) and factors[-1] > 0
    assert schedule(10, 10, 3) == pytest.approx(0.0)


def test_gradient_clipping_bounds_the_first_step(tiny_backbone: Backbone) -> None:
    model = PFedDCModel(tiny_backbone, ["red", "green", "blue"], PromptConfig(method="pfeddc-prompts", vision_depth=2))
    before = {k: v.copy() for k, v in model.global_state().items()}
    settings = TrainSettings(lr=0.5, lr_vision=0.5, lr_fusion=0.5, clip_norm=1e-3, warmup_steps=0, batch_size=24)
    result = train_local(model, colour_set(), settings, CPU)
    assert result.steps == 1 and result.failure is None
    moved = math.sqrt(sum(float(np.sum((model.global_state()[k] - before[k]) ** 2)) for k in before))
    assert 0 < moved <= 0.5 * 1e-3 + 1e-9  # lr x clip norm: the whole step, whatever the gradient was


def test_training_is_seeded_and_reports_its_loss(tiny_backbone: Backbone) -> None:
    runs = []
    for _ in range(2):
        model = PFedDCModel(tiny_backbone, ["red", "green", "blue"], PromptConfig(method="pfeddc-prompts"))
        result = train_local(model, colour_set(), TrainSettings(batch_size=8, seed=5), CPU)
        runs.append((result.loss, model.state(StatePart.GLOBAL)["text.global"]))
    assert runs[0][0] == runs[1][0] and np.array_equal(runs[0][1], runs[1][1]) and runs[0][0] > 0


def test_zero_shot_has_nothing_to_train(tiny_backbone: Backbone) -> None:
    model = PFedDCModel(tiny_backbone, ["red", "green", "blue"], PromptConfig(method="zeroshot"))
    result = train_local(model, colour_set(), TrainSettings(), CPU)
    assert result.steps == 0 and math.isnan(result.loss) and result.failure is None


def test_text_only_methods_train_on_cached_image_features_with_the_same_logits(tiny_backbone: Backbone) -> None:
    from pfeddc.client.model.train import _pixels, image_features

    data = colour_set(8)
    model = PFedDCModel(tiny_backbone, ["red", "green", "blue"], PromptConfig(method="promptfl"))
    cached = image_features(model, data, CPU)
    torch.testing.assert_close(model.logits(None, image_features=cached), model(_pixels(model, data.images, CPU)))
