from __future__ import annotations

import numpy as np
import pytest

from pfeddc.common.secagg import field
from pfeddc.common.secagg.field import FieldParams


def test_field_params_levels_leave_max_sites_sums_inside_half_the_modulus() -> None:
    p = FieldParams(clip_range=10.0, max_sites=100)
    assert p.max_sites * p.levels < p.modulus // 2
    assert p.clip_range * p.scale <= p.levels
    assert field.sum_error_bound(p, 100) == pytest.approx(100 * 10.0 / p.levels)


@pytest.mark.parametrize("bad", [{"modulus_bits": 8}, {"modulus_bits": 63}, {"clip_range": 0.0},
                                 {"clip_range": float("inf")}, {"max_sites": 0},
                                 {"modulus_bits": 16, "max_sites": 10**6}])
def test_field_params_refuse_unusable_settings(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        FieldParams(**bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("n", [1, 3, 10])
def test_field_dequantised_sum_is_within_the_bound_of_the_float_sum(n: int) -> None:
    p = FieldParams(clip_range=2.0, max_sites=10)
    rng = np.random.default_rng(n)
    xs = [rng.uniform(-2.0, 2.0, 5000) for _ in range(n)]
    total = np.zeros(5000, dtype=np.uint64)
    for x in xs:
        total = field.add(total, field.quantise(x, p, rng), p)
    err = np.abs(field.dequantise_sum(total, p, n) - np.sum(xs, axis=0))
    assert err.max() <= field.sum_error_bound(p, n)
    assert err.max() > 0  # it is a rounding, not an identity


def test_field_extremes_at_max_sites_do_not_wrap() -> None:
    p = FieldParams(clip_range=1.0, max_sites=7, modulus_bits=16)
    rng = np.random.default_rng(0)
    for value in (1.0, -1.0, 5.0, -5.0):  # beyond the range: clipped to it
        total = np.zeros(3, dtype=np.uint64)
        for _ in range(7):
            total = field.add(total, field.quantise(np.full(3, value), p, rng), p)
        assert np.allclose(field.dequantise_sum(total, p, 7), 7 * np.clip(value, -1, 1))


def test_field_stochastic_rounding_is_unbiased() -> None:
    p = FieldParams(clip_range=1.0, max_sites=1, modulus_bits=16)
    x = np.full(200_000, 0.3 / p.scale)  # a third of a step
    q = field.dequantise_sum(field.quantise(x, p, np.random.default_rng(1)), p, 1)
    assert set(np.unique(q * p.scale).round().tolist()) == {0.0, 1.0}
    assert abs(q.mean() * p.scale - 0.3) < 0.01


def test_field_refuses_non_finite_values_and_too_many_sites() -> None:
    p = FieldParams(max_sites=3)
    with pytest.raises(ValueError, match="NaN"):
        field.quantise(np.array([0.0, np.nan]), p, np.random.default_rng(0))
    with pytest.raises(ValueError, match="wrap-around"):
        field.dequantise_sum(np.zeros(2, dtype=np.uint64), p, 4)


def test_field_bytes_round_trip_and_refuse_bad_lengths_or_elements() -> None:
    for bits in (32, 40):
        p = FieldParams(modulus_bits=bits)
        q = field.quantise(np.linspace(-1, 1, 11), p, np.random.default_rng(0))
        data = field.to_bytes(q, p)
        assert len(data) == 11 * p.element_bytes and np.array_equal(field.from_bytes(data, p, 11), q)
        with pytest.raises(ValueError, match="expected 12"):
            field.from_bytes(data, p, 12)
    p = FieldParams(modulus_bits=40)
    with pytest.raises(ValueError, match="modulus"):
        field.from_bytes(np.array([2**41], dtype="<u8").tobytes(), p, 1)
