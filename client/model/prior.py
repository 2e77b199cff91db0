"""A site's label prior: its own label counts shrunk toward the federation's label distribution, by as much as its
counts say sites differ (empirical Bayes).

Under label shift, Bayes' rule replaces the federation's class prior p by the site's own. A site's counts m (n
images) estimate it with multinomial noise, so the prior used is the posterior mean under a Dirichlet around the
federation's distribution, (m + A p) / (n + A). How far sites' priors spread around p (the concentration A) is
unknown: nearly equal label mixes want A large (the counts' deviations are noise: a site with 16 images of each of 64
classes that used its raw counts lost 2 points, docs/method.md), strongly skewed ones want A small. The
site estimates A from its own counts by the method of moments: under a Dirichlet-multinomial, Pearson's
X^2 = sum_c (m_c - n p_c)^2 / (n p_c) has expectation (C - 1)(n + A) / (1 + A), so with D = X^2 / (C - 1),
A = (n - D) / (D - 1); D <= 1 (no more spread than sampling noise) means the federation's prior as it is. A is
never below `MIN_PSEUDOCOUNT` per class, the fixed smoothing shipped before (measured on strongly skewed sites).
"""

from __future__ import annotations

import math

import torch

MIN_PSEUDOCOUNT = 1.0  # pseudo-images per class at least: the strongest pull of a site's prior to its own counts


def concentration(mine: torch.Tensor, federation: torch.Tensor) -> float:
    """The Dirichlet concentration A (in images) of a site's label distribution around the federation's, from the
    site's counts `mine` [C] and the federation's distribution `federation` [C] (positive, sums to 1); inf when
    the counts spread no more than sampling noise would."""
    classes = mine.numel()
    n = float(mine.sum())
    floor = MIN_PSEUDOCOUNT * classes
    if classes < 2 or n <= 1:
        return floor
    expected = n * federation.double()
    dispersion = float(((mine.double() - expected).square() / expected).sum()) / (classes - 1)
    if dispersion <= 1:
        return math.inf
    return max((n - dispersion) / (dispersion - 1), floor)


def site_prior(mine: torch.Tensor, federation: torch.Tensor) -> torch.Tensor:
    """The site's prior [C]: its counts smoothed toward the federation's distribution by `concentration`."""
    pseudo = concentration(mine, federation)
    if math.isinf(pseudo):
        return federation.double().clone()
    return (mine.double() + pseudo * federation.double()) / (float(mine.sum()) + pseudo)
