"""The class head's statistics as a hostile site would send them: what an honest site can send is accepted,
what none can is refused by name, and one site's say on a class is bounded (server/pipeline/statistics.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tests_support import StartCoordinator

from pfeddc.client.connection import Backoff, Connection
from pfeddc.client.model.head import site_statistics
from pfeddc.common.messages import Code, Metrics, Refused
from pfeddc.common.spec import head_key
from pfeddc.server.pipeline import statistics
from pfeddc.server.pipeline.aggregate import fedavg
from pfeddc.server.pipeline.combine import moment_moved
from pfeddc.server.pipeline.stages import Rules, combine, combine_secure

C, P = 10, 32
COUNTS, SUMS, MOMENT, CALIBRATION = (head_key(k) for k in ("counts", "sums", "moment", "calibration"))


def prototypes(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    protos = rng.normal(size=(C, P))
    return protos / np.linalg.norm(protos, axis=1, keepdims=True)


def honest_site(rng: np.random.Generator, n: int, prior: np.ndarray, width: int = P, classes: int = C,
                ) -> dict[str, np.ndarray]:
    """A site's statistics as the client computes them, from features clustered around each class's prototype."""
    protos = prototypes()[:classes, :width] if width == P else rng.normal(size=(classes, width))
    y = rng.choice(classes, size=n, p=prior / prior.sum())
    x = protos[y] * 3 + rng.normal(size=(n, width))
    stats = site_statistics(torch.tensor(x, dtype=torch.float32), torch.tensor(y), classes)
    return {head_key(k): v.numpy() for k, v in stats.items()} | {CALIBRATION: np.array([0.5, 0.3], np.float32)}


def test_what_honest_sites_send_and_their_weighted_means_are_accepted() -> None:
    rng = np.random.default_rng(1)
    sites = [honest_site(rng, n, rng.dirichlet(np.full(C, 0.5))) for n in (3, 40, 200)]
    for stats in sites:
        assert statistics.violation(stats) is None
    assert statistics.violation(fedavg([(s, w) for s, w in zip(sites, (3.0, 40.0, 200.0), strict=True)])) is None
    assert statistics.violation({k: v * 0.25 for k, v in sites[0].items() if k != CALIBRATION}) is None


def _tampered(kind: str) -> dict[str, np.ndarray]:
    stats = honest_site(np.random.default_rng(2), 50, np.ones(C))
    if kind == "negative count":
        stats[COUNTS] = stats[COUNTS].copy()
        stats[COUNTS][0] = -0.05
    elif kind == "counts above 1":
        stats[COUNTS] = stats[COUNTS] * 1.5
    elif kind == "a row without its count":  # issue 29's amplification: a full row behind a tiny share
        stats[COUNTS] = stats[COUNTS].copy()
        stats[SUMS] = stats[SUMS].copy()
        stats[COUNTS][3] = 0.001
        stats[COUNTS][4] += stats[COUNTS][3] - 0.001
        stats[SUMS][3] = prototypes()[3]
    elif kind == "asymmetric moment":
        stats[MOMENT] = stats[MOMENT].copy()
        stats[MOMENT][0, 1] += 0.05
    elif kind == "moment trace":
        stats[MOMENT] = stats[MOMENT] * 2
    elif kind == "not positive semi-definite":
        stats[MOMENT] = stats[MOMENT].copy()
        stats[MOMENT][0, 1] = stats[MOMENT][1, 0] = 0.9
    elif kind == "calibration":
        stats[CALIBRATION] = np.array([0.0, 3.0], np.float32)
    return stats


@pytest.mark.parametrize(("kind", "named"), [
    ("negative count", "negative"), ("counts above 1", "above 1"), ("a row without its count", "above its count"),
    ("asymmetric moment", "not symmetric"), ("moment trace", "trace"),
    ("not positive semi-definite", "not positive semi-definite"), ("calibration", "text weight"),
])
def test_statistics_no_honest_site_can_send_are_refused_by_name(kind: str, named: str) -> None:
    stats = _tampered(kind)
    with pytest.raises(Refused) as info:
        statistics.check(stats)
    assert info.value.code == Code.INVALID_ARGUMENT and named in info.value.message


def test_the_coordinator_refuses_a_row_without_its_count_and_keeps_its_global(coordinator: StartCoordinator) -> None:
    """Over gRPC, a site with valid credentials: the tampered update is refused, the honest one after it counts."""
    server = coordinator("--min-clients", "1", "--classes", ",".join(f"class{i}" for i in range(C)))
    spec = server.federation.spec
    width = dict((s.name, s.shape) for s in spec)[SUMS][1]
    conn = Connection(f"127.0.0.1:{server.port}", "site-a", backoff=Backoff(0.05, 0.1, 2))
    conn.join(50, spec)
    rng = np.random.default_rng(3)
    honest = honest_site(rng, 50, np.ones(C), width=width)
    honest |= {s.name: np.zeros(s.shape, np.float32) for s in spec if s.name not in honest}  # the residual, unmoved
    hostile = {**honest, COUNTS: honest[COUNTS].copy(), SUMS: honest[SUMS].copy()}
    hostile[COUNTS][0], hostile[COUNTS][1] = 0.0, hostile[COUNTS][1] + hostile[COUNTS][0]
    hostile[SUMS][0] = rng.normal(size=width).astype(np.float32) / np.sqrt(width)
    before = {k: v.copy() for k, v in server.federation.global_tensors.items()}
    with pytest.raises(Refused) as info:
        conn.submit(1, hostile, 50, Metrics())
    assert info.value.code == Code.INVALID_ARGUMENT and "class 0's sum" in info.value.message
    assert all(np.array_equal(before[k], v) for k, v in server.federation.global_tensors.items())
    conn.submit(1, honest, 50, Metrics())
    committed = server.federation.global_tensors
    held = honest[COUNTS] > 0  # a sole holder's class means are its own (its weight on a class may be capped)
    np.testing.assert_allclose((committed[SUMS] / committed[COUNTS][:, None])[held],
                               (honest[SUMS] / honest[COUNTS][:, None])[held], atol=1e-5)


def _influence(sites: dict[str, dict[str, np.ndarray]], bounded: bool, cls: int) -> dict[str, float]:
    """How far each site moves class `cls`'s pooled mean: the mean with every site against the mean without it."""
    zero = {k: np.zeros_like(v) for k, v in next(iter(sites.values())).items()}

    def pooled(names: list[str]) -> np.ndarray:
        if bounded:
            tensors = combine(zero, {n: (sites[n], 60.0) for n in names}, Rules(fedavg, 10.0, 2.0)).tensors
        else:
            tensors = fedavg([(sites[n], 60.0) for n in names])
        return tensors[SUMS][cls] / tensors[COUNTS][cls]

    everyone = pooled(list(sites))
    return {n: float(np.linalg.norm(everyone - pooled([m for m in sites if m != n]))) for n in sites}


