from __future__ import annotations

import numpy as np
import pytest

from pfeddc.common.secagg import noise


def test_noise_t_shares_sum_to_the_central_noise_and_more_shares_to_more() -> None:
    sigma, clip, t = 1.2, 0.5, 4
    rng = np.random.default_rng(0)
    zero, std = np.zeros(100_000), noise.share_std(sigma, clip, t)
    total = np.sum([noise.add_noise_share(zero, std, clip, rng) for _ in range(t)], axis=0)
    assert total.std() == pytest.approx(sigma * clip, rel=0.01)
    more = np.sum([noise.add_noise_share(zero, std, clip, rng) for _ in range(2 * t)], axis=0)
    assert more.std() == pytest.approx(sigma * clip * np.sqrt(2), rel=0.01)


def test_noise_clip_range_leaves_room_for_the_change_and_its_noise() -> None:
    assert noise.clip_range_for(1.0, 2.0, 4) == pytest.approx(2.0 + 6.0 * 1.0)


def test_noise_refuses_an_unclipped_change_or_no_noise() -> None:
    with pytest.raises(ValueError, match="clip it"):
        noise.add_noise_share(np.full(4, 1.0), 1.0, 1.0)
    with pytest.raises(ValueError, match="noise_multiplier > 0"):
        noise.share_std(0.0, 1.0, 3)


def test_noise_unseeded_shares_differ() -> None:
    a, b = (noise.add_noise_share(np.zeros(8), 1.0, 1.0) for _ in range(2))
    assert not np.array_equal(a, b)
