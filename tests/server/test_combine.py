"""From a round's updates to the next global: clipping bounds a site's influence, DP adds calibrated noise."""

from __future__ import annotations

import numpy as np
import pytest

from pfeddc.server.pipeline.aggregate import fedavg
from pfeddc.server.pipeline.combine import bound, start
from pfeddc.server.pipeline.privacy import DpSettings
from pfeddc.server.pipeline.stages import NonFiniteGlobal, Rules, combine

GLOBAL = {"a": np.zeros((2, 3), np.float32), "b": np.ones((4,), np.float32)}


def shifted(value: float) -> dict[str, np.ndarray]:
    return {k: v + value for k, v in GLOBAL.items()}


def test_bound_scales_the_whole_update_to_the_clip_norm() -> None:
    step = bound(start(GLOBAL, {"far": (shifted(3.0), 1.0), "near": (shifted(0.01), 1.0)}),
                 Rules(fedavg, clip_norm=1.0))
    assert step.largest_change == pytest.approx(3.0 * np.sqrt(10)) and step.clipped == ("far",)
    total = np.sqrt(sum(float(np.sum(d * d)) for d in step.changes["far"].values()))
    assert total == pytest.approx(1.0)
    np.testing.assert_allclose(step.changes["near"]["a"], 0.01, rtol=1e-5)


def test_clipping_bounds_a_hostile_site_by_its_weight_share() -> None:
    honest = {f"h{i}": (shifted(0.01), 10.0) for i in range(4)}
    hostile = {"evil": (shifted(1e3), 10.0)}
    out = combine(GLOBAL, {**honest, **hostile}, Rules(fedavg, clip_norm=1.0))
    assert out.clipped == ("evil",)
    shift = np.sqrt(sum(float(np.sum((out.tensors[k].astype(np.float64) - GLOBAL[k]) ** 2)) for k in GLOBAL))
    # at most (w / W) * clip from the hostile site, plus the honest sites' own (unclipped) change
    honest_change = 0.01 * np.sqrt(10)
    assert shift <= 10 / 50 * 1.0 + honest_change + 1e-6
    unclipped = combine(GLOBAL, {**honest, **hostile}, Rules(fedavg, clip_norm=None))
    assert float(np.abs(unclipped.tensors["a"]).max()) > 100


def test_non_finite_aggregate_is_refused() -> None:
    def broken(_updates: object) -> dict[str, np.ndarray]:
        return {k: np.full(v.shape, np.inf, np.float32) for k, v in GLOBAL.items()}

    with pytest.raises(NonFiniteGlobal, match="NaN or Inf"):
        combine(GLOBAL, {"a": (shifted(1.0), 1.0)}, Rules(broken, clip_norm=None))


def test_dp_mean_has_the_calibrated_noise_over_the_sampled_count() -> None:
    dp = DpSettings(noise_multiplier=2.0, clip=0.5)
    updates = {f"c{i}": (shifted(10.0), 1.0) for i in range(4)}  # every change clipped to 0.5
    out = combine(GLOBAL, updates, Rules(fedavg, clip_norm=None, dp=dp, sampled=5, rng=np.random.default_rng(0)))
    assert len(out.clipped) == 4
    noise = np.concatenate([(out.tensors[k].astype(np.float64) - GLOBAL[k]).ravel() for k in GLOBAL])
    signal = 4 * 0.5 / np.sqrt(10) / 5  # the clipped changes summed, over the 5 sampled clients
    # each coordinate: signal + N(0, (2.0 * 0.5 / 5)^2); 10 coordinates, so the check is loose but real
    assert abs(noise.mean() - signal) < 3 * 0.2 / np.sqrt(10)
    assert 0.05 < noise.std() < 0.5


def test_dp_settings_refuse_nonsense() -> None:
    with pytest.raises(ValueError, match="noise-multiplier"):
        DpSettings(0.0, 1.0)
    with pytest.raises(ValueError, match="dp-clip"):
        DpSettings(1.0, 0.0)