def _hostile_claim(cls: int) -> dict[str, np.ndarray]:
    """Every image declared of class `cls`, its mean pointing away from the class: valid statistics."""
    stats = {COUNTS: np.eye(C, dtype=np.float32)[cls], SUMS: np.zeros((C, P), np.float32),
             MOMENT: np.eye(P, dtype=np.float32) / P, CALIBRATION: np.zeros(2, np.float32)}
    stats[SUMS][cls] = -prototypes()[cls]
    assert statistics.violation(stats) is None
    return stats


@pytest.mark.parametrize("seed", range(6))
def test_one_site_claiming_a_class_moves_it_about_as_much_as_an_honest_site(seed: int) -> None:
    """5 equal sites, the hostile one declaring all its images of class 0 with a mean pointing away: unbounded (as
    in secure mode, where no site's statistics are seen) it moves the class's mean 7.9-10.0x the largest honest
    site's move; bounded, 0.8-1.5x."""
    rng = np.random.default_rng(seed)
    sites = {f"honest{i}": honest_site(rng, 60, np.ones(C)) for i in range(4)} | {"hostile": _hostile_claim(0)}
    unbounded = _influence(sites, bounded=False, cls=0)
    bounded = _influence(sites, bounded=True, cls=0)
    honest_max = max(v for n, v in bounded.items() if n != "hostile")
    assert unbounded["hostile"] > 5 * max(v for n, v in unbounded.items() if n != "hostile")
    assert bounded["hostile"] <= 1.5 * honest_max  # measured 1.01, 1.03, 1.07, 1.11, 0.84, 1.45x (was up to 3.0x)


def test_a_capped_site_leaves_statistics_an_honest_site_could_send() -> None:
    """The weight cap takes images off a site's class: off its second moment too, so the committed global keeps
    every relation (a site that sends it back is not refused) and the capped site's class mean is unchanged."""
    rng = np.random.default_rng(5)
    sites = {f"honest{i}": (honest_site(rng, 60, np.ones(C)), 60.0) for i in range(4)}
    sites["hostile"] = (_hostile_claim(0), 1000.0)
    zero = {k: np.zeros_like(v) for k, v in sites["honest0"][0].items()}
    step = combine(zero, sites, Rules(fedavg, 10.0, 2.0))
    assert step.class_capped == ("hostile",)
    assert statistics.violation(step.tensors) is None


