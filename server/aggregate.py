"""FedAvg over the global prompts: pure functions, no I/O."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def fedavg(updates: Sequence[tuple[Mapping[str, np.ndarray], int]]) -> dict[str, np.ndarray]:
    """Average of the tensors weighted by each update's example count, accumulated in float64.

    Every update must carry the same names and shapes (the servicer validated them against the spec).
    """
    if not updates:
        raise ValueError("fedavg needs at least one update")
    names = sorted(updates[0][0])
    total = 0
    for tensors, weight in updates:
        if weight <= 0:
            raise ValueError(f"example counts must be positive, got {weight}")
        if sorted(tensors) != names:
            raise ValueError(f"updates disagree on tensor names: {sorted(tensors)} vs {names}")
        total += weight
    result = {}
    for name in names:
        acc = np.zeros(updates[0][0][name].shape, dtype=np.float64)
        for tensors, weight in updates:
            if tensors[name].shape != acc.shape:
                raise ValueError(f"tensor {name!r}: shape {tensors[name].shape} differs from {acc.shape}")
            acc += tensors[name].astype(np.float64) * (weight / total)
        result[name] = acc.astype(updates[0][0][name].dtype)
    return result
