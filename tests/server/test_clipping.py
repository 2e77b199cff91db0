"""Per-tensor adaptive clipping: one site cannot move any global tensor much more than an honest round does."""

from __future__ import annotations

import numpy as np
import pytest

from pfeddc.common import serde
from pfeddc.common.clip import l2, row_norms
from pfeddc.common.messages import Metrics
from pfeddc.common.spec import TensorSpec
from pfeddc.server.ops.checkpoint import Checkpoint
from pfeddc.server.pipeline.aggregate import fedavg
from pfeddc.server.pipeline.clipping import HISTORY_GROWTH, clip_per_tensor
from pfeddc.server.pipeline.privacy import DpSettings
from pfeddc.server.pipeline.stages import Rules, combine
from pfeddc.server.round.federation import Federation, FederationConfig, FederationState

# scales an order of magnitude apart, like the text (small) and vision (large) prompts
GLOBAL = {"text": np.zeros((4, 64), np.float32), "vision": np.zeros((8, 64), np.float32)}
SCALE = {"text": 0.002, "vision": 0.05}
METRICS = Metrics(train_loss=1.0, accuracy_before=0.5, accuracy_after=0.6, num_test_examples=10)


def honest(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {k: (v + rng.normal(0, SCALE[k], v.shape)).astype(np.float32) for k, v in GLOBAL.items()}


def attacker(budget: float, tensor: str) -> dict[str, np.ndarray]:
    """An update whose whole change (L2 `budget`) goes into one tensor, in a fixed direction."""
    out = {k: v.copy() for k, v in GLOBAL.items()}
    out[tensor] = out[tensor] + np.float32(budget / np.sqrt(GLOBAL[tensor].size))
    return out


def movement(tensors: dict[str, np.ndarray], tensor: str) -> float:
    return l2(tensors[tensor].astype(np.float64) - GLOBAL[tensor])


@pytest.mark.parametrize("tensor", ["text", "vision"])
def test_one_attacker_among_five_moves_no_tensor_more_than_3x_an_honest_round(tensor: str) -> None:
    rng = np.random.default_rng(0)
    sites = {f"h{i}": (honest(rng), 10.0) for i in range(4)}
    honest_round = combine(GLOBAL, {**sites, "h4": (honest(rng), 10.0)}, Rules(fedavg, clip_norm=10.0, adaptive=2.0))
    attacked = combine(GLOBAL, {**sites, "evil": (attacker(10.0, tensor), 10.0)}, Rules(fedavg, clip_norm=10.0,
                       adaptive=2.0))
    fixed_only = combine(GLOBAL, {**sites, "evil": (attacker(10.0, tensor), 10.0)}, Rules(fedavg, clip_norm=10.0))
    ratio = movement(attacked.tensors, tensor) / movement(honest_round.tensors, tensor)
    assert ratio <= 3.0
    assert movement(fixed_only.tensors, tensor) / movement(honest_round.tensors, tensor) > 3.0  # without it
    assert attacked.tensor_clip is not None and attacked.tensor_clip.clipped[tensor] == ("evil",)
    assert honest_round.tensor_clip is not None and not honest_round.tensor_clip.clipped.get(tensor)


def test_two_updates_are_bounded_by_the_previous_rounds_scale() -> None:
    rng = np.random.default_rng(1)
    previous = {k: SCALE[k] * np.sqrt(v.size) for k, v in GLOBAL.items()}  # an honest round's median change
    changes = {"h": {k: v - GLOBAL[k] for k, v in honest(rng).items()},
               "evil": {k: v - GLOBAL[k] for k, v in attacker(10.0, "text").items()}}
    clipped, clip = clip_per_tensor(changes, 2.0, previous)
    assert clip.scale["text"] == pytest.approx(HISTORY_GROWTH * previous["text"])  # not the median (~5)
    assert l2(clipped["evil"]["text"]) == pytest.approx(2.0 * HISTORY_GROWTH * previous["text"], rel=1e-5)
    assert clip.clipped == {"text": ("evil",)}
    unknown, first = clip_per_tensor(changes, 2.0, {})  # no history: the median of two is no defence
    assert l2(unknown["evil"]["text"]) > 1.0 and first.clipped == {}


def test_changes_and_inputs_keep_their_dtype_and_values() -> None:
    changes = {"a": {"text": np.full((2, 2), 3.0, np.float16)}, "b": {"text": np.full((2, 2), 1.0, np.float16)},
               "c": {"text": np.full((2, 2), 1.0, np.float16)}}
    clipped, clip = clip_per_tensor(changes, 2.0, {})
    assert clipped["a"]["text"].dtype == np.float16 and float(changes["a"]["text"][0, 0]) == 3.0
    assert clip.bounds["text"] == pytest.approx(4.0) and l2(clipped["a"]["text"]) == pytest.approx(4.0, rel=1e-3)


def test_dp_keeps_its_fixed_clip_only() -> None:
    rng = np.random.default_rng(2)
    updates = {f"h{i}": (honest(rng), 1.0) for i in range(4)}
    out = combine(GLOBAL, updates, Rules(fedavg, clip_norm=None, dp=DpSettings(1.0, 0.5), sampled=4,
                  rng=np.random.default_rng(0), adaptive=2.0))
    assert out.tensor_clip is None


def test_federation_records_per_tensor_clipping_and_carries_the_scale_through_a_checkpoint(tmp_path: object) -> None:
    spec = [TensorSpec(k, v.shape) for k, v in GLOBAL.items()]
    config = FederationConfig(rounds=3, min_clients=3)
    checkpoint = Checkpoint(tmp_path)  # type: ignore[arg-type]
    fed = Federation(config, spec, FederationState(1, dict(GLOBAL), {}), save=checkpoint.save)
    rng = np.random.default_rng(3)
    for cid in ("a", "b", "evil"):
        fed.join(cid, 10, spec)
    for cid in ("a", "b"):
        fed.submit(cid, 1, serde.encode(honest(rng)), 10, METRICS)
    fed.submit("evil", 1, serde.encode(attacker(5.0, "text")), 10, METRICS)
    summary = fed.last_round
    assert summary is not None and summary.clipped_tensors == {"text": ("evil",)}
    line = summary.to_json()
    assert line["clipped_tensors"] == {"text": ["evil"]} and set(line["clip_bounds"]) == {"text", "vision"}
    restored = checkpoint.load(spec, 3)
    assert restored is not None and restored.change_scale.keys() == {"text", "vision"}
    assert restored.change_scale["text"] == pytest.approx(line["clip_bounds"]["text"] / 2.0, rel=1e-5)
    assert fed._state.change_scale == restored.change_scale  # the next round is capped by it without a restart


def test_one_site_cannot_spend_a_class_row_tensors_bound_on_one_class() -> None:
    """The residual's rows are classes: each row is bounded on its own, so an attacker who puts its whole change
    into one class moves that row at most a few times an honest round, where a whole-tensor bound allows
    ~sqrt(classes) times more; the other rows and sites are left alone."""
    rows, width = 64, 33
    name = "head.residual.global"
    rng = np.random.default_rng(3)

    def honest_change() -> dict[str, np.ndarray]:
        return {name: rng.normal(0, 0.01, (rows, width)).astype(np.float32)}

    def attack(budget: float) -> dict[str, np.ndarray]:
        d = np.zeros((rows, width), np.float32)
        d[7] = budget / np.sqrt(width)
        return {name: d}

    honest_sites = {f"h{i}": honest_change() for i in range(4)}
    budget = l2(honest_sites["h0"][name]) * 2.0  # all of a whole-tensor bound, on one row
    changes = {**honest_sites, "evil": attack(budget)}
    whole, _ = clip_per_tensor(changes, 2.0, {})
    per_row, clip = clip_per_tensor(changes, 2.0, {}, rows=frozenset({name}))
    honest_row = max(l2(d[name][7]) for d in honest_sites.values())
    assert l2(whole["evil"][name][7]) / honest_row > 8.0  # what a whole-tensor bound lets through
    assert l2(per_row["evil"][name][7]) / honest_row <= 2.0 + 1e-6
    assert clip.clipped[name] == ("evil",) and f"{name}[7]" in clip.scale
    for site, d in honest_sites.items():
        np.testing.assert_array_equal(per_row[site][name], d[name])


def test_a_row_few_sites_hold_keeps_its_holders_steps_and_bounds_a_site_joining_them() -> None:
    """A class row moves a lot at the two sites that hold the class and hardly at the other three (bimodal). The
    holders' steps pass whole, where a median bound (the others' level) cut them 100x; a hostile site that joins
    them moves the row at most `factor` x the larger holder's step, not as far as the range allows."""
    name = "head.residual.global"
    rng = np.random.default_rng(5)

    def row_change(size: float) -> dict[str, np.ndarray]:
        d = rng.normal(0, 1e-4, (4, 9)).astype(np.float32)
        d[1] *= size / l2(d[1])
        return {name: d}

    sites = {"holder_a": row_change(0.3), "holder_b": row_change(0.5), "other_a": row_change(0.002),
             "other_b": row_change(0.0006), "other_c": row_change(0.0001)}
    honest, clip = clip_per_tensor(sites, 2.0, {}, rows=frozenset({name}))
    for site, d in sites.items():
        np.testing.assert_array_equal(honest[site][name][1], d[name][1])
    assert clip.scale[f"{name}[1]"] == pytest.approx(0.3, rel=1e-5)  # the second largest, not the median 0.002
    hostile = np.zeros((4, 9), np.float32)
    hostile[1] = -100.0
    attacked, clip = clip_per_tensor({**{k: v for k, v in sites.items() if k != "other_c"}, "evil": {name: hostile}},
                                     2.0, {}, rows=frozenset({name}))
    assert l2(attacked["evil"][name][1]) == pytest.approx(2.0 * 0.5, rel=1e-5)
    assert clip.clipped[name] == ("evil",)
    assert "holder_b" not in clip.clipped[name]


def test_a_class_one_site_alone_moves_keeps_that_sites_step_with_two_sites_or_five() -> None:
    """The second largest change of a row only one site moves is another site's near-zero one: each row's scale is
    floored at an even share of the tensor's lower median change (s / sqrt(rows)), so that site's step passes
    whole, with two sites as with five, and a site that moves every row is still bounded on each."""
    name = "head.residual.global"
    rng = np.random.default_rng(6)

    def change(row_1: float) -> dict[str, np.ndarray]:
        d = rng.normal(0, 1, (10, 9))
        d *= 0.25 / np.sqrt(np.square(d).sum(1, keepdims=True))  # every row 0.25: the whole change ~0.8
        d[1] *= row_1 / 0.25
        return {name: d.astype(np.float32)}

    for sites in ({"holder": change(0.45), "other": change(0.004)},
                  {"holder": change(0.45), **{f"other_{i}": change(0.004) for i in range(4)}}):
        out, clip = clip_per_tensor(sites, 2.0, {}, rows=frozenset({name}))
        np.testing.assert_array_equal(out["holder"][name], sites["holder"][name])
        assert not clip.clipped
        hostile = {name: np.full((10, 9), 100.0, np.float32)}
        out, clip = clip_per_tensor({**sites, "evil": hostile}, 2.0, {}, rows=frozenset({name}))
        assert clip.clipped[name] == ("evil",)
        assert row_norms(out["evil"][name]).max() <= 2.0 * 0.45 + 1e-6


def test_one_hostile_site_of_two_cannot_raise_the_rows_floor() -> None:
    """The rows' floor comes from the lower median of the sites' whole changes: of two sites, the honest one's,
    where the median (their mean) would be half the hostile site's. Once the honest site stops moving the tensor
    (the residual after its last step) the hostile one moves no row at all."""
    name = "head.residual.global"
    rng = np.random.default_rng(7)
    honest = rng.normal(0, 1, (10, 9))
    honest *= 0.004 / np.sqrt(np.square(honest).sum(1, keepdims=True))
    honest[3] *= 0.3 / 0.004
    hostile = {name: np.full((10, 9), 100.0, np.float32)}
    out, _ = clip_per_tensor({"site": {name: honest.astype(np.float32)}, "evil": hostile}, 2.0, {},
                             rows=frozenset({name}))
    floor = l2(honest) / np.sqrt(10)
    allowed = 2.0 * np.maximum(row_norms(honest), floor)
    assert (row_norms(out["evil"][name]) <= allowed + 1e-6).all()
    out, _ = clip_per_tensor({"site": {name: np.zeros((10, 9), np.float32)}, "evil": hostile}, 2.0, {},
                             rows=frozenset({name}))
    assert not out["evil"][name].any()


def test_row_bounds_carry_each_rows_history() -> None:
    """Each row's scale is capped by that row's scale in the previous committed round: a row two sites move 0.02
    this round, after 0.002 the round before, may move at most `factor` x HISTORY_GROWTH x 0.002."""
    name = "r"
    changes = {"h": {name: np.full((3, 4), 0.01, np.float32)}, "evil": {name: np.full((3, 4), 5.0, np.float32)}}
    previous = {f"{name}[{i}]": 0.002 for i in range(3)}
    out, clip = clip_per_tensor(changes, 2.0, previous, rows=frozenset({name}))
    assert np.sqrt(np.square(out["evil"][name]).sum(1)).max() <= 2.0 * HISTORY_GROWTH * 0.002 + 1e-6
    assert clip.bounds[name] == pytest.approx(2.0 * HISTORY_GROWTH * 0.002)


def test_the_round_bounds_the_class_heads_residual_row_by_row() -> None:
    """Through the round's stages (combine): an attacker pushing one residual row as far as the values allow moves
    it at most 3x an honest round's move of that row."""
    name = "head.residual.global"
    base = {name: np.zeros((16, 65), np.float32)}
    rng = np.random.default_rng(4)
    honest_sites = {f"h{i}": ({name: rng.normal(0, 0.01, (16, 65)).astype(np.float32)}, 10.0) for i in range(4)}
    hostile = np.zeros((16, 65), np.float32)
    hostile[3] = -100.0
    honest_round = combine(base, {**honest_sites, "h4": ({name: rng.normal(0, 0.01, (16, 65)).astype(np.float32)},
                                                         10.0)}, Rules(fedavg, clip_norm=10.0, adaptive=2.0))
    attacked = combine(base, {**honest_sites, "evil": ({name: hostile}, 10.0)}, Rules(fedavg, clip_norm=10.0,
                                                                                      adaptive=2.0))
    assert l2(attacked.tensors[name][3]) / l2(honest_round.tensors[name][3]) <= 3.0
    assert attacked.tensor_clip is not None and attacked.tensor_clip.clipped[name] == ("evil",)
