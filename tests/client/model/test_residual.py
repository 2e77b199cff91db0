"""The shared residual: one whitened gradient step per site and round, whose federation mean is the pooled step."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pfeddc.client.model.head import SHRINKAGE, site_statistics
from pfeddc.client.model.residual import residual_logits, residual_step, whitened, whitening


def sites(seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Three sites of unit features in a narrow cone, with different sizes and label mixes, and logits to correct."""
    g = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(4, 12, generator=g), dim=-1)
    out = []
    for n, prior in ((40, [0.7, 0.1, 0.1, 0.1]), (90, [0.05, 0.05, 0.45, 0.45]), (25, [0.25] * 4)):
        y = torch.multinomial(torch.tensor(prior), n, replacement=True, generator=g)
        x = F.normalize(centres[y] + 0.4 * torch.randn(n, 12, generator=g), dim=-1)
        out.append((x, y, torch.randn(n, 4, generator=g)))
    return out


def pooled_whitening(data: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    stats = site_statistics(torch.cat([x for x, _, _ in data]), torch.cat([y for _, y, _ in data]), 4)
    return whitening(stats["counts"], stats["sums"], stats["moment"], SHRINKAGE)


def test_the_federations_mean_of_the_sites_steps_is_the_step_on_the_pooled_images() -> None:
    data = sites()
    whiten = pooled_whitening(data)
    received = 0.1 * torch.randn(4, 13, generator=torch.Generator().manual_seed(3))
    steps = [residual_step(x, y, fixed, received, whiten) for x, y, fixed in data]
    counts = torch.tensor([float(len(y)) for _, y, _ in data])
    fedavg = sum(c * s for c, s in zip(counts, steps, strict=True)) / counts.sum()
    pooled = residual_step(torch.cat([x for x, _, _ in data]), torch.cat([y for _, y, _ in data]),
                           torch.cat([f for _, _, f in data]), received, whiten)
    torch.testing.assert_close(fedavg, pooled, rtol=1e-5, atol=1e-6)
    assert float((pooled - received).norm()) > 0.01  # a real step, not a no-op


def test_whitened_features_have_the_identity_as_second_moment_up_to_the_shrinkage() -> None:
    data = sites()
    z = whitened(torch.cat([x for x, _, _ in data]), pooled_whitening(data)).double()
    second = z.t() @ z / len(z)
    values = torch.linalg.eigvalsh(second)
    assert float(values.max()) < 1.03 and float(values.min()) > 0.0  # within 1 / (1 - shrinkage) above 1
    assert float(values.median()) > 0.5


def test_repeated_steps_lower_the_pooled_cross_entropy() -> None:
    data = sites(1)
    whiten = pooled_whitening(data)
    x, y, fixed = (torch.cat([d[i] for d in data]) for i in range(3))
    residual = torch.zeros(4, 13)
    losses = []
    for _ in range(6):
        losses.append(float(F.cross_entropy(fixed + residual_logits(x, residual, whiten), y)))
        stepped = [float(len(d[1])) * residual_step(*d, residual, whiten) for d in data]
        residual = torch.stack(stepped).sum(0) / float(len(y))
    assert all(b < a for a, b in zip(losses, losses[1:], strict=False)) and losses[-1] < 0.8 * losses[0]
