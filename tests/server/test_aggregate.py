import numpy as np
import pytest

from pfeddc.server.pipeline.aggregate import fedavg


def test_fedavg_weights_by_example_count() -> None:
    a = {"t": np.array([0.0, 2.0], dtype=np.float32)}
    b = {"t": np.array([4.0, 6.0], dtype=np.float32)}
    out = fedavg([(a, 1), (b, 3)])
    np.testing.assert_allclose(out["t"], [3.0, 5.0])
    assert out["t"].dtype == np.float32


def test_fedavg_rejects_mismatched_names_and_bad_weights() -> None:
    a = {"t": np.zeros(2, np.float32)}
    with pytest.raises(ValueError, match="disagree on tensor names"):
        fedavg([(a, 1), ({"u": np.zeros(2, np.float32)}, 1)])
    with pytest.raises(ValueError, match="positive"):
        fedavg([(a, 0)])
    with pytest.raises(ValueError, match="at least one"):
        fedavg([])


# ----- robust aggregators: 1 of 5 and 2 of 10 hostile clients
from pfeddc.server.pipeline.aggregate import AggregatorKind, make_aggregator, median, trimmed_mean  # noqa: E402
from pfeddc.server.round.config import FederationConfig  # noqa: E402

Updates = list[dict[str, np.ndarray]]


def honest_and_hostile(n: int, hostile: int, seed: int = 0) -> tuple[Updates, Updates]:
    rng = np.random.default_rng(seed)
    honest = [{"t": (1.0 + 0.01 * rng.standard_normal((4, 8))).astype(np.float32)} for _ in range(n - hostile)]
    hostile_updates = [{"t": np.full((4, 8), 1e4 * (i + 1), np.float32)} for i in range(hostile)]
    return honest, hostile_updates


@pytest.mark.parametrize(("n", "hostile"), [(5, 1), (10, 2)])
@pytest.mark.parametrize("kind", [AggregatorKind.MEDIAN, AggregatorKind.TRIMMED_MEAN])
def test_robust_aggregators_stay_within_the_honest_range_per_coordinate(n: int, hostile: int,
                                                                       kind: AggregatorKind) -> None:
    honest, bad = honest_and_hostile(n, hostile)
    aggregate = make_aggregator(kind, trim=0.2)  # floor(0.2 * n) = the number of hostile clients
    # hostile clients also claim a huge weight: the robust aggregators ignore weights
    out = aggregate([(u, 1.0) for u in honest] + [(u, 1e12) for u in bad])["t"]
    stacked = np.stack([u["t"] for u in honest])
    # the stated bound: every coordinate within [min, max] of the honest values, so the distance to the honest
    # mean is at most the honest spread (here about 0.03), whatever the hostile values are
    assert np.all(out >= stacked.min(axis=0) - 1e-6) and np.all(out <= stacked.max(axis=0) + 1e-6)
    honest_mean = stacked.mean(axis=0)
    spread = np.abs(stacked - honest_mean).max()
    assert np.abs(out - honest_mean).max() <= spread
    assert np.abs(fedavg([(u, 1.0) for u in honest] + [(u, 1.0) for u in bad])["t"] - honest_mean).max() > 100


def test_trimmed_mean_drops_the_extremes_and_refuses_a_trim_of_half() -> None:
    values = [{"t": np.array([v], np.float32)} for v in (0.0, 1.0, 2.0, 3.0, 100.0)]
    np.testing.assert_allclose(trimmed_mean([(u, 1.0) for u in values], trim=0.2)["t"], [2.0])
    np.testing.assert_allclose(median([(u, 1.0) for u in values])["t"], [2.0])
    with pytest.raises(ValueError, match="trim"):
        FederationConfig(rounds=1, aggregator=AggregatorKind.TRIMMED_MEAN, trim=0.5)


def test_aggregators_share_one_signature() -> None:
    update = {"t": np.ones(3, np.float32)}
    for kind in AggregatorKind:
        out = make_aggregator(kind)([(update, 1.0), (update, 2.0)])
        np.testing.assert_allclose(out["t"], 1.0)
        assert out["t"].dtype == np.float32


def test_geometric_median_stays_near_the_honest_updates_however_far_one_hostile_is() -> None:
    rng = np.random.default_rng(0)
    honest = [({"a": rng.normal(1.0, 0.1, (3, 4)).astype(np.float32), "b": rng.normal(size=2).astype(np.float32)},
               1.0) for _ in range(4)]
    for far in (1e2, 1e6):
        hostile = ({"a": np.full((3, 4), far, np.float32), "b": np.full(2, -far, np.float32)}, 1e9)
        out = make_aggregator(AggregatorKind.GEOMETRIC_MEDIAN)([*honest, hostile])
        assert out["a"].dtype == np.float32 and out["a"].shape == (3, 4)
        assert np.abs(out["a"] - 1.0).max() < 1.0  # fedavg would sit near `far`
