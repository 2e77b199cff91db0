"""Aggregators of a round's updates: pure functions with one signature, chosen with `--aggregator`.

Each takes the round's updates as `(tensors, weight)` pairs (every update carries the same names and shapes:
the coordinator validated them against the spec) and returns the new global tensors in the updates' dtype,
computed in float64. `fedavg` uses the weights; the robust ones are coordinate-wise and unweighted, because a
weight is the one thing a hostile site can inflate.

Bounds (per coordinate, with f hostile updates among n): `median` stays within the range of the honest
values while f < n/2; `trimmed_mean` (trimming k = floor(trim * n) values from each end) stays within it
while f <= k. `fedavg` has no such bound; the coordinator clips each update's change instead.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from enum import StrEnum
from functools import partial

import numpy as np

WeightedUpdate = tuple[Mapping[str, np.ndarray], float]
Aggregator = Callable[[Sequence[WeightedUpdate]], dict[str, np.ndarray]]
DEFAULT_TRIM = 0.2


class AggregatorKind(StrEnum):
    FEDAVG = "fedavg"
    MEDIAN = "median"
    TRIMMED_MEAN = "trimmed-mean"
    GEOMETRIC_MEDIAN = "geometric-median"


def _checked(updates: Sequence[WeightedUpdate]) -> list[str]:
    """The tensor names, after checking that names, shapes and weights agree."""
    if not updates:
        raise ValueError("aggregation needs at least one update")
    names = sorted(updates[0][0])
    for tensors, weight in updates:
        if not (weight > 0 and math.isfinite(weight)):
            raise ValueError(f"weights must be positive and finite, got {weight}")
        if sorted(tensors) != names:
            raise ValueError(f"updates disagree on tensor names: {sorted(tensors)} vs {names}")
    for name in names:
        shapes = {tuple(t[name].shape) for t, _ in updates}
        if len(shapes) != 1:
            raise ValueError(f"tensor {name!r}: updates disagree on its shape: {sorted(shapes)}")
    return names


def _stacked(updates: Sequence[WeightedUpdate]) -> dict[str, np.ndarray]:
    """name -> array [n, *shape] in the updates' dtype (the robust aggregators need every value at once)."""
    return {name: np.stack([t[name] for t, _ in updates]) for name in _checked(updates)}


def _cast_like(result: dict[str, np.ndarray], updates: Sequence[WeightedUpdate]) -> dict[str, np.ndarray]:
    first = updates[0][0]
    return {name: value.astype(first[name].dtype) for name, value in result.items()}


def fedavg(updates: Sequence[WeightedUpdate]) -> dict[str, np.ndarray]:
    """Mean of the tensors weighted by each update's weight (its capped example count), summed in float64 one
    update at a time (memory does not grow with the number of clients)."""
    names = _checked(updates)
    total = float(sum(w for _, w in updates))
    out = {name: np.zeros(np.shape(updates[0][0][name]), np.float64) for name in names}
    for tensors, weight in updates:
        for name in names:
            out[name] += np.asarray(tensors[name], np.float64) * (weight / total)
    return _cast_like(out, updates)


def median(updates: Sequence[WeightedUpdate]) -> dict[str, np.ndarray]:
    """Coordinate-wise median, unweighted."""
    return _cast_like({name: np.median(s.astype(np.float64), axis=0) for name, s in _stacked(updates).items()},
                      updates)


def trimmed_mean(updates: Sequence[WeightedUpdate], trim: float = DEFAULT_TRIM) -> dict[str, np.ndarray]:
    """Coordinate-wise mean after dropping the floor(trim * n) largest and smallest values, unweighted
    (`trim` in [0, 0.5): `FederationConfig` validates it)."""
    stacked = _stacked(updates)
    n = len(updates)
    k = math.floor(trim * n)
    return _cast_like({name: np.sort(s, axis=0)[k:n - k].mean(axis=0, dtype=np.float64) for name, s in stacked.items()},
                      updates)


def geometric_median(updates: Sequence[WeightedUpdate], iterations: int = 10) -> dict[str, np.ndarray]:
    """The point nearest to all updates in summed L2 distance, every tensor as one vector (Weiszfeld's
    iterations, as RFA: Pillutla et al. 2022), unweighted: it stays near the honest updates while fewer than
    half are hostile, however far the others are."""
    stacked = _stacked(updates)
    flat = np.concatenate([s.reshape(len(updates), -1).astype(np.float64) for s in stacked.values()], axis=1)
    point = flat.mean(axis=0)
    for _ in range(iterations):
        inverse = 1.0 / np.maximum(np.linalg.norm(flat - point, axis=1), 1e-12)
        point = inverse @ flat / inverse.sum()
    sizes = np.cumsum([s[0].size for s in stacked.values()])[:-1]
    parts = np.split(point, sizes)
    return _cast_like({name: part.reshape(s.shape[1:]) for (name, s), part in zip(stacked.items(), parts,
                                                                                  strict=True)}, updates)


def make_aggregator(kind: AggregatorKind, trim: float = DEFAULT_TRIM) -> Aggregator:
    if kind is AggregatorKind.TRIMMED_MEAN:
        return partial(trimmed_mean, trim=trim)
    return {AggregatorKind.FEDAVG: fedavg, AggregatorKind.MEDIAN: median,
            AggregatorKind.GEOMETRIC_MEDIAN: geometric_median}[kind]
