"""An update checked before it may touch the federation: parsed, validated and hashed outside its lock.

Every check here is bounded by the spec, not by what the client sent: the payload size first, then the
safetensors header (its size, tensor count, names, shapes and dtypes, before any tensor is built), then the
values (finite, and no absurd magnitude). A refusal names the problem and changes nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..common import serde
from ..common.messages import Code, Metrics, Refused
from ..common.spec import TensorSpec
from ..common.transport import DEFAULT_MAX_UPDATE_BYTES

# CLIP's token embeddings and residual stream stay orders of magnitude below this; a value beyond it is a
# bug or an attack (3e38 survives a finiteness check and turns the average into 1e38).
DEFAULT_MAX_ABS_VALUE = 1e4
# Metric values a sane client can report (a weight of 1e15 test examples would swamp the round's accuracy).
MAX_TEST_EXAMPLES = 10**9


@dataclass(frozen=True)
class UpdateLimits:
    max_update_bytes: int = DEFAULT_MAX_UPDATE_BYTES
    max_abs_value: float = DEFAULT_MAX_ABS_VALUE

    def __post_init__(self) -> None:
        if self.max_update_bytes <= 0:
            raise ValueError(f"max_update_bytes must be > 0, got {self.max_update_bytes}")
        if not self.max_abs_value > 0:
            raise ValueError(f"--max-abs-value must be > 0, got {self.max_abs_value}")


@dataclass(frozen=True)
class CheckedUpdate:
    sha256: str
    tensors: dict[str, np.ndarray]
    num_examples: int
    metrics: Metrics


def check_metrics(metrics: Metrics) -> None:
    bad = metrics.non_finite()
    if bad:
        raise Refused(Code.INVALID_ARGUMENT, f"metric {bad!r} is not finite ({getattr(metrics, bad)})")
    ranges = [
        ("accuracy_before", 0.0, 1.0), ("accuracy_after", 0.0, 1.0), ("accuracy_global", 0.0, 1.0),
        ("train_loss", 0.0, math.inf), ("train_seconds", 0.0, math.inf), ("num_test_examples", 0, MAX_TEST_EXAMPLES),
    ]
    for name, low, high in ranges:
        value = getattr(metrics, name)
        if not math.isnan(value) and not low <= value <= high:  # NaN: not measured this round
            raise Refused(Code.INVALID_ARGUMENT, f"metric {name!r} = {value} is outside [{low}, {high}]")


def check_update(payload: bytes, num_examples: int, metrics: Metrics, spec: list[TensorSpec],
                 limits: UpdateLimits, sha256: str | None = None) -> CheckedUpdate:
    """The parsed update, or `Refused` naming what is wrong with it. Pure; call it outside the lock.
    `sha256`: the payload's digest when the caller has it already."""
    if num_examples <= 0:
        raise Refused(Code.INVALID_ARGUMENT, f"num_examples must be > 0, got {num_examples}")
    if len(payload) > limits.max_update_bytes:
        raise Refused(Code.RESOURCE_EXHAUSTED, f"update payload of {len(payload)} bytes exceeds the "
                                               f"{limits.max_update_bytes}-byte limit")
    check_metrics(metrics)
    try:
        tensors = serde.decode_as(payload, spec)
    except serde.InvalidTensors as exc:
        raise Refused(Code.INVALID_ARGUMENT, f"update refused: {exc}") from None
    for name in sorted(tensors):
        peak = float(np.max(np.abs(tensors[name]))) if tensors[name].size else 0.0
        if peak > limits.max_abs_value:
            raise Refused(Code.INVALID_ARGUMENT, f"update refused: tensor {name!r} holds a value of magnitude "
                                                 f"{peak:.3g}, above the {limits.max_abs_value:g} limit "
                                                 "(--max-abs-value)")
    return CheckedUpdate(sha256 or serde.sha256(payload), tensors, num_examples, metrics)
