"""What the class head's per-site bounds cost the coordinator per round (server/pipeline/statistics.py).

    python benchmarks/class_bounds.py            # N = 10, 30, 100 sites x C = 10, 64 classes, 512 features

Each row times, on the same synthetic statistics (label mixes from Dirichlet 1.0, class means of norm 0.8 in
random directions, the global their mean), side by side in one run:
  fedavg          the floor: the weighted mean of the sites' counts and sums (what the round computes anyway)
  bound_classes   the four rules as shipped (server/pipeline/statistics.py)
  + moments       the rules, then each capped or clipped site's second moment moved with its statistics
                  (server/pipeline/combine.py moment_moved: P x P work per such site); "moved" counts them
Median of 5 repeats, seconds per round, and the ratio. Single-threaded numpy. To compare with another commit,
check its statistics.py out over this one, run again, and restore it (results/class_bounds.md did so).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics as stats
import sys
import time
from collections.abc import Callable

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from pfeddc.server.pipeline import statistics  # noqa: E402
from pfeddc.server.pipeline.combine import moment_moved  # noqa: E402

Statistics = dict[str, tuple[np.ndarray, np.ndarray]]


def synthetic(sites: int, classes: int, width: int, seed: int = 0) -> tuple[Statistics, dict[str, float],
                                                                            tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = {}
    for i in range(sites):
        counts = rng.dirichlet(np.ones(classes))
        sums = rng.normal(size=(classes, width))
        sums *= (0.8 * counts / np.linalg.norm(sums, axis=1))[:, None]
        out[f"site-{i:03d}"] = (counts, sums)
    weights = {c: float(rng.integers(20, 400)) for c in out}
    total = sum(weights.values())
    base_counts = np.sum([weights[c] * out[c][0] for c in out], axis=0) / total
    base_sums = np.sum([weights[c] * out[c][1] for c in out], axis=0) / total
    return out, weights, (base_counts, base_sums)


def fedavg(sites: Statistics, weights: dict[str, float], _base: object) -> None:
    total = sum(weights.values())
    sum(weights[c] * sites[c][0] for c in sites) / total
    sum(weights[c] * sites[c][1] for c in sites) / total


def bound(sites: Statistics, weights: dict[str, float], base: tuple[np.ndarray, np.ndarray]) -> None:
    statistics.bound_classes(sites, weights, base)


def moment_of(counts: np.ndarray, sums: np.ndarray) -> np.ndarray:
    """A second moment these statistics could come with: their class means' part plus an isotropic scatter."""
    held = counts > 0
    means = np.zeros_like(sums)
    means[held] = sums[held] / counts[held, None]
    between = (means.T * counts) @ means
    return between + np.eye(len(between)) * ((counts.sum() - np.trace(between)) / len(between))


def bound_and_move(sites: Statistics, weights: dict[str, float], base: tuple[np.ndarray, np.ndarray],
                   moments: dict[str, np.ndarray]) -> int:
    bounded = statistics.bound_classes(sites, weights, base)
    moved = set(bounded.capped) | set(bounded.clipped)
    for client in moved:
        moment_moved(moments[client], *sites[client], *bounded.statistics[client])
    return len(moved)


def seconds(fn: Callable[..., object], *args: object, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - started)
    return stats.median(times)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sites", type=int, nargs="+", default=[10, 30, 100])
    p.add_argument("--classes", type=int, nargs="+", default=[10, 64])
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    print(f"# Class-bound stage per round ({platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}, numpy {np.__version__}, 1 thread, {args.width} features)\n")
    print("| sites | classes | fedavg s | bound_classes s | + moments s | moved | bound_classes / fedavg | "
          "+ moments / bound_classes |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n in args.sites:
        for c in args.classes:
            data = synthetic(n, c, args.width)
            moments = {client: moment_of(*values) for client, values in data[0].items()}
            floor, bounded = (seconds(fn, *data, repeats=args.repeats) for fn in (fedavg, bound))
            with_moments = seconds(bound_and_move, *data, moments, repeats=args.repeats)
            moved = bound_and_move(*data, moments)
            print(f"| {n} | {c} | {floor:.4f} | {bounded:.4f} | {with_moments:.4f} | {moved} | "
                  f"{bounded / floor:.0f}x | {with_moments / bounded:.1f}x |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
