"""Per-tensor clipping adaptive to the round: no site moves any global tensor much more than an honest one.

One L2 bound over a whole update cannot bind tensors whose scales differ by orders of magnitude: an honest
round changes the text prompts by ~0.04 and the whole update by ~1.2, so a site could spend a bound of 10
on the text prompts alone and move them 120x an honest round. Here each update's change of tensor k is
clipped to `factor x s_k`, where s_k is the round's robust scale of that tensor's changes:

    s_k = median_i ||change_i,k||                         (a minority cannot move a median)
    s_k = min(s_k, HISTORY_GROWTH x s_k of the previous committed round)   when that is known and > 0

Tensors whose rows are the federation's classes (`CLASS_ROW_TENSORS` in common/spec.py: the class head's
residual) are bounded row by row, each row with its own s_k: a whole-tensor bound would let one site spend all
of it on one class, about sqrt(classes) times an honest site's move of that row. A row's s_k is not the median
but the second largest site's change of it, so no site moves a class row more than `factor` x the largest other
site's move: a row's honest changes are bimodal (the sites that hold the class, or confuse it, move it 100x more
than the others), and where fewer than half hold it the median is the others' level. That clipped the holders'
real steps to nothing, and one site joining the holders flipped the median into their mode: its pushes then
moved a row honest sites could not (33x the largest honest site's influence, benchmarks/results/attack_head.md).
The rule is the class statistics' pull cap (statistics.py): robust to one hostile site, not to two sampled in one
round, which vouch for each other (the row's history term and the whole-update clip then bound them). It is
floored at an even share of the whole tensor's lower median change (s_k / sqrt(rows)): where one site alone moves
a class (two sites, or a class one holds), the second largest is another site's near-zero change of it. So a site
moves a class row at most `factor` x the larger of the largest other site's move and that even share; on a row no
honest site moves (a class none of the round's sites holds) that is what a typical site moves a typical row, not
nothing. The lower median: of two sites the median is their mean, which one of them could raise.

The history term covers rounds of one or two updates, where a median is no defence (of two norms it is
their mean); it lets an honest scale double per round, which honest training never needs to exceed.
A site of weight w among W then moves tensor k by at most (w / W) x factor x s_k per round.

Not with differential privacy: a bound computed from the round's own updates depends on every client's data,
so one client changes everyone's clip and the sensitivity analysis (one fixed --dp-clip) no longer holds.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ...common.clip import clip_rows, l2, row_norms

DEFAULT_ADAPTIVE_CLIP = 2.0
HISTORY_GROWTH = 2.0

Changes = dict[str, dict[str, np.ndarray]]  # client -> tensor -> change from the global


@dataclass(frozen=True)
class TensorClip:
    bounds: dict[str, float]  # tensor -> the L2 bound applied to each update's change of it this round
    scale: dict[str, float]  # tensor -> this round's robust scale s_k (the next round's history term)
    clipped: dict[str, tuple[str, ...]]  # tensor -> clients whose change of it was scaled down


def round_scale(norms: Mapping[str, Mapping[str, float]], previous: Mapping[str, float],
                rows: frozenset[str] = frozenset()) -> dict[str, float]:
    """s_k for every unit from the round's change norms (client -> unit -> norm): the median over clients; for a
    row of a tensor in `rows`, the second largest (the only one, of one client), never below an even share of its
    tensor's lower median (/ sqrt(rows): a class one site alone moves keeps that site's step)."""
    units = sorted({k for per_client in norms.values() for k in per_client})
    row_count = Counter(_tensor_of(k, rows) for k in units if _row_of(k, rows))
    scale: dict[str, float] = {}
    floors: dict[str, float] = {}
    for k in sorted(units, key=lambda unit: _row_of(unit, rows)):  # whole tensors first: rows' floors need them
        values = sorted(per_client[k] for per_client in norms.values() if k in per_client)
        if _row_of(k, rows):
            tensor = _tensor_of(k, rows)
            s = max(values[-2] if len(values) > 1 else values[0], floors[tensor] / math.sqrt(row_count[tensor]))
        else:
            s = float(np.median(values))
        last = previous.get(k, 0.0)
        scale[k] = float(min(s, HISTORY_GROWTH * last) if last > 0 else s)
        if k in rows:  # its rows' floor from the lower median, which one site of two cannot raise (the median of
            floors[k] = min(values[(len(values) - 1) // 2], scale[k])  # two is their mean)
    return scale


def row_unit(tensor: str, row: int) -> str:
    """The name under which one class row of a row-bounded tensor keeps its scale (the next round's history)."""
    return f"{tensor}[{row}]"


def _tensor_of(unit: str, rows: frozenset[str]) -> str:
    """The tensor a unit belongs to: a row unit's tensor (one of `rows`), else the unit itself."""
    return unit.rsplit("[", 1)[0] if _row_of(unit, rows) else unit


def _row_of(unit: str, rows: frozenset[str]) -> bool:
    """Whether `unit` is one row of a tensor in `rows` (a tensor's own name is the unit of its whole change)."""
    return unit.endswith("]") and unit.rsplit("[", 1)[0] in rows


def _norms(changes: Changes, exempt: frozenset[str], rows: frozenset[str]) -> dict[str, dict[str, float]]:
    """client -> unit -> L2 norm of its change, a unit being a tensor, or one row of a tensor in `rows`."""
    out: dict[str, dict[str, float]] = {}
    for client, per_client in changes.items():
        norms = out[client] = {}
        for k, d in per_client.items():
            if k in exempt:
                continue
            if k in rows:
                norms.update({row_unit(k, i): float(n) for i, n in enumerate(row_norms(np.asarray(d)))})
            norms[k] = l2(d)
    return out


def clip_per_tensor(changes: Changes, factor: float, previous: Mapping[str, float],
                    exempt: frozenset[str] = frozenset(), rows: frozenset[str] = frozenset()
                    ) -> tuple[Changes, TensorClip]:
    """Each change of each tensor but the `exempt` ones scaled to L2 norm <= factor x s_k; each row of a tensor in
    `rows` (class rows) on its own instead, with its own s_k, so a site's bound on the tensor cannot all go to one
    class (the whole tensor's s_k only floors its rows': a whole-tensor median would be the bimodal one again). The
    inputs are not modified. The reported bound of a row-bounded tensor is its largest row's."""
    norms = _norms(changes, exempt, rows)
    scale = round_scale(norms, previous, rows)
    unit_bounds = {k: factor * s for k, s in scale.items()}
    bounds: dict[str, float] = {}
    for unit, bound in unit_bounds.items():
        if unit not in rows:
            tensor = _tensor_of(unit, rows)
            bounds[tensor] = max(bounds.get(tensor, 0.0), bound)
    out: Changes = {}
    clipped: dict[str, list[str]] = {k: [] for k in bounds}
    for client, per_client in sorted(changes.items()):
        out[client] = {}
        for k, d in per_client.items():
            if k in exempt:
                out[client][k] = d
                continue
            if k in rows:
                measured = np.array([norms[client][row_unit(k, i)] for i in range(len(d))])
                row_bounds = np.array([unit_bounds[row_unit(k, i)] for i in range(len(d))])
                if (measured > row_bounds).any():
                    clipped[k].append(client)
                    d = clip_rows(d, row_bounds, measured)
            else:
                n = norms[client][k]
                bound = unit_bounds[k]
                if n > bound:
                    clipped[k].append(client)
                    d = d * np.asarray(bound / n if n > 0 else 0.0, d.dtype)
            out[client][k] = d
    return out, TensorClip(bounds, scale, {k: tuple(v) for k, v in clipped.items() if v})
