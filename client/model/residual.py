"""The class head's shared residual: rows and biases added to the discriminant's logits, learned by the federation
as exact gradient steps on the pooled images.

The discriminant (head.py) is generative: short of a discriminative classifier on the pooled images once sites hold
more than a few images per class (Twemoji-64, 16 per class per site: 74.0% against 79.0% for a logistic regression
on the pooled data). The residual closes that gap with the pooled logistic regression's own gradient, started where
the discriminant already is. It acts on whitened features, z = A^-1/2 [x, 1], A the second moment of [x, 1] under
the federation's statistics (shrunk like the discriminant's covariance), so plain gradient steps on it are
preconditioned ones on [x, 1] (A^-1 is the Gauss-Newton curvature of a linear model up to the softmax's factor):

    logits += R z        R <- R - RESIDUAL_STEP x g_site,   g_site = mean over the site's images of (p - y) z^T

with the site's label prior in place of the federation's in p (logit adjustment: rows learn what separates classes,
not label mixes). Every site of a round holds the same statistics, so the same z, and the step is linear in g_site:
the federation's mean of the sites' steps, weighted by their example counts, is exactly the step on all sites'
images pooled. One step per round and nothing else: no local epochs, so no drift between sites whatever their label
mix (the FedAvg-of-local-steps residual this replaces lost 10 points on a strongly skewed setting, docs/method.md).
In whitened units an honest step is small (norm ~1.5 per site where the same step on raw features is ~30), so the
coordinator's whole-update clip and per-row bounds read it on the scale of its effect on the logits.
"""

from __future__ import annotations

import torch

from ...common.spec import RESIDUAL_RANGE

RESIDUAL_STEP = 8.0  # the step per round (measured: docs/method.md)
# Sites step the residual in the federation's rounds up to this one (the first has no step: 7 steps), then it stays:
# the number of steps is its regularizer. More steps fit the pooled images ever closer: on Fashion-MNIST (20 rounds)
# steps in every round cost the honest sites 0.6-2.6 points against no residual; steps to round 8 cost nothing
# beyond the runs' spread (-0.2 over 8 seeds; docs/method.md).
RESIDUAL_ROUNDS = 8


def whitening(counts: torch.Tensor, sums: torch.Tensor, moment: torch.Tensor, shrinkage: float) -> torch.Tensor:
    """A^-1/2 [P + 1, P + 1] (symmetric): A the second moment of [x, 1] under the statistics (means over images, any
    common scale), made positive semi-definite and shrunk toward a multiple of the identity by `shrinkage` (the
    discriminant's)."""
    width = moment.shape[0]
    second = torch.eye(width + 1, dtype=torch.float64, device=moment.device)
    total = float(counts.double().clamp(min=0).sum())
    if total > 0:
        second[:width, :width] = moment.double() / total
        second[:width, width] = second[width, :width] = sums.double().sum(0) / total
    values, vectors = torch.linalg.eigh(0.5 * (second + second.t()))
    values = values.clamp(min=0)
    values = (1 - shrinkage) * values + shrinkage * float(values.mean()) + 1e-6
    return ((vectors * values.rsqrt()) @ vectors.t()).float()


def whitened(features: torch.Tensor, whiten: torch.Tensor) -> torch.Tensor:
    """z = A^-1/2 [x, 1] for features [n, P]: [n, P + 1]."""
    ones = torch.ones(len(features), 1, dtype=whiten.dtype, device=features.device)
    return torch.cat([features.to(whiten.dtype), ones], 1) @ whiten


def residual_logits(features: torch.Tensor, residual: torch.Tensor, whiten: torch.Tensor) -> torch.Tensor:
    """The residual's term of the logits [n, C]: residual [C, P + 1] on the whitened features."""
    return whitened(features, whiten) @ residual.t()


def residual_step(features: torch.Tensor, labels: torch.Tensor, fixed: torch.Tensor, residual: torch.Tensor,
                  whiten: torch.Tensor) -> torch.Tensor:
    """The residual after this site's step: features [n, P], labels [n], the logits without the residual [n, C],
    the received residual [C, P + 1] and the round's whitening."""
    with torch.no_grad():
        z = whitened(features, whiten)
        error = (fixed + z @ residual.t()).softmax(-1)
        error[torch.arange(len(labels), device=labels.device), labels] -= 1
        gradient = error.t() @ z / len(labels)  # [C, P + 1]
        return (residual - RESIDUAL_STEP * gradient).clamp(*RESIDUAL_RANGE)
