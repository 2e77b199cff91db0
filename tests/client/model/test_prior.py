"""A site's label prior: shrunk toward the federation's by as much as its counts say sites differ."""

from __future__ import annotations

import math
import statistics

import numpy as np
import torch

from pfeddc.client.model.prior import MIN_PSEUDOCOUNT, concentration, site_prior


def draw_counts(concentration_per_class: float, classes: int, images: int, seed: int) -> torch.Tensor:
    """One site's label counts, drawn as the few-shot benchmark draws them (a Dirichlet mix, then multinomial)."""
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.full(classes, concentration_per_class))
    return torch.tensor(rng.multinomial(images, p), dtype=torch.float64)


def test_the_estimated_concentration_follows_how_far_sites_label_mixes_differ() -> None:
    uniform = torch.full((64,), 1 / 64, dtype=torch.float64)
    near_iid = [concentration(draw_counts(100.0, 64, 1024, s), uniform) for s in range(40)]
    skewed = [concentration(draw_counts(1.0, 64, 1024, s), uniform) for s in range(40)]
    finite = [a for a in near_iid if math.isfinite(a)]
    # near-IID: the true concentration is 6,400 images; sampling noise alone often reads as none (inf)
    assert len(finite) < 40 and statistics.median(finite) > 2000
    # strongly skewed: 64 images (1 per class), the floor
    assert 60 <= statistics.median(skewed) <= 120
    assert min(skewed) >= MIN_PSEUDOCOUNT * 64


def test_counts_that_spread_like_sampling_noise_give_the_federations_prior() -> None:
    federation = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    mine = torch.tensor([51.0, 29.0, 20.0])  # 100 images, almost exactly the federation's mix
    assert math.isinf(concentration(mine, federation))
    assert torch.equal(site_prior(mine, federation), federation)


def test_a_skewed_site_keeps_its_own_mix_smoothed_by_at_least_the_floor() -> None:
    federation = torch.full((4,), 0.25, dtype=torch.float64)
    mine = torch.tensor([97.0, 1.0, 1.0, 1.0])
    prior = site_prior(mine, federation)
    assert concentration(mine, federation) == MIN_PSEUDOCOUNT * 4
    assert torch.allclose(prior, (mine.double() + 1.0) / 104)
    assert math.isclose(float(prior.sum()), 1.0)
    assert float(prior.min()) > 0  # no class is ruled out, even one the site never saw


def test_no_images_or_one_class_give_the_floor_not_a_division_by_zero() -> None:
    assert concentration(torch.zeros(5), torch.full((5,), 0.2)) == 5 * MIN_PSEUDOCOUNT
    assert concentration(torch.tensor([3.0]), torch.tensor([1.0])) == MIN_PSEUDOCOUNT
    prior = site_prior(torch.zeros(5), torch.full((5,), 0.2, dtype=torch.float64))
    assert torch.allclose(prior, torch.full((5,), 0.2, dtype=torch.float64))


def test_a_head_with_a_near_iid_site_keeps_the_federations_prior_and_a_skewed_site_shifts_it() -> None:
    from pfeddc.client.model.head import ClassHead

    classes, width = 8, 6
    g = torch.Generator().manual_seed(0)
    shared = {"counts": torch.full((classes,), 1 / classes), "sums": torch.randn(classes, width, generator=g) / 8,
              "moment": torch.eye(width) / 2, "calibration": torch.zeros(2),
              "residual": torch.zeros(classes, width + 1)}
    head = ClassHead(classes, width, shared=True, personal=True)
    head.load_statistics({f"head.{k}.global": v for k, v in shared.items()})
    head.site_counts.copy_(torch.tensor([21.0, 19, 20, 22, 18, 20, 21, 19]))  # 160 images, noise-level spread
    assert float(head.prior_shift().abs().max()) == 0.0
    head.site_counts.copy_(torch.tensor([150.0, 10, 0, 0, 0, 0, 0, 0]))
    shift = head.prior_shift()
    assert float(shift[0]) > 1.5 and float(shift[2:].max()) < -1.0