def test_a_holder_that_sends_the_center_back_freezes_no_class() -> None:
    """The rules' floor: beside a site that sends the global's class means back on every class (distance and
    pull 0), an honest holder's means are kept as they are, not pulled onto the centers (the classes would never
    move again)."""
    rng = np.random.default_rng(6)
    honest = honest_site(rng, 200, np.ones(C))
    base = (np.full(C, 1.0 / C), prototypes() / C)  # the global: every class's mean its prototype
    stats = {"honest": (honest[COUNTS], honest[SUMS]), "null": base}
    bounded = statistics.bound_classes(stats, {"honest": 200.0, "null": 200.0}, base)
    np.testing.assert_allclose(bounded.statistics["honest"][1], honest[SUMS], atol=1e-9)
    assert bounded.clipped == () and bounded.capped == ()


def test_beside_one_honest_holder_a_site_pulls_at_most_twice_as_hard() -> None:
    """Two holders of a class (an honest site and the attacker): the rules compare each site with the other
    holder, never with itself, so claiming 10x the images with a mean pointing away buys at most twice the
    honest site's pull on the class's mean (before: the median of two is their mean, and no rule bound)."""
    rng = np.random.default_rng(7)
    honest = honest_site(rng, 600, np.ones(C))
    last = honest_site(rng, 600, np.ones(C))  # the global: last round's statistics, another draw of the data
    base = (last[COUNTS].astype(np.float64), last[SUMS].astype(np.float64))
    hostile = _hostile_claim(0)
    stats = {"honest": (honest[COUNTS], honest[SUMS]), "hostile": (hostile[COUNTS], hostile[SUMS])}
    weights = {"honest": 600.0, "hostile": 6000.0}
    bounded = statistics.bound_classes(stats, weights, base)
    center = base[1][0] / base[0][0]

    def pull(site: str) -> float:
        counts, sums = bounded.statistics[site]
        return weights[site] * float(np.linalg.norm(sums[0] - counts[0] * center))

    assert 0 < pull("hostile") <= 2 * pull("honest") * (1 + 1e-6)
    assert "hostile" in bounded.clipped


