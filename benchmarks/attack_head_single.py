"""A class only one site holds, against the class rows' floor (server/pipeline/clipping.py): that site's honest step
on the class's residual row, and what it does when it turns hostile and pushes the row up for everyone's images.

    python benchmarks/attack_head_single.py      # 2 federations of 20 rounds (~30 s on 2 cores)

attack_head.py's federation (Fashion-MNIST, Dirichlet 0.5 over 5 sites, embedded backbone, `--method pfeddc`, seed
0), with one class removed from the other four sites' training, validation and test images, so site 5 alone holds
it. honest: site 5 trains. promote: site 5 sends the global statistics back and pushes that class's residual row as
far as the values allow toward the images' mean feature (every coordinate +100 along it, bias +100): every site's
images pulled toward a class none of them holds. Printed: the other four sites' accuracy and the row's final norm.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy import prepare  # noqa: E402
from attack import ATTACKER, SETTING  # noqa: E402
from attack_head import COUNTS, RESIDUAL, SUMS, FinalGlobal  # noqa: E402
from inproc import ClientSplit, run_federation  # noqa: E402

from pfeddc.client.model.backbone import load_backbone  # noqa: E402
from pfeddc.client.model.images import ImageSet  # noqa: E402
from pfeddc.common.logs import configure_logging  # noqa: E402
from pfeddc.common.messages import TrainSettings  # noqa: E402
from pfeddc.common.spec import RESIDUAL_RANGE  # noqa: E402

SINGLE = 4  # the class only site 5 keeps (coat)


def without(images: ImageSet, label: int) -> ImageSet:
    keep = images.labels != label
    return ImageSet(images.images[keep], images.labels[keep])


def promote(_round: int, global_: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The global back, with SINGLE's residual row pushed toward the mean feature of every image, bias at the top."""
    residual = global_[RESIDUAL].astype(np.float64).copy()
    overall = global_[SUMS].astype(np.float64).sum(0) / max(float(global_[COUNTS].astype(np.float64).sum()), 1e-12)
    residual[SINGLE, :-1] = np.clip(residual[SINGLE, :-1] + RESIDUAL_RANGE[1] * np.sign(overall), *RESIDUAL_RANGE)
    residual[SINGLE, -1] = RESIDUAL_RANGE[1]
    return {**global_, RESIDUAL: residual.astype(np.float32)}


def run(name: str) -> dict[str, Any]:
    backbone = load_backbone("embedded")
    classnames, clients, _ = prepare(SETTING, 0, backbone)
    for cid, split in list(clients.items()):
        if cid != ATTACKER:
            clients[cid] = ClientSplit(without(split.train, SINGLE), without(split.val, SINGLE),
                                       without(split.test, SINGLE))
    final = FinalGlobal()
    result = run_federation(backbone, classnames, clients, "pfeddc", TrainSettings(), 20, 0,
                            attackers={ATTACKER: promote} if name == "promote" else {}, observer=final)
    others = [a for cid, a in result.final.items() if cid != ATTACKER]
    return {"run": name, "others_accuracy": float(np.mean(others)),
            "row_norm": float(np.linalg.norm(final.tensors[RESIDUAL][SINGLE])), "wall_s": result.wall_s}


def main() -> int:
    torch.set_num_threads(1)
    configure_logging("json", "error")
    print(f"# A class only site 5 holds ({os.cpu_count()}-core {platform.machine()} CPU, torch {torch.__version__}, "
          "1 thread)\n\n| site 5 | the other sites' accuracy | the class's residual row, final norm |\n|---|---:|---:|")
    for name in ("honest", "promote"):
        r = run(name)
        print(f"| {name} | {100 * r['others_accuracy']:.1f}% | {r['row_norm']:.3f} |", flush=True)
        print(json.dumps(r), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
