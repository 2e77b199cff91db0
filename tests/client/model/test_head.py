"""The class head: federated statistics that equal pooling, the discriminant, calibration, the personal part."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pfeddc.client.model.backbone import Backbone
from pfeddc.client.model.head import ClassHead, discriminant, site_statistics
from pfeddc.client.model.prompts import PFedDCModel, StatePart
from pfeddc.common.spec import PromptConfig

CLASSES = ["t-shirt", "trouser", "ankle boot"]


def gaussian_classes(n: int, classes: int = 3, width: int = 16, spread: float = 0.15, seed: int = 0,
                     prior: list[float] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit-norm features around one direction per class (a narrow cone, like CLIP's): [n, width], labels."""
    g = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(classes, width, generator=torch.Generator().manual_seed(99)), dim=-1)
    p = torch.tensor(prior or [1.0 / classes] * classes)
    y = torch.multinomial(p, n, replacement=True, generator=g)
    x = F.normalize(centres[y] + spread * torch.randn(n, width, generator=g), dim=-1)
    return x, y


def test_federated_statistics_are_exactly_the_pooled_ones() -> None:
    """FedAvg of each site's means, weighted by its image count, is the statistics of all images together."""
    sites = [gaussian_classes(n, seed=s) for s, n in ((1, 7), (2, 30), (3, 64))]
    parts = [(len(y), site_statistics(x, y, 3)) for x, y in sites]
    total = sum(n for n, _ in parts)
    averaged = {k: sum(n * s[k] for n, s in parts) / total for k in ("counts", "sums", "moment")}
    pooled = site_statistics(torch.cat([x for x, _ in sites]), torch.cat([y for _, y in sites]), 3)
    for k, v in averaged.items():
        torch.testing.assert_close(v, pooled[k], atol=1e-6, rtol=1e-5)


def test_discriminant_separates_classes_and_ignores_a_common_scale() -> None:
    x, y = gaussian_classes(300)
    stats = site_statistics(x, y, 3)
    fit = discriminant(stats["counts"], stats["sums"], stats["moment"])
    assert fit is not None
    weights, bias = fit
    test_x, test_y = gaussian_classes(300, seed=5)
    assert float(((test_x @ weights.t() + bias).argmax(1) == test_y).float().mean()) > 0.95
    scaled = discriminant(3 * stats["counts"], 3 * stats["sums"], 3 * stats["moment"])  # e.g. a clipped update
    assert scaled is not None
    torch.testing.assert_close(scaled[0], weights, rtol=1e-4, atol=1e-4)


def test_discriminant_of_no_images_is_none_and_of_noisy_statistics_is_finite() -> None:
    assert discriminant(torch.zeros(3), torch.zeros(3, 16), torch.zeros(16, 16)) is None
    x, y = gaussian_classes(100)
    stats = site_statistics(x, y, 3)
    g = torch.Generator().manual_seed(0)  # DP-like noise: negative counts, a moment that is not PSD
    noisy = {k: v + 0.05 * torch.randn(v.shape, generator=g) for k, v in stats.items()}
    fit = discriminant(noisy["counts"], noisy["sums"], noisy["moment"])
    assert fit is not None and all(bool(torch.isfinite(t).all()) for t in fit)


def test_a_class_nobody_holds_gets_finite_logits_and_a_tiny_prior() -> None:
    x, y = gaussian_classes(200, classes=2)
    stats = site_statistics(x, y, 3)  # three classes in the list, none of the third
    fit = discriminant(stats["counts"], stats["sums"], stats["moment"])
    assert fit is not None
    logits = x @ fit[0].t() + fit[1]
    assert bool(torch.isfinite(logits).all()) and int((logits.argmax(1) == 2).sum()) == 0


def test_head_without_statistics_is_the_text_term_exactly() -> None:
    head = ClassHead(3, 16, shared=True, personal=True)
    x, _ = gaussian_classes(8)
    text = torch.randn(8, 3)
    torch.testing.assert_close(head(x, text), text)


