"""Per-tensor bounds of a secure round: the sites' reported norms set them, the site applies them, the coordinator
holds the unmasked sum to them (server/round/secure_bounds.py, client/secure.py). The real round over gRPC, with a
site masking out-of-range values and lying in its report, is in test_secure_rounds.py."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pfeddc.client.secure import Abandoned, change_norms, change_vector
from pfeddc.common import wire_secure
from pfeddc.common.clip import row_bound
from pfeddc.common.messages import Code, Refused
from pfeddc.common.secagg.exchange import SecureAnswer, SecureSettings, SecureStep, Status, flatten, segments
from pfeddc.common.secagg.field import FieldParams
from pfeddc.common.spec import TensorSpec, class_rows
from pfeddc.server.round.secure_bounds import SumBounds

SPEC = [TensorSpec("a", (4,), "float32"), TensorSpec("b", (2, 3), "float32"), TensorSpec("stats", (5,), "float32")]
PARTS = {k: v for k, v in segments(SPEC).items() if k != "stats"}


def settings(clipped: tuple[str, ...] = ("a", "b"), noise_std: float = 0.0) -> SecureSettings:
    return SecureSettings("run", 0, ("s1", "s2", "s3"), 2, 15, FieldParams(10.0, 3, 62), 1.0, 10.0, noise_std, clipped)


def bounds_of(previous: dict[str, float] | None = None, ceiling: float = math.inf) -> SumBounds:
    return SumBounds(factor=2.0, ceiling=ceiling, previous=previous or {}, parts=PARTS)


@pytest.mark.parametrize(("norms", "message"), [
    ({"a": 1.0}, "missing \\['b'\\]"),
    ({"a": 1.0, "b": 1.0, "stats": 1.0}, "not bounded \\['stats'\\]"),
    ({"a": 1.0, "b": math.nan}, "finite and >= 0: \\['b'\\]"),
    ({"a": -1.0, "b": 1.0}, "finite and >= 0: \\['a'\\]"),
    ({"a": math.inf, "b": 1.0}, "finite and >= 0: \\['a'\\]"),
])
def test_a_report_that_is_not_one_norm_per_bounded_tensor_is_refused(norms: dict[str, float], message: str) -> None:
    with pytest.raises(Refused, match=message) as refused:
        bounds_of().check(norms)
    assert refused.value.code == Code.INVALID_ARGUMENT


def test_the_bounds_are_the_factor_times_the_median_report_capped_by_history_and_no_liar_raises_them() -> None:
    bounds = bounds_of({"b": 0.5})
    for site, norms in {"s1": {"a": 1.0, "b": 1.0}, "s2": {"a": 1.2, "b": 1.1}, "liar": {"a": 1e9, "b": 1e9},
                        "late": {"a": 5.0, "b": 5.0}}.items():  # late: its keys were not announced, not counted
        bounds.keep(site, bounds.check(norms))
    bounds.keep("s1", {"a": 1e9, "b": 1e9})  # a re-sent advert: the first report stands
    clips = bounds.announce(["s1", "s2", "liar"])
    assert clips == {"a": pytest.approx(2 * 1.2), "b": pytest.approx(2 * 2 * 0.5)}  # b: history x 2 caps it
    assert bounds.scale == {"a": pytest.approx(1.2), "b": pytest.approx(1.0)}
    assert bounds.clipped == {"a": ("liar",), "b": ("liar",)}  # whose reports exceed the bound: the summary's
    assert SumBounds(2.0).announce(["s1"]) == {}  # nothing bounded per tensor (DP, or --adaptive-clip 0)


def test_no_bound_exceeds_the_whole_change_clip_and_every_bound_is_finite() -> None:
    """Reports near the float maximum (a majority of liars) would overflow the median or factor x s to inf, which
    every site would refuse and a checkpoint could not hold: the whole-change clip caps both."""
    bounds = bounds_of(ceiling=10.0)
    for site in ("s1", "s2", "s3"):
        bounds.keep(site, bounds.check({"a": 1.7e308, "b": 1.0}))
    assert bounds.announce(["s1", "s2", "s3"]) == {"a": 10.0, "b": 2.0} and bounds.scale["a"] == 10.0


def test_the_unmasked_sum_is_held_to_its_survivors_bounds_part_by_part_then_whole() -> None:
    bounds = bounds_of()
    bounds.clips = {"a": 1.0, "b": 2.0}
    weights = [1.0, 0.5]  # the sum's part a may be 1.5 long, b 3.0, the whole 1.5 x 10
    total = np.zeros(15)
    total[PARTS["a"]] = [3.0, 0, 0, 0]  # 2x its bound
    total[PARTS["b"]] = [1.0, 1.0, 0, 0, 0, 0]  # within its bound
    total[segments(SPEC)["stats"]] = 100.0  # the class statistics: the whole's bound only
    held = bounds.hold(total, weights, whole_clips=15.0, slack=0.0)
    whole = math.sqrt(1.5 ** 2 + 2 * 1.0 ** 2 + 5 * 100.0 ** 2)  # after part a was held to 1.5
    assert np.linalg.norm(held[PARTS["a"]]) == pytest.approx(1.5 * 15.0 / whole)
    assert np.linalg.norm(held) == pytest.approx(15.0)
    assert bounds.excess["a"] == pytest.approx(2.0) and bounds.excess[""] == pytest.approx(whole / 15.0)
    assert "a 2x" in bounds.findings()[0] and "outside its range" in bounds.findings()[0]
    honest = np.zeros(15)
    honest[PARTS["a"]] = [1.5, 0, 0, 0]
    assert np.array_equal(bounds.hold(honest, weights, 15.0, 0.0), honest) and bounds.findings() == []


def test_honest_sites_at_their_bound_plus_the_quantisation_error_are_not_flagged() -> None:
    """Every survivor clipped to exactly its bound, all one way, plus each coordinate's quantisation error: within
    the slack, so no incident and nothing scaled (without the per-tensor slack this would be flagged)."""
    bounds = bounds_of()
    bounds.clips = {"a": 1.0, "b": 1.0}
    total = np.zeros(15)
    total[PARTS["a"]] = 1.5 / 2 + 1e-6  # two survivors of weights 1 and 0.5, at the bound, each coordinate off
    held = bounds.hold(total, [1.0, 0.5], whole_clips=15.0, slack=2e-6)
    assert bounds.excess == {} and np.array_equal(held, total)


def test_a_site_clips_each_bounded_tensor_to_the_announced_bound_then_the_whole() -> None:
    base = {s.name: np.zeros(s.shape, np.float32) for s in SPEC}
    update = {"a": np.full(4, 1.0, np.float32), "b": np.full((2, 3), 0.1, np.float32), "stats": np.ones(5, np.float32)}
    norms = change_norms(base, update, settings())
    assert norms == {"a": pytest.approx(2.0), "b": pytest.approx(math.sqrt(0.06))}
    vector = change_vector(base, update, SPEC, settings(), {"a": 0.5, "b": 10.0})
    parts = segments(SPEC)
    assert np.linalg.norm(vector[parts["a"]]) == pytest.approx(0.5)
    np.testing.assert_allclose(vector[parts["b"]], flatten(update, SPEC)[parts["b"]], rtol=1e-6)
    np.testing.assert_allclose(vector[parts["stats"]], 1.0)  # bounded by its relations on the coordinator
    with pytest.raises(Abandoned, match="announced bounds for \\['a'\\]"):
        change_vector(base, update, SPEC, settings(), {"a": 0.5})
    with pytest.raises(Abandoned, match="invalid: \\['b'\\]"):
        change_vector(base, update, SPEC, settings(), {"a": 0.5, "b": -1.0})
    with pytest.raises(Abandoned, match="DP round"):  # a coordinator asking for norms under DP is refused
        change_norms(base, update, settings(noise_std=0.1))
    with pytest.raises(Abandoned, match="does not share: \\['nope'\\]"):  # a coordinator of another model
        change_norms(base, update, settings(("a", "nope")))
    with pytest.raises(Abandoned, match="announced bounds"):
        change_vector(base, update, SPEC, settings(("a", "nope")), {"a": 0.5, "nope": 1.0})


def test_norms_and_bounds_cross_the_wire() -> None:
    step = SecureStep("s1", 3, 0, None, 1.0, "run", {"a": 1.5, "b": 0.25})
    assert wire_secure.step_from_proto(wire_secure.step_to_proto(step)) == step
    answer = SecureAnswer(Status.PENDING, None, "", {"a": 3.0})
    assert wire_secure.answer_from_proto(wire_secure.answer_to_proto(answer), settings().round_config(3).rid,
                                         "s1").tensor_clips == {"a": 3.0}
    out = wire_secure.pb.SecureRound()
    wire_secure.settings_to_proto(settings(), out)
    assert wire_secure.settings_from_proto(out) == settings()


def test_a_class_row_tensor_is_bounded_row_by_row_on_the_site_and_in_the_sum() -> None:
    """The residual's rows are classes: a site clips each row to a few times an even share of the tensor's bound,
    so its whole bound cannot go to one class; the coordinator holds each row of the unmasked sum to what its
    survivors could send. Per-row norms are never reported (they would tell which classes a site holds)."""
    rows, width = 16, 5
    spec = [TensorSpec("head.residual.global", (rows, width), "float32")]
    parts = segments(spec)
    site = SecureSettings("run", 0, ("s1", "s2", "s3"), 2, 15, FieldParams(10.0, 3, 62), 1.0, 10.0, 0.0,
                          ("head.residual.global",))
    base = {"head.residual.global": np.zeros((rows, width), np.float32)}
    hostile = np.zeros((rows, width), np.float32)
    hostile[3] = 1.0  # its whole change on one class
    bound = 1.0
    vector = change_vector(base, {"head.residual.global": hostile}, spec, site, {"head.residual.global": bound})
    one_row = np.linalg.norm(vector[parts["head.residual.global"]].reshape(rows, width)[3])
    assert one_row == pytest.approx(row_bound(bound, rows)) and one_row < bound / 1.3  # 3 / sqrt(16) of it
    honest = np.full((rows, width), 0.5 / np.sqrt(rows * width), np.float32)  # spread over the classes
    kept = change_vector(base, {"head.residual.global": honest}, spec, site, {"head.residual.global": bound})
    np.testing.assert_allclose(kept, honest.reshape(-1), rtol=1e-6)
    sums = SumBounds(factor=2.0, parts=parts, rows=class_rows(spec))
    sums.clips = {"head.residual.global": bound}
    masked = np.zeros(rows * width)
    masked[3 * width:4 * width] = 50.0  # a site that masked values far outside its range, on one row
    held = sums.hold(masked + np.tile(honest.reshape(-1), 1), [1.0, 1.0, 1.0], 30.0, 0.0)
    assert np.linalg.norm(held.reshape(rows, width)[3]) <= 3 * row_bound(bound, rows) + 1e-9
    assert set(sums.excess) == {"head.residual.global", "head.residual.global[3]"}  # no honest row touched
