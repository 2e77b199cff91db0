"""A client's round on the embedded backbone: a collapse is caught, undone and followed by a healthy round."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from pfeddc.client.model.backbone import Backbone, load_backbone, preprocess
from pfeddc.client.model.images import ImageSet
from pfeddc.client.model.prompts import PFedDCModel, StatePart
from pfeddc.client.model.train import evaluate
from pfeddc.client.sim.datasets import DIGIT_CLASSES, font_digits
from pfeddc.client.trainer import LocalTrainer
from pfeddc.common.messages import FailureReason, TrainSettings
from pfeddc.common.spec import PromptConfig

CPU = torch.device("cpu")
# What training looked like before this design, pushed to its failure mode: no clipping, no warm-up, one
# large learning rate for prompts and fusion alike.
OLD = TrainSettings(lr=30.0, lr_vision=30.0, lr_fusion=30.0, clip_norm=0.0, warmup_steps=0, batch_size=16,
                    local_epochs=2)


@pytest.fixture(scope="module")
def embedded() -> Backbone:
    return load_backbone("embedded")


@pytest.fixture(scope="module")
def digits() -> tuple[ImageSet, ImageSet]:
    x, y = font_digits(160, seed=7)
    pixels = torch.from_numpy(np.stack([preprocess(Image.fromarray(img), 32) for img in x]))
    labels = torch.from_numpy(y.astype(np.int64))
    return ImageSet(pixels[:120], labels[:120]), ImageSet(pixels[120:], labels[120:])


def test_trainer_catches_a_collapse_undoes_it_and_recovers(embedded: Backbone,
                                                           digits: tuple[ImageSet, ImageSet]) -> None:
    train, test = digits
    model = PFedDCModel(embedded, DIGIT_CLASSES, PromptConfig(method="pfeddc-noproto"))  # the issue-11 frame
    trainer = LocalTrainer(model, train, test, CPU)
    received, local = model.global_state(), model.local_state()
    zero_shot = evaluate(model, test, CPU)
    collapsed = trainer.run(received, OLD)
    assert collapsed.tensors is None and collapsed.reason == FailureReason.COLLAPSED
    assert collapsed.failure is not None and collapsed.failure.startswith("collapsed:")
    for part, expected in ((StatePart.LOCAL, local), (StatePart.GLOBAL, received)):  # nothing of it survives
        state = model.state(part)
        assert all(np.array_equal(state[k], expected[k]) for k in expected)
    assert trainer.lr_scale == 0.5
    healthy = trainer.run(received, TrainSettings(batch_size=16, seed=1))
    assert healthy.tensors is not None and healthy.failure is None
    assert healthy.metrics.accuracy_global == pytest.approx(zero_shot)  # round one's global model is zero-shot
    assert healthy.metrics.accuracy_after > 0.5  # far from chance (0.1): the model still tells digits apart
    assert set(healthy.update_norms) == set(received) and healthy.update_norms["text.global"] > 0


@pytest.fixture(scope="module")
def inverted_mnist() -> tuple[ImageSet, ImageSet]:
    from pfeddc.client.sim.datasets import digit_domains

    images, labels, domains = digit_domains()
    keep = np.flatnonzero(domains == "mnist-inverted")[:400]
    pixels = torch.from_numpy(np.stack([preprocess(Image.fromarray(images[i]), 32) for i in keep]))
    y = torch.from_numpy(labels[keep])
    return ImageSet(pixels[:300], y[:300]), ImageSet(pixels[300:], y[300:])


def test_trainer_learns_a_style_zero_shot_gets_wrong_and_shares_it(embedded: Backbone,
                                                                    inverted_mnist: tuple[ImageSet, ImageSet]) -> None:
    """Inverted MNIST (a style the backbone never saw): zero-shot is near chance; with the class head one round
    learns without failing, and the global part alone (what it sends) gives a new site most of it."""
    train, test = inverted_mnist
    model = PFedDCModel(embedded, DIGIT_CLASSES, PromptConfig(classes=tuple(DIGIT_CLASSES)))
    received = model.global_state()
    zero_shot = evaluate(model, test, CPU)
    outcome = LocalTrainer(model, train, test, CPU).run(received, TrainSettings(batch_size=16))
    assert outcome.failure is None and outcome.tensors is not None
    assert outcome.metrics.accuracy_after > zero_shot + 0.3
    fresh = PFedDCModel(embedded, DIGIT_CLASSES, PromptConfig(classes=tuple(DIGIT_CLASSES)))
    fresh.load_state(outcome.tensors, StatePart.GLOBAL)  # a new site: what was sent, nothing local
    assert evaluate(fresh, test, CPU) > zero_shot + 0.2


def test_a_failed_round_with_the_class_head_leaves_nothing_of_it(
        embedded: Backbone, inverted_mnist: tuple[ImageSet, ImageSet]) -> None:
    train, test = inverted_mnist
    model = PFedDCModel(embedded, DIGIT_CLASSES, PromptConfig(method="pfeddc-prompts", classes=tuple(DIGIT_CLASSES)))
    trainer = LocalTrainer(model, train, test, CPU)
    received, local = model.global_state(), model.local_state()
    failed = trainer.run(received, TrainSettings(lr=1e7, lr_vision=1e7, lr_fusion=1e7, clip_norm=0.0, batch_size=64))
    assert failed.tensors is None and failed.failure is not None and failed.failure.startswith("diverged")
    for part, expected in ((StatePart.LOCAL, local), (StatePart.GLOBAL, received)):
        state = model.state(part)
        assert all(np.array_equal(state[k], expected[k]) for k in expected)
    assert model.head is not None and not model.head.fitted  # the received statistics (none yet) stand


def test_sites_step_the_shared_residual_only_in_the_federations_first_rounds(
        embedded: Backbone, digits: tuple[ImageSet, ImageSet]) -> None:
    """Round 1 holds the site's own statistics (no step); rounds 2..RESIDUAL_ROUNDS step; after them the residual is
    sent back as received (its number of steps is its regularizer), whatever a site's trainer is asked."""
    from pfeddc.client.model.residual import RESIDUAL_ROUNDS

    train, test = digits
    cfg = PromptConfig(classes=tuple(DIGIT_CLASSES))
    model = PFedDCModel(embedded, DIGIT_CLASSES, cfg)
    trainer = LocalTrainer(model, train, test, CPU)
    first = trainer.run(model.global_state(), TrainSettings(batch_size=16), measure=False, round_=1)
    assert first.tensors is not None and not first.tensors["head.residual.global"].any()
    moved = {}
    for round_ in (2, RESIDUAL_ROUNDS, RESIDUAL_ROUNDS + 1, 100):
        outcome = trainer.run(first.tensors, TrainSettings(batch_size=16), measure=False, round_=round_)
        assert outcome.tensors is not None
        moved[round_] = float(np.abs(outcome.tensors["head.residual.global"]).max())
    assert moved[2] > 0 and moved[RESIDUAL_ROUNDS] > 0
    assert moved[RESIDUAL_ROUNDS + 1] == 0 and moved[100] == 0
