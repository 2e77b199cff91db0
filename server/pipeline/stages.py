"""The coordinator's path for an update, as a list of named stages; each stage is a small pure function.

Per update, outside the federation's lock (server/pipeline/updates.py), `(payload, ...) -> CheckedUpdate`:
    decode  size limit, safetensors header against the spec (the one spec check), values finite
    check   value magnitudes and metrics within their limits; class statistics an honest site could send
Per round, under the lock when the round closes (server/pipeline/combine.py), each `(Step, Rules) -> Step`:
    bound_classes  class statistics: each site's class means clipped, its weight and pull per class capped
    bound      per-tensor adaptive clip, then the whole-update clip (DP: its clip only)
    aggregate  the aggregator over the bounded changes (DP: their sum over the sampled count)
    noise      DP only: Gaussian noise calibrated to the clip
    commit     the next global, refused when not finite, encoded once (its bytes and hash serve the
               checkpoint and every task)

Secure aggregation (server/round/secure.py) replaces decode, check, bound, aggregate and noise: each site clips,
weights and noises its own change and the protocol unmasks only their sum; `combine_secure` divides it and
commits it through the same `commit` stage.

A new defence is one more function here in the list, not edits in the round logic.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import numpy as np

from ...common.messages import Metrics
from ...common.spec import TensorSpec
from . import statistics
from .combine import (
    ImpossibleAggregate,
    NonFiniteGlobal,
    Rules,
    Stage,
    Step,
    aggregate,
    bound,
    bound_classes,
    commit,
    noise,
    start,
)
from .updates import CheckedUpdate, UpdateLimits, check, decode

__all__ = ["ROUND_STAGES", "ImpossibleAggregate", "NonFiniteGlobal", "Rules", "Step", "accept", "combine",
           "combine_secure"]

ROUND_STAGES: tuple[Stage, ...] = (bound_classes, bound, aggregate, noise, commit)
# commit reads no rule; the protocol applied the bounds, the weights and the noise on the sites
SECURE_RULES = Rules(aggregate=lambda _updates: {})


def accept(payload: bytes, num_examples: int, metrics: Metrics, spec: list[TensorSpec], limits: UpdateLimits,
           digest: str) -> CheckedUpdate:
    """An update through the per-update stages, or `Refused` naming what is wrong with it."""
    return check(decode(payload, num_examples, metrics, spec, limits, digest), limits)


def combine(global_: Mapping[str, np.ndarray], updates: Mapping[str, tuple[Mapping[str, np.ndarray], float]],
            rules: Rules) -> Step:
    """The round's updates (client -> (tensors, weight)) through the round stages: `.committed` is the next
    global. Raises `NonFiniteGlobal` when it is not finite."""
    step = start(global_, updates)
    for stage in ROUND_STAGES:
        step = stage(step, rules)
    return step


def combine_secure(global_: Mapping[str, np.ndarray], total: Mapping[str, np.ndarray], denominator: float,
                   check_statistics: bool = True) -> Step:
    """A secure round: the unmasked sum of the survivors' bounded (and, under DP, noised) weighted changes over
    `denominator` (their total weight; under DP the sampled count), committed. Class statistics that no set of
    honest sites could have summed to (`check_statistics`: without DP noise) are projected onto ones that could
    (server/pipeline/statistics.py `project`), and `.projected` says which relation they broke. Raises
    `NonFiniteGlobal`, or `ImpossibleAggregate` if the projection did not hold."""
    step = Step(global_, {}, {}, change={name: np.asarray(t, np.float64) / denominator for name, t in total.items()})
    step = commit(step, SECURE_RULES)
    problem = statistics.check_aggregate(step.tensors) if check_statistics else None
    if not problem:
        return step
    fixed = statistics.project(step.tensors)
    change = {name: np.asarray(fixed[name], np.float64) - np.asarray(global_[name], np.float64) if name in fixed
              else c for name, c in (step.change or {}).items()}
    step = commit(Step(global_, {}, {}, change=change), SECURE_RULES)
    remaining = statistics.check_aggregate(step.tensors)
    if remaining:
        raise ImpossibleAggregate(f"the unmasked aggregate is not what honest sites could send: {problem}; "
                                  f"projected, still: {remaining}")
    return replace(step, projected=problem)
