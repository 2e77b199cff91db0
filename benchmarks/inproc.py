"""A whole federation in one process, for the accuracy benchmark: the coordinator's real round logic
(server/round/federation.py: sampling, validation, clipping, FedAvg) and the clients' real round work
(client/trainer.py), called directly instead of over gRPC so a 2-core machine can run hundreds of them.
The transport is exercised by the integration tests and pfeddc-sim; the arithmetic here is the same.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np
import torch

from pfeddc.client.connection import global_tensors
from pfeddc.client.model.backbone import Backbone
from pfeddc.client.model.images import ImageSet
from pfeddc.client.model.prompts import PFedDCModel, StatePart
from pfeddc.client.model.train import evaluate
from pfeddc.client.trainer import LocalTrainer
from pfeddc.common import serde
from pfeddc.common.messages import Action, Metrics, TrainSettings
from pfeddc.common.spec import PromptConfig, initial_prompts
from pfeddc.server.pipeline.privacy import DpSettings
from pfeddc.server.round.federation import Federation, FederationConfig, FederationState


@dataclass
class ClientSplit:
    train: ImageSet
    val: ImageSet
    test: ImageSet


# A hostile site: (round, the global it was handed) -> the tensors it submits instead of training.
Attack = Callable[[int, dict[str, np.ndarray]], dict[str, np.ndarray]]


class Observer(Protocol):
    """Watches a federation as it runs (benchmarks/privacy.py's membership attacks): what the coordinator sees."""

    def update(self, round_: int, cid: str, received: dict[str, np.ndarray], sent: dict[str, np.ndarray]) -> None:
        """A site's update of the round (the global tensors it sends), and the global it was handed."""

    def committed(self, round_: int, before: dict[str, np.ndarray], after: dict[str, np.ndarray]) -> None:
        """The round's new global (`after`) and the one before it."""

    def finished(self, models: dict[str, PFedDCModel], final_global: dict[str, np.ndarray]) -> None:
        """Each site's personalized model (the final global loaded) after the federation."""


@dataclass
class RunResult:
    final: dict[str, float]  # personalized test accuracy per training client
    final_global: dict[str, float]  # the final global prompts alone, per training client
    val: float  # mean personalized validation accuracy (what the learning rate is chosen on)
    new_clients: dict[str, dict[str, float]]  # never trained: global alone, then after one local epoch
    rounds: list[dict[str, Any]]  # per round: accuracies and how far each global tensor moved
    failures: list[str]  # rounds a client reported as diverged or collapsed
    global_moved: dict[str, float]  # L2 norm of (final - initial) per global tensor
    wall_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def run_federation(backbone: Backbone, classnames: list[str], clients: dict[str, ClientSplit], method: str,
                   settings: TrainSettings, rounds: int, seed: int, fraction: float = 1.0,
                   new_clients: dict[str, ClientSplit] | None = None, prompt: PromptConfig | None = None,
                   dp: DpSettings | None = None, attackers: dict[str, Attack] | None = None,
                   overrides: dict[str, Any] | None = None, device_name: str = "cpu",
                   observer: Observer | None = None) -> RunResult:
    """`attackers`: client ids (among `clients`) that submit what their attack returns instead of training;
    they are left out of the accuracies. `overrides`: FederationConfig fields to override (e.g. clipping).
    `observer`: told each update, each committed global and the final models."""
    started = time.monotonic()
    cfg = replace(prompt or PromptConfig(classes=tuple(classnames)), method=method)  # the sim names them too
    device = torch.device(device_name)
    models = {cid: PFedDCModel(backbone, classnames, cfg, seed=_client_seed(seed, cid)).to(device) for cid in clients}
    spec = next(iter(models.values())).spec
    initial = initial_prompts(spec, seed)
    config = FederationConfig(rounds=rounds, min_clients=len(clients), fraction=fraction, seed=seed,
                              train=settings, round_timeout_s=1e9, dp=dp, **(overrides or {}))
    fed = Federation(config, spec, FederationState(1, dict(initial), {}))
    trainers = {cid: LocalTrainer(models[cid], split.train, split.test, device) for cid, split in clients.items()}
    for cid, split in clients.items():
        fed.join(cid, len(split.train), spec)
    history: list[dict[str, Any]] = []
    failures: list[str] = []
    while not fed.finished:
        before = fed.global_tensors
        round_ = fed.round
        accuracies, global_accuracies, seconds = [], [], []
        for cid in sorted(clients):
            task = fed.task(cid)
            if task.action != Action.TRAIN or task.round != round_:  # not sampled, or the round already closed
                continue
            if cid in (attackers or {}):
                sent = (attackers or {})[cid](round_, global_tensors(task))
                fed.submit(cid, round_, serde.encode(sent), len(clients[cid].train), Metrics())
                continue
            outcome = trainers[cid].run(global_tensors(task), task.settings or settings, round_=task.round)
            if outcome.tensors is None:
                failures.append(f"round {round_} {cid}: {outcome.failure}")
                fed.report_failure(cid, round_, outcome.reason, outcome.failure or "")
                continue
            fed.submit(cid, round_, serde.encode(outcome.tensors), len(clients[cid].train), outcome.metrics)
            if observer is not None:
                observer.update(round_, cid, before, outcome.tensors)  # `before`: the global the task carries
            accuracies.append(outcome.metrics.accuracy_after)
            global_accuracies.append(outcome.metrics.accuracy_global)
            seconds.append(outcome.metrics.train_seconds)
        after = fed.global_tensors
        if observer is not None and fed.last_round is not None and fed.last_round.round == round_:  # committed
            observer.committed(round_, before, after)
        history.append({"round": round_, "accuracy_after": _mean(accuracies),
                        "accuracy_global": _mean(global_accuracies), "trained": len(accuracies),
                        "seconds": _mean(seconds),  # a site's round of work, mean over the sites that trained
                        "global_change": {k: float(np.linalg.norm(after[k] - before[k])) for k in sorted(after)},
                        "clipped_tensors": fed.last_round.to_json()["clipped_tensors"] if fed.last_round else {}})
    final_global = fed.global_tensors
    final, final_alone, val = {}, {}, []
    for cid, model in models.items():
        if cid in (attackers or {}):
            continue
        model.load_state(final_global, StatePart.GLOBAL)
        final[cid] = evaluate(model, clients[cid].test, device)
        val.append(evaluate(model, clients[cid].val, device))
        with model.global_only():
            final_alone[cid] = evaluate(model, clients[cid].test, device)
    if observer is not None:
        observer.finished({cid: m for cid, m in models.items() if cid not in (attackers or {})}, final_global)
    newcomers = {}
    for cid, split in (new_clients or {}).items():
        model = PFedDCModel(backbone, classnames, cfg, seed=_client_seed(seed, cid)).to(device)
        model.load_state(final_global, StatePart.GLOBAL)
        alone = evaluate(model, split.test, device)
        outcome = LocalTrainer(model, split.train, split.test, device).run(final_global, replace(settings, seed=seed))
        newcomers[cid] = {"global": alone, "one_epoch": outcome.metrics.accuracy_after}
    moved = {k: float(np.linalg.norm(final_global[k] - initial[k])) for k in sorted(final_global)}
    return RunResult(final, final_alone, _mean(val), newcomers, history, failures, moved,
                     wall_s=round(time.monotonic() - started, 1))


def _client_seed(seed: int, cid: str) -> int:
    return (seed * 1_000_003 + sum(ord(c) * 31**i for i, c in enumerate(cid))) % 2**31


def _mean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan
