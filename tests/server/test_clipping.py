"""Per-tensor adaptive clipping: one site cannot move any global tensor much more than an honest round does."""

from __future__ import annotations

import numpy as np
import pytest

from pfeddc.common import serde
from pfeddc.common.clip import l2
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