def test_a_site_claiming_many_images_lies_as_near_as_that_many_would(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rule 3 (the pull cap switched off): four holders of 10 images each 0.3 from the center; a site claiming
    400 images (capped to 100, 10x the next holder) at the same distance is pulled to 2 x 0.3 sqrt(10) / sqrt(100)
    = 0.19 of it (a mean of 100 images lies ~3x nearer than one of 10); the honest holders are left alone."""
    monkeypatch.setattr(statistics, "PULL_CAP", float("inf"))
    center = prototypes()[0] * 0.9
    rng = np.random.default_rng(8)
    stats = {}
    for name in ["a", "b", "c", "d", "claimer"]:
        away = rng.normal(size=P)
        away -= (away @ center) * center / (center @ center)
        mean = center + away / np.linalg.norm(away) * 0.3  # 0.3 from the center, norm 0.95
        stats[name] = (np.eye(C)[0], np.outer(np.eye(C)[0], mean))
    base = (np.eye(C)[0], np.outer(np.eye(C)[0], center))
    bounded = statistics.bound_classes(stats, {"a": 10.0, "b": 10.0, "c": 10.0, "d": 10.0, "claimer": 400.0}, base)
    assert bounded.clipped == ("claimer",) and bounded.capped == ("claimer",)
    counts, sums = bounded.statistics["claimer"]
    assert float(np.linalg.norm(sums[0] / counts[0] - center)) == pytest.approx(2 * 0.3 * np.sqrt(10) / 10, rel=1e-6)
    assert all(np.allclose(bounded.statistics[n][1], stats[n][1], atol=1e-12) for n in "abcd")


def test_honest_sites_keep_their_pooled_statistics() -> None:
    """Equal-sized honest sites with a common label mix: the bound changes no class's pooled mean noticeably."""
    rng = np.random.default_rng(4)
    sites = {f"s{i}": honest_site(rng, 80, rng.dirichlet(np.full(C, 5.0))) for i in range(6)}
    zero = {k: np.zeros_like(v) for k, v in sites["s0"].items()}
    plain = fedavg([(s, 80.0) for s in sites.values()])
    bounded = combine(zero, {n: (s, 80.0) for n, s in sites.items()}, Rules(fedavg, 10.0, 2.0)).tensors
    means = [t[SUMS] / t[COUNTS][:, None] for t in (plain, bounded)]
    assert float(np.abs(means[0] - means[1]).max()) < 0.05
    np.testing.assert_allclose(plain[MOMENT], bounded[MOMENT], atol=1e-6)


@pytest.mark.parametrize("kind", ["negative count", "counts above 1", "a row without its count", "asymmetric moment",
                                  "moment trace", "not positive semi-definite", "calibration"])
def test_a_secure_aggregate_no_honest_sites_can_send_is_projected_and_commits(kind: str) -> None:
    """Under the masks no one can tell whose input broke the relation; failing the round would let that site
    stop the federation, so the coordinator commits the nearest statistics honest sites could send and says so."""
    bad = _tampered(kind)
    base = {k: np.zeros_like(v) for k, v in bad.items()}
    step = combine_secure(base, {k: v.astype(np.float64) * 4 for k, v in bad.items()}, 4.0)
    assert step.projected and statistics.violation(step.tensors) is None
    honest = honest_site(np.random.default_rng(3), 80, np.ones(C))
    kept = combine_secure(base, {k: v.astype(np.float64) * 4 for k, v in honest.items()}, 4.0)
    assert kept.projected == "" and all(np.allclose(kept.tensors[k], honest[k], atol=1e-6) for k in honest)
    projected = statistics.project(honest)  # statistics that hold every relation come back as they were
    assert all(np.allclose(projected[k], honest[k], atol=1e-6) for k in honest)



def test_images_the_cap_takes_off_one_class_leave_the_moment_those_images_would() -> None:
    """A site capped on one class loses those images from its moment as that class's images would (their mean plus
    the site's within-class spread), not from every class alike: the kept classes' spread, what the discriminant's
    covariance is estimated from, stays. Scaling the whole moment by the kept fraction deflated it and cost a
    skewed honest federation 16 points (new-domain uci, seed 2: 82.2% against 98.4%)."""
    rng = np.random.default_rng(8)
    y = np.where(rng.random(600) < 0.5, 0, rng.integers(1, C, 600))
    x = prototypes()[y] * 3 + rng.normal(size=(600, P))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    stats = site_statistics(torch.tensor(x, dtype=torch.float32), torch.tensor(y), C)
    counts, sums, moment = (stats[k].double().numpy() for k in ("counts", "sums", "moment"))
    keep = (y != 0) | (np.arange(600) % 10 == 0)  # the cap leaves a tenth of class 0
    truth = x[keep].T @ x[keep] / 600
    kept = counts * np.where(np.arange(C) == 0, keep[y == 0].mean(), 1.0)
    estimate = moment_moved(moment, counts, sums, kept, sums * (kept / np.where(counts > 0, counts, 1))[:, None])
    uniform = moment * (kept.sum() / counts.sum())
    assert np.trace(estimate) == pytest.approx(kept.sum())
    assert np.linalg.norm(estimate - truth) < 0.5 * np.linalg.norm(uniform - truth)  # measured 0.32x


def test_a_clipped_class_mean_takes_its_images_along_in_the_moment() -> None:
    """A clip that pulls a site's class mean toward its center moves that class's images with it: the site's
    within-class scatter (what the pooled covariance is estimated from) stays. Left as it was, the moment counted the
    displacement as spread along it (few-shot digits-uci 10x2, seed 0: 80.5% against 90.5% with the moment moved)."""
    rng = np.random.default_rng(9)
    y = rng.integers(0, C, 400)
    x = prototypes()[y] * 3 + rng.normal(size=(400, P))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    stats = site_statistics(torch.tensor(x, dtype=torch.float32), torch.tensor(y), C)
    counts, sums, moment = (stats[k].double().numpy() for k in ("counts", "sums", "moment"))
    means = sums / counts[:, None]
    moved_sums = sums.copy()
    moved_sums[2] = counts[2] * 0.4 * means[2]  # the clip pulls class 2's mean 60% of the way to the origin

    def scatter(m: np.ndarray, s: np.ndarray) -> np.ndarray:
        mu = s / counts[:, None]
        return m - (mu.T * counts) @ mu

    honest = scatter(moment, sums)
    estimate = moment_moved(moment, counts, sums, counts, moved_sums)
    assert np.trace(estimate) == pytest.approx(counts.sum())
    assert statistics.violation({COUNTS: counts, SUMS: moved_sums, MOMENT: estimate}) is None
    kept = np.linalg.norm(scatter(estimate, moved_sums) - honest)
    left = np.linalg.norm(scatter(moment, moved_sums) - honest)  # the moment as it was
    assert kept < 0.2 * left


def test_a_hostile_site_with_almost_no_scatter_cannot_magnify_it_into_the_committed_moment() -> None:
    """A site may send a class mean of norm near 1 opposite the class's center (its within-class scatter near zero)
    and a moment asymmetric within the check's tolerance. The clip then pulls that mean in; rescaling the scatter
    to the new trace would multiply the asymmetry (about 800x here) into a committed global that no honest set of
    sites could send, which every site sending it back would have refused. It falls back to the moment as sent."""
    rng = np.random.default_rng(0)
    sites = {f"s{i}": honest_site(rng, 100, np.ones(C)) for i in range(4)}
    global_ = fedavg([({k: v for k, v in s.items() if k != CALIBRATION}, 1.0) for s in sites.values()])
    c = 2
    center = global_[SUMS][c] / global_[COUNTS][c]
    k = int(np.argmin(center))
    i0, i1 = [int(j) for j in np.argsort(np.abs(center)) if j != k][:2]
    a = np.float32(1 - 2**-11)  # the mean's norm: spread 1 - a^2, about 1e-3
    counts = np.zeros(C, np.float32)
    counts[c] = 1
    sums = np.zeros((C, P), np.float32)
    sums[c, k] = a
    rest = np.float32(1) - a * a - np.float32(3e-6) * P
    moment = np.eye(P, dtype=np.float32) * np.float32(3e-6)
    moment[k, k] += a * a
    moment[i0, i0] += rest / 2
    moment[i1, i1] += rest - rest / 2
    moment[i0, i1], moment[i1, i0] = 0.4e-3, -0.4e-3  # asymmetric by 0.8e-3, within the check's 1e-3
    hostile = {COUNTS: counts, SUMS: sums, MOMENT: moment}
    assert statistics.violation(hostile) is None
    updates = {cid: ({k2: v for k2, v in s.items() if k2 != CALIBRATION}, 100.0) for cid, s in sites.items()}
    step = combine(global_, {**updates, "hostile": (hostile, 100.0)}, Rules(aggregate=fedavg))
    assert "hostile" in step.class_clipped
    assert statistics.violation(step.tensors) is None
    assert float(np.abs(step.tensors[MOMENT] - step.tensors[MOMENT].T).max()) < 1e-3


def test_a_site_without_within_class_scatter_keeps_its_moment_when_clipped() -> None:
    """One image per class: the site's scatter is float rounding (about 1e-8); rescaling it to the trace would
    commit a magnified noise matrix as covariance. Its moment is kept as sent (scaled by its counts, unchanged)."""
    for seed in (2, 6, 7, 8):  # draws where the rescaled noise passed every check before (a negative eigenvalue
        rng = np.random.default_rng(seed)  # of -0.012 to -0.019 in the committed scatter)
        x = prototypes()[np.arange(C)] * 3 + rng.normal(size=(C, P))
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        stats = site_statistics(torch.tensor(x, dtype=torch.float32), torch.tensor(np.arange(C)), C)
        counts, sums, moment = (stats[k].double().numpy() for k in ("counts", "sums", "moment"))
        moved = sums.copy()
        moved[3] *= 0.5  # a clip pulls one class's mean halfway to the origin
        np.testing.assert_array_equal(moment_moved(moment, counts, sums, counts, moved), moment)


@pytest.mark.parametrize("kind", ["sole holder", "dirichlet 0.1"])
def test_round_after_round_the_bounds_keep_every_class_share(kind: str) -> None:
    """The bounds measure a site against the other sites' statistics, never against the global they produce: a
    rule anchored on the global (a site's pull on a count share within 2x the others', tried for issue 29) fed
    back into itself: over these 20 rounds it took the class one site holds from 10.4% of the pooled images to
    about 0, and moved the Dirichlet-0.1 federation's shares by up to 4.3 points. The shipped rules keep every
    class's pooled share within 1 point."""
    rng = np.random.default_rng(11)
    if kind == "sole holder":  # class 0 is half of one site's images, and none of the others'
        priors = [np.r_[0.5, np.full(C - 1, 0.5 / (C - 1))]] + [np.r_[0.0, np.ones(C - 1)]] * 4
    else:
        priors = list(rng.dirichlet(np.full(C, 0.1), size=5))
    sites = {f"s{i}": honest_site(rng, 400, prior + 1e-9) for i, prior in enumerate(priors)}
    pooled = fedavg([(s, 400.0) for s in sites.values()])
    global_ = {k: np.zeros_like(v) for k, v in pooled.items()}
    for _ in range(20):
        global_ = combine(global_, {n: (s, 400.0) for n, s in sites.items()}, Rules(fedavg, 10.0, 2.0)).tensors
    shares = global_[COUNTS] / global_[COUNTS].sum()
    np.testing.assert_allclose(shares, pooled[COUNTS] / pooled[COUNTS].sum(), atol=0.01)
