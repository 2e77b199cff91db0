"""The class head (the shipped `pfeddc`) on accuracy.py's Fashion-MNIST settings, one seed, printed.

    python benchmarks/accuracy_head.py dir0.5 dir0.1 fewshot [--seeds 0,1,2] [--method pfeddc-noresidual]

accuracy.py chooses each method's learning rate on a grid and records its runs; the class head has no learning
rate to choose (its shared part is computed, its personal probe uses Adam), so this runs it directly on the same
splits (accuracy.prepare), in process (benchmarks/inproc.py), and prints mean / worst client / global alone.
README's Fashion-MNIST table quotes it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy import ROUNDS, SETTINGS, prepare, train_settings  # noqa: E402
from inproc import run_federation  # noqa: E402

from pfeddc.client.model.backbone import load_backbone  # noqa: E402
from pfeddc.common.spec import PromptConfig  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("settings", nargs="+", choices=list(SETTINGS))
    p.add_argument("--seeds", default="0", help="comma list (default: 0)")
    p.add_argument("--method", default="pfeddc", help="the shipped head or one of its ablations "
                   "(e.g. pfeddc-noresidual)")
    args = p.parse_args(argv)
    backbone = load_backbone("embedded")
    for name in args.settings:
        for seed in (int(s) for s in args.seeds.split(",")):
            classnames, clients, new = prepare(SETTINGS[name], seed, backbone)
            started = time.monotonic()
            result = run_federation(backbone, classnames, clients, args.method, train_settings(0.1), ROUNDS, seed,
                                    new_clients=new or None, prompt=PromptConfig(classes=tuple(classnames)))
            acc = list(result.final.values())
            print(f"{args.method} {name:8s} seed {seed} mean {100 * statistics.fmean(acc):5.1f} worst "
                  f"{100 * min(acc):5.1f} global {100 * statistics.fmean(result.final_global.values()):5.1f} "
                  f"failures {len(result.failures)} ({time.monotonic() - started:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
