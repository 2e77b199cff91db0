"""benchmarks/attack_head.py's attacks under secure aggregation, where the coordinator sees only the unmasked sum:
one hostile site among 5 pushing the class head's residual rows (`--method pfeddc`), or poisoning its class
statistics (`--method pfeddc-noresidual`, what a secure federation runs by default).

    python benchmarks/attack_head_secure.py                               # the residual's runs (a few minutes)
    python benchmarks/attack_head_secure.py --method pfeddc-noresidual    # the secure default's runs
    python benchmarks/attack_head_secure.py --report-only                 # the table of the recorded runs

The same federation, attacks and report as attack_head.py (Fashion-MNIST, Dirichlet 0.5 over 5 sites, embedded
backbone, 20 rounds, seed 0), each round combined by the secure round's own arithmetic: the coordinator's
per-attempt plan (server/round/secure.py `settings`: weights, clips), the change norms each site reports with its
keys and the bounds they set (server/round/secure_bounds.py `SumBounds`), each honest site's clipped, weighted
change (client/secure.py `change_vector`), the unmasked sum held to what its survivors could send honestly
(`SumBounds.hold`, as `SecureRun.total`) and the commit (server/pipeline/combine.py `combine_secure`, as
`closing.secure_state`). Not run: the masks, keys and shares (they cancel exactly: tests/common/secagg), the field's
quantisation (error ~1e-8). rows:<c>: the hostile site masks any vector the field can carry, which the sum cannot
tell from an honest one: every coordinate of the attacked classes' residual rows pushed 40 against the class's
mean, bias -40 (the decoded sum holds +-clip x sites per coordinate, 50 here: common/secagg/field.py), and a change
norm of 10^6 reported for every bounded tensor (its report moves each tensor's median one rank up). poison:<c>: it
follows the protocol (its norms, its clips, its weight) with attack_head.py's poisoned statistics as its update.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy import prepare  # noqa: E402
from attack import ATTACKER, SETTING  # noqa: E402
from attack_head import COUNTS, RESIDUAL, class_means, cli, held, poison, targets  # noqa: E402
from inproc import _client_seed  # noqa: E402

from pfeddc.client.model.backbone import load_backbone  # noqa: E402
from pfeddc.client.model.prompts import PFedDCModel, StatePart  # noqa: E402
from pfeddc.client.model.train import evaluate  # noqa: E402
from pfeddc.client.secure import change_norms, change_vector  # noqa: E402
from pfeddc.client.trainer import LocalTrainer  # noqa: E402
from pfeddc.common.messages import TrainSettings  # noqa: E402
from pfeddc.common.secagg.exchange import flatten, segments, unflatten, vector_length  # noqa: E402
from pfeddc.common.spec import METHODS, SECURE_DEFAULT_METHOD, PromptConfig, class_rows, initial_prompts  # noqa: E402
from pfeddc.server.pipeline.stages import combine_secure  # noqa: E402
from pfeddc.server.pipeline.statistics import STRUCTURED  # noqa: E402
from pfeddc.server.round.config import FederationConfig  # noqa: E402
from pfeddc.server.round.secure_bounds import SumBounds  # noqa: E402
from pfeddc.server.round.secure_plan import settings as secure_plan  # noqa: E402

PUSH = 40.0  # each coordinate of the hostile site's masked input on an attacked row (the field carries +-50)


def hostile_vector(global_: dict[str, np.ndarray], classes: list[int], spec: list[Any]) -> np.ndarray:
    """The attacked classes' residual rows pushed against each class's shared mean, nothing else changed."""
    change = {s.name: np.zeros(s.shape) for s in spec}
    means = class_means(global_)
    for c in classes:
        length = float(np.linalg.norm(means[c]))
        away = -means[c] / length if length > 1e-6 else np.random.default_rng(c).normal(size=means.shape[1])
        change[RESIDUAL][c, :-1] = PUSH * np.sign(away)
        change[RESIDUAL][c, -1] = -PUSH
    return flatten(change, spec)


def run(name: str, rounds: int, seed: int, method: str) -> dict[str, Any]:
    started = time.monotonic()
    backbone = load_backbone("embedded")
    classnames, clients, _ = prepare(SETTING, seed, backbone)
    aims = targets(clients, len(classnames))
    quiet = name.split(":", 1)[1] if name.startswith("null:") else (ATTACKER if name == "null" else None)
    attacked = aims[name.split(":", 1)[1]] if name.startswith("rows:") else None
    poisoning = poison(aims[name.split(":", 1)[1]]) if name.startswith("poison:") else None
    hostile = attacked is not None or poisoning is not None
    cfg = PromptConfig(classes=tuple(classnames), method=method)
    models = {cid: PFedDCModel(backbone, classnames, cfg, seed=_client_seed(seed, cid)) for cid in clients}
    spec = next(iter(models.values())).spec
    config = FederationConfig(rounds=rounds, min_clients=len(clients), seed=seed, train=TrainSettings(),
                              secure_aggregation=True)
    trainers = {cid: LocalTrainer(models[cid], split.train, split.test, torch.device("cpu"))
                for cid, split in clients.items()}
    counts = {cid: len(split.train) for cid, split in clients.items()}
    sampled = sorted(clients)
    bounded = tuple(sorted(s.name for s in spec if s.name not in STRUCTURED))
    parts = {k: v for k, v in segments(spec).items() if k in bounded}
    global_ = dict(initial_prompts(spec, seed))
    previous: dict[str, float] = {}
    for round_ in range(1, rounds + 1):
        plan = secure_plan(config, 1, sampled, counts, vector_length(spec), bounded)
        sums = SumBounds(config.adaptive_clip, config.update_clip_norm, previous, parts, class_rows(spec))
        updates = {}
        for cid in sampled:
            if cid == ATTACKER and attacked is not None:
                sums.keep(cid, dict.fromkeys(bounded, 1e6))
                continue
            if cid == quiet:  # sends the global back: a change of zero
                updates[cid] = dict(global_)
            elif cid == ATTACKER and poisoning is not None:  # follows the protocol, its statistics poisoned
                updates[cid] = poisoning(round_, global_)
            else:
                outcome = trainers[cid].run(dict(global_), config.settings_for(round_, cid), round_=round_)
                assert outcome.tensors is not None, outcome.failure
                updates[cid] = outcome.tensors
            sums.keep(cid, change_norms(global_, updates[cid], plan[cid]))
        clips = sums.announce(sampled)
        total = np.zeros(vector_length(spec))
        for cid, update in updates.items():
            total += plan[cid].weight * change_vector(global_, update, spec, plan[cid], clips)
        if attacked is not None:
            total += hostile_vector(global_, attacked, spec)  # its field elements, not a weighted change
        weights = [plan[c].weight for c in sampled]
        whole = sum(plan[c].weight * plan[c].clip_norm for c in sampled)
        held_total = sums.hold(total, weights, whole, 0.0)
        combined = combine_secure(global_, unflatten(held_total, spec), sum(weights), check_statistics=True)
        global_ = {k: np.asarray(v, np.float32) for k, v in combined.tensors.items()}
        previous = dict(sums.scale)
    accuracy = {}
    for cid, model in models.items():
        if cid == ATTACKER and hostile:
            continue
        model.load_state(global_, StatePart.GLOBAL)
        accuracy[cid] = evaluate(model, clients[cid].test, torch.device("cpu"))
    return {"run": name, "seed": seed, "rounds": rounds, "accuracy": accuracy, "targets": aims,
            "held": held(clients, len(classnames)).tolist(), "means": class_means(global_).tolist(),
            "counts": global_[COUNTS].astype(float).tolist(),
            "residual": global_[RESIDUAL].astype(float).tolist() if RESIDUAL in global_ else None,
            "wall_s": round(time.monotonic() - started, 1)}


def main(argv: list[str] | None = None) -> int:
    return cli(argv, __doc__ or "", run, lambda method: "rows:even,rows:concentrated,rows:all"
               if METHODS[method].residual else "poison:even,poison:concentrated,poison:all", "attack_head_secure",
               f"pfeddc (with the residual: its rows:<c> runs) or {SECURE_DEFAULT_METHOD}, what a secure federation "
               "runs by default (poison:<c> runs only)", ", secure rounds")


if __name__ == "__main__":
    sys.exit(main())