def test_calibration_cools_an_overconfident_discriminant() -> None:
    """Statistics of tight classes make a discriminant overconfident on a site whose images vary more: the
    site's fitted temperature cools it, is used at once and is what it sends."""
    tight_x, tight_y = gaussian_classes(600, spread=0.1)
    head = ClassHead(3, 16, shared=True, personal=False)
    stats = {**site_statistics(tight_x, tight_y, 3), "calibration": torch.zeros(2), "residual": torch.zeros(3, 17)}
    head.load_statistics({f"head.{k}.global": v for k, v in stats.items()})
    x, y = gaussian_classes(200, spread=0.5, seed=2)
    hot = float(F.cross_entropy(head(x, torch.zeros(200, 3)), y))
    head.fit_calibration(x, y, torch.zeros(200, 3))
    log_t = float(head.received["calibration"][0])
    assert log_t > 0.5 and float(head.own["calibration"][0]) == log_t
    held_out, held_y = gaussian_classes(400, spread=0.5, seed=9)
    assert float(F.cross_entropy(head(held_out, torch.zeros(400, 3)), held_y)) < hot


def test_site_prior_moves_predictions_toward_the_sites_own_classes() -> None:
    pooled_x, pooled_y = gaussian_classes(600, spread=0.6)  # overlapping classes: the prior matters
    shared = site_statistics(pooled_x, pooled_y, 3)
    head = ClassHead(3, 16, shared=True, personal=True)
    head.load_statistics({f"head.{k}.global": v for k, v in {**shared, "calibration": torch.zeros(2),
                                                             "residual": torch.zeros(3, 17)}.items()})
    site_x, site_y = gaussian_classes(200, spread=0.6, seed=4, prior=[0.9, 0.05, 0.05])
    before = float((head(site_x, torch.zeros(200, 3)).argmax(1) == site_y).float().mean())
    head.site_counts.copy_(torch.bincount(site_y, minlength=3).float())
    after = float((head(site_x, torch.zeros(200, 3)).argmax(1) == site_y).float().mean())
    assert after > before + 0.05


def test_personal_probe_is_pulled_toward_the_shared_model() -> None:
    x, y = gaussian_classes(60, spread=0.3)
    head = ClassHead(3, 16, shared=False, personal=True)
    head.observe(x, y)
    head.fit_personal(x, y, torch.zeros(60, 3), steps=100, lr=0.01)
    assert head.rows is not None and head.bias is not None
    moved = float(head.rows.detach().norm())
    assert 0 < moved < 1.0  # it learns, within the ridge's pull
    head.reset_personal()
    assert float(head.rows.detach().abs().sum()) == 0.0


def shared_head(x: torch.Tensor, y: torch.Tensor, classes: int = 3) -> ClassHead:
    """A head holding the federation's statistics of (x, y)."""
    head = ClassHead(classes, x.shape[1], shared=True, personal=False, residual=True)
    stats = {**site_statistics(x, y, classes), "calibration": torch.zeros(2), "residual": torch.zeros(classes,
                                                                                                     x.shape[1] + 1)}
    head.load_statistics({f"head.{k}.global": v for k, v in stats.items()})
    return head


def test_the_shared_residual_waits_for_the_federations_discriminant() -> None:
    """In a shared head's first round the discriminant is the site's own: no residual is fitted against it."""
    x, y = gaussian_classes(120, spread=0.5)
    head = ClassHead(3, 16, shared=True, personal=False, residual=True)
    head.observe(x, y)
    head.fit_residual(x, y, torch.zeros(120, 3))
    assert float(head.own["residual"].abs().sum()) == 0.0
    head.load_statistics({f"head.{k}.global": v for k, v in head.own.items()})  # round 2: the federation's
    head.observe(x, y)
    head.fit_residual(x, y, torch.zeros(120, 3))
    assert float(head.own["residual"].abs().sum()) > 0.0


def test_the_shared_residual_learns_what_the_discriminant_misses() -> None:
    """Classes of very different spreads break the discriminant's one shared covariance; the residual's step
    lowers the cross-entropy on the site's images and on held-out ones once the federation sends it back (a
    one-site federation here); the site sends it and keeps classifying with the federation's until then."""
    def unequal(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = gaussian_classes(n, spread=0.05, seed=seed)
        wide, wide_y = gaussian_classes(n, spread=0.9, seed=seed + 50)
        keep = wide_y == 2
        return torch.cat([x[y != 2], wide[keep]]), torch.cat([y[y != 2], wide_y[keep]])

    x, y = unequal(300, 0)
    head = shared_head(x, y)
    head.observe(x, y)
    held_out, held_y = unequal(600, 7)
    zeros = torch.zeros(len(x), 3)
    before = (float(F.cross_entropy(head(x, zeros), y)),
              float(F.cross_entropy(head(held_out, torch.zeros(len(held_out), 3)), held_y)))
    head.fit_residual(x, y, zeros)
    assert float(F.cross_entropy(head(x, zeros), y)) == before[0]  # not used before the federation returns it
    assert float((head.own["residual"] - head.received["residual"]).abs().max()) > 0
    head.load_statistics({f"head.{k}.global": v for k, v in head.own.items()})
    after = (float(F.cross_entropy(head(x, zeros), y)),
             float(F.cross_entropy(head(held_out, torch.zeros(len(held_out), 3)), held_y)))
    assert after[0] < 0.9 * before[0] and after[1] < before[1]


def test_the_shared_residual_does_not_learn_a_sites_label_mix() -> None:
    """A site holding mostly one class trains the shared rows with its own prior in place of the federation's: its
    biases do not tilt toward its class (the federation's prior already holds every site's)."""
    pooled_x, pooled_y = gaussian_classes(600, spread=0.3)
    head = shared_head(pooled_x, pooled_y)
    x, y = gaussian_classes(300, spread=0.3, seed=3, prior=[0.9, 0.05, 0.05])
    head.observe(x, y)
    head.fit_residual(x, y, torch.zeros(300, 3))
    bias = head.own["residual"][:, -1]
    tilt = float(bias[0] - bias[1:].mean())
    assert abs(tilt) < 0.3 * math.log(0.9 / 0.05)  # the prior's own log ratio, had it learned the mix


def test_model_spec_shares_statistics_only_with_a_class_list(tiny_backbone: Backbone) -> None:
    shared = PFedDCModel(tiny_backbone, CLASSES, PromptConfig(classes=tuple(CLASSES)))
    width = tiny_backbone.dims.projection
    assert {s.name: s.shape for s in shared.spec} == {
        "head.calibration.global": (2,), "head.counts.global": (3,), "head.moment.global": (width, width),
        "head.sums.global": (3, width), "head.residual.global": (3, width + 1)}
    alone = PFedDCModel(tiny_backbone, CLASSES, PromptConfig())
    assert alone.spec == [] and "head.sums.local" in alone.local_state()
    bare = PFedDCModel(tiny_backbone, CLASSES, PromptConfig(method="pfeddc-noresidual", classes=tuple(CLASSES)))
    assert {s.name for s in shared.spec} == {s.name for s in bare.spec} | {"head.residual.global"}


def test_a_new_site_gets_the_federations_head_from_the_global_state(tiny_backbone: Backbone) -> None:
    """What a site sends after a round, loaded by a newcomer, classifies exactly as the sender's shared part."""
    cfg = PromptConfig(classes=tuple(CLASSES))
    site = PFedDCModel(tiny_backbone, CLASSES, cfg)
    assert site.head is not None
    x, y = gaussian_classes(90, width=tiny_backbone.dims.projection)
    site.head.observe(x, y)
    newcomer = PFedDCModel(tiny_backbone, CLASSES, cfg, seed=5)
    newcomer.load_state(site.global_state(), StatePart.GLOBAL)
    with site.global_only():
        torch.testing.assert_close(newcomer.logits(None, image_features=x), site.logits(None, image_features=x))
    sent = site.global_state()
    assert np.isclose(sent["head.counts.global"].sum(), 1.0) and sent["head.moment.global"].shape[0] == x.shape[1]


@pytest.mark.parametrize("method", ["pfeddc", "pfeddc-nopersonal"])
def test_global_only_drops_the_personal_part(tiny_backbone: Backbone, method: str) -> None:
    cfg = PromptConfig(method=method, classes=tuple(CLASSES))
    model = PFedDCModel(tiny_backbone, CLASSES, cfg)
    assert model.head is not None
    x, y = gaussian_classes(90, width=tiny_backbone.dims.projection, spread=0.5)
    model.head.observe(x, y)
    model.head.fit_personal(x, y, torch.zeros(90, 3), steps=50, lr=0.05)
    personal = model.logits(None, image_features=x)
    with model.global_only():
        shared = model.logits(None, image_features=x)
    assert torch.equal(personal, shared) == (method == "pfeddc-nopersonal")
    torch.testing.assert_close(model.logits(None, image_features=x), personal)  # restored after
