from __future__ import annotations

import math

import numpy as np
import pytest

from pfeddc.client.secagg_site import SecAggSite
from pfeddc.common.secagg import field, masking
from pfeddc.common.secagg.field import FieldParams
from pfeddc.common.secagg.keys import RoundId
from pfeddc.common.secagg.protocol import ChecksPassed, RoundConfig
from pfeddc.server.round.secagg_coordinator import SecAggCoordinator

P = FieldParams()
CHI2_255_P999 = 330.52  # the 0.999 quantile of chi-square with 255 degrees of freedom
KS_P999 = 1.949  # sqrt(n) * D exceeds this with probability 0.001 under the null


def looks_uniform(elements: np.ndarray, params: FieldParams) -> bool:
    """Chi-square on the top and the bottom 8 bits, and Kolmogorov-Smirnov on the values, all at p = 0.001."""
    e = elements.astype(np.uint64)
    for byte in (e >> np.uint64(params.modulus_bits - 8), e & np.uint64(255)):
        counts = np.bincount(byte.astype(np.int64), minlength=256)
        expected = e.size / 256
        if ((counts - expected) ** 2 / expected).sum() > CHI2_255_P999:
            return False
    u = np.sort(e.astype(np.float64) / params.modulus)
    n = u.size
    d = max((np.arange(1, n + 1) / n - u).max(), (u - np.arange(n) / n).max())
    return math.sqrt(n) * d < KS_P999


def test_masking_expand_is_deterministic_and_in_the_field() -> None:
    seed = bytes(range(32))
    a = masking.expand(seed, 1000, P)
    assert np.array_equal(a, masking.expand(seed, 1000, P)) and int(a.max()) < P.modulus
    assert not np.array_equal(a, masking.expand(bytes(31) + b"\1", 1000, P))
    assert np.array_equal(masking.expand(seed, 10, P), a[:10])
    with pytest.raises(ValueError, match="32 bytes"):
        masking.expand(b"short", 10, P)


@pytest.mark.parametrize("bits", [32, 40])
def test_masking_a_masked_input_is_indistinguishable_from_uniform(bits: int) -> None:
    p = FieldParams(modulus_bits=bits)
    q = field.quantise(np.full(100_000, 0.5), p, np.random.default_rng(0))  # as far from uniform as it gets
    assert not looks_uniform(q, p)  # the test can tell
    y = masking.mask(q, "b", bytes([7]) * 32, {"a": bytes([1]) * 32, "c": bytes([2]) * 32}, p)
    assert looks_uniform(y, p)


def test_masking_what_a_site_sends_in_a_round_is_indistinguishable_from_uniform() -> None:
    """The coordinator's whole view of one site's update: a zero vector, masked, looks like noise."""
    ids = ("a", "b", "c")
    cfg = RoundConfig(RoundId("fed", 1), ids, 2, 100_000)
    sites, coord = {u: SecAggSite(u, cfg) for u in ids}, SecAggCoordinator(cfg)
    for u in ids:
        coord.receive_advertise(sites[u].advertise())
    announced = coord.announce()
    for u in ids:
        coord.receive_shares(sites[u].share_keys(announced))
    delivered = coord.deliver()
    sites["a"].check_shares(delivered["a"])
    assert looks_uniform(sites["a"].masked_input(ChecksPassed(ids), np.zeros(cfg.length)).masked, cfg.field)


def test_masking_pairwise_masks_cancel_and_unmask_removes_the_rest() -> None:
    rng = np.random.default_rng(0)
    ids = ["a", "b", "c", "d"]
    pair = {frozenset(p): bytes([i]) * 32 for i, p in enumerate([("a", "b"), ("a", "c"), ("a", "d"), ("b", "c"),
                                                                  ("b", "d"), ("c", "d")])}
    own = {u: bytes([100 + i]) * 32 for i, u in enumerate(ids)}
    qs = {u: field.quantise(rng.uniform(-1, 1, 50), P, rng) for u in ids}
    ys = {u: masking.mask(qs[u], u, own[u], {v: pair[frozenset((u, v))] for v in ids if v != u}, P) for u in ids}
    survivors = ["a", "b", "d"]  # c shared keys, masked with everyone, then dropped
    total = np.zeros(50, dtype=np.uint64)
    for u in survivors:
        total = field.add(total, ys[u], P)
    dangling = [(v, "c", pair[frozenset((v, "c"))]) for v in survivors]
    out = masking.unmask(total, [own[u] for u in survivors], dangling, P)
    expected = np.zeros(50, dtype=np.uint64)
    for u in survivors:
        expected = field.add(expected, qs[u], P)
    assert np.array_equal(out, expected)
    with pytest.raises(ValueError, match="itself"):
        masking.sign("a", "a")
