"""The per-update stages (server/pipeline/stages.py): decode, then check, outside the federation's lock.

Every check here is bounded by the spec, not by what the client sent: the payload size first, then the
safetensors header (its size, tensor count, names, shapes and dtypes, before any tensor is built), then the
values (finite, and no absurd magnitude). A refusal names the problem and changes nothing. The limits are
validated where they are set (`FederationConfig`); `num_examples` was checked against the client's Join.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ...common import serde
from ...common.messages import Code, Metrics, Refused
from ...common.spec import MAX_ABS_VALUE, TensorSpec
from ...common.transport import DEFAULT_MAX_UPDATE_BYTES
from . import statistics

# Metric values a sane client can report (a weight of 1e15 test examples would swamp the round's accuracy).
MAX_TEST_EXAMPLES = 10**9


@dataclass(frozen=True)
class UpdateLimits:
    max_update_bytes: int = DEFAULT_MAX_UPDATE_BYTES
    max_abs_value: float = MAX_ABS_VALUE


@dataclass(frozen=True)
class CheckedUpdate:
    digest: str  # serde.resubmit_digest of its payload
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


def decode(payload: bytes, num_examples: int, metrics: Metrics, spec: list[TensorSpec], limits: UpdateLimits,
           digest: str) -> CheckedUpdate:
    """The payload parsed against the spec (size, metrics, header, finiteness), or `Refused`. `digest`: its
    resubmit digest."""
    if len(payload) > limits.max_update_bytes:
        raise Refused(Code.RESOURCE_EXHAUSTED, f"update payload of {len(payload)} bytes exceeds the "
                                               f"{limits.max_update_bytes}-byte limit")
    check_metrics(metrics)  # cheap, before any tensor is built
    try:
        tensors = serde.decode_as(payload, spec)
    except serde.InvalidTensors as exc:
        raise Refused(Code.INVALID_ARGUMENT, f"update refused: {exc}") from None
    for entry in spec:
        values = tensors[entry.name]
        if entry.bounds and values.size and not (entry.bounds[0] <= values.min() and values.max() <= entry.bounds[1]):
            raise Refused(Code.INVALID_ARGUMENT, f"update refused: tensor {entry.name!r} holds values outside "
                                                 f"[{entry.bounds[0]:g}, {entry.bounds[1]:g}] (min "
                                                 f"{float(values.min()):.3g}, max {float(values.max()):.3g})")
    return CheckedUpdate(digest, tensors, num_examples, metrics)


def check(update: CheckedUpdate, limits: UpdateLimits) -> CheckedUpdate:
    """The update if its values' magnitudes are within the limit, else `Refused`."""
    for name in sorted(update.tensors):
        array = update.tensors[name]
        peak = max(-float(array.min()), float(array.max())) if array.size else 0.0  # no |array| temporary
        if peak > limits.max_abs_value:
            raise Refused(Code.INVALID_ARGUMENT, f"update refused: tensor {name!r} holds a value of magnitude "
                                                 f"{peak:.3g}, above the {limits.max_abs_value:g} limit "
                                                 "(--max-abs-value)")
    statistics.check(update.tensors)
    return update
