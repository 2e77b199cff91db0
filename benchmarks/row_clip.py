"""What bounding the residual's class rows one by one costs the coordinator per round, this tree against another.

    python benchmarks/row_clip.py                  # against e81e421 (the per-row median), N = 10, 30, 100 x C = 10, 64
    python benchmarks/row_clip.py --against REV

Times server/pipeline/clipping.py `clip_per_tensor` on the same synthetic round, side by side in one run: N sites'
changes of the class head's residual [C, 513] (each row's norm drawn so that a few sites move each class far more
than the others, as honest rounds do), three ways:
  whole tensor  the tensor bounded as one unit (rows=()): the floor, what any per-tensor bound costs
  REV           the per-row rule of REV's clipping.py (read with `git show`, run from memory)
  this tree     the shipped per-row rule
Median of 7 repeats, seconds per round, and the ratios.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import types
from pathlib import Path

import numpy as np

from pfeddc.server.pipeline import clipping

sys.path.insert(0, str(Path(__file__).resolve().parent))
from class_bounds import seconds  # noqa: E402

NAME = "head.residual.global"
ROOT = Path(__file__).resolve().parent.parent


def at(rev: str) -> types.ModuleType:
    """REV's clipping.py as a module (its package-relative imports read from the installed package)."""
    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:server/pipeline/clipping.py"], check=True,
                            capture_output=True, text=True).stdout
    module = types.ModuleType(f"clipping_{rev}")
    module.__dict__["__package__"] = "pfeddc.server.pipeline"
    sys.modules[module.__name__] = module  # dataclasses look their module up
    exec(compile(source, f"{rev}:clipping.py", "exec"), module.__dict__)
    return module


def synthetic(sites: int, classes: int, seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = {}
    for i in range(sites):
        d = rng.normal(0, 1, (classes, 513))
        holds = rng.random(classes) < 0.3  # a site moves the classes it holds ~100x more than the others
        d *= (np.where(holds, 0.3, 0.003) / np.sqrt(np.square(d).sum(1)))[:, None]
        out[f"site-{i:03d}"] = {NAME: d.astype(np.float32)}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--against", default="e81e421")
    p.add_argument("--sites", type=int, nargs="+", default=[10, 30, 100])
    p.add_argument("--classes", type=int, nargs="+", default=[10, 64])
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args(argv)
    other = at(args.against)
    rows = frozenset({NAME})
    print(f"# The residual's per-row bound per round: this tree against {args.against}\n\n{platform.machine()}, "
          f"{os.cpu_count()} cores ({platform.processor() or 'cpu'}), Python {platform.python_version()}, "
          f"numpy {np.__version__}; median of {args.repeats}\n")
    print(f"| sites | classes | whole tensor s | {args.against} s | this tree s | this tree / {args.against} | "
          "this tree / whole tensor |\n|---:|---:|---:|---:|---:|---:|---:|")
    for n in args.sites:
        for c in args.classes:
            changes = synthetic(n, c)
            whole = seconds(clipping.clip_per_tensor, changes, 2.0, {}, frozenset(), frozenset(), repeats=args.repeats)
            before = seconds(other.clip_per_tensor, changes, 2.0, {}, frozenset(), rows, repeats=args.repeats)
            now = seconds(clipping.clip_per_tensor, changes, 2.0, {}, frozenset(), rows, repeats=args.repeats)
            print(f"| {n} | {c} | {whole:.4f} | {before:.4f} | {now:.4f} | {now / before:.2f}x | {now / whole:.1f}x |",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
