"""Coordinator cost per round with scripted no-op clients: latency, coordinator CPU, memory, and a soak.

    python benchmarks/coordinator.py                         # N = 10, 100, 500, 2000, then the 2,000-round soak
    python benchmarks/coordinator.py --sizes 10 100 --soak-rounds 0
    python benchmarks/coordinator.py --flower-python /path/to/venv/bin/python   # + Flower at N=10, same machine
    python benchmarks/coordinator.py --flower-secagg --flower-python /path/to/venv/bin/python   # secure vs plain
    python benchmarks/coordinator.py --against main --sizes 10 100   # working tree vs main, interleaved (guard)

A real `pfeddc-server` process (ViT-B/16 shapes, 16 text + 16 vision tokens: an 82 KB update) serves N
clients that do no training: asyncio clients on grpc.aio in a few worker processes, one channel each. Each
client holds GetTask open until it is sampled (push) and asks for its next task in the same SubmitUpdate,
so a round costs one call per client. `poll` rows are the same clients speaking the protocol of clients
that do not push (GetTask answered at once, sleep retry_after_s = 2 s, ask again): what every client did
before push, measured here on the same server. `threads` rows (--clients threads, and the default of --against):
the call pattern of issue 31, N client threads in one process, each GetFederation, Join, then GetTask held
for up to 30 s and SubmitUpdate of the global it was handed: two calls per client per round.

--against REV: the regression guard (compare_trees.py). The working tree's coordinator and REV's (checked out
in a temporary git worktree) run in turn, A B A B, the same clients against each; prints both trees' medians
and the ratio working tree / REV.

Measured: s/round from the commit times in rounds.jsonl (round 1 excluded), the coordinator's CPU-s per round
from /proc/<pid>/stat sampled every 20 ms, its peak RSS (VmHWM). The clients share the machine's cores with
the coordinator, so latency at large N includes their own CPU.

Floor: a gRPC server that does nothing but what every round needs from gRPC (N calls held until the last
arrives, then all answered; 82 KB each way), on grpc.aio (what pfeddc serves with) and on the threaded server
(what it served with before): the coordinator's CPU above the aio floor is pfeddc's own work.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import compare_trees
import numpy as np
import secure_rounds
from coordinator_runs import CLIENTS, SPEC, Run, _save, floor, flower, hardware, row, run, soak_rows

from pfeddc.common import serde


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="*", help="N (default: 10 100 500 2000; with --against: 10 100)")
    p.add_argument("--rounds", type=int,
                   help="rounds per size (round 1 excluded) (default: 12; with --against: 8)")
    p.add_argument("--clients", choices=list(CLIENTS),
                   help="push: asyncio clients that take their next task from SubmitUpdate, in --workers processes; "
                        "threads: issue 31's N threads in one process, GetTask held + SubmitUpdate (default: push; "
                        "with --against: threads)")
    p.add_argument("--against", nargs="?", const="HEAD", metavar="REV",
                   help="the regression guard: run the working tree's coordinator and REV's (default REV: HEAD) in "
                        "turn, --repeats times at each of --sizes, and print the ratio (compare_trees.py)")
    p.add_argument("--repeats", type=int, default=3, help="with --against: runs per tree and N (default: 3)")
    p.add_argument("--poll-sizes", type=int, nargs="*", default=[10, 100],
                   help="sizes also run with polling clients, for the push/poll ratio (default: 10 100)")
    p.add_argument("--soak-rounds", type=int, default=2000)
    p.add_argument("--soak-clients", type=int, default=100)
    p.add_argument("--workers", type=int, default=4, help="client processes (default: 4)")
    p.add_argument("--floor-rounds", type=int, default=8, help="rounds of the gRPC-only floor; 0: skip (default: 8)")
    p.add_argument("--flower-python", type=Path,
                   help="python of a virtualenv with flwr 1.42 installed: also run the workload on Flower at "
                        "--flower-clients, interleaved with pfeddc at the same N (flwr pins protobuf < 7, so it "
                        "cannot share pfeddc's environment)")
    p.add_argument("--flower-clients", type=int, default=10)
    p.add_argument("--flower-rounds", type=int, default=6)
    p.add_argument("--flower-secagg", action="store_true",
                   help="instead of the above: secure aggregation beside plain FedAvg per round, Flower's SecAgg+ "
                        "(needs --flower-python) at --secagg-sizes, written to --secagg-out (secure_rounds.py)")
    p.add_argument("--secagg-sizes", type=int, nargs="*", default=[10, 100])
    p.add_argument("--secagg-rounds", type=int, default=3, help="rounds per run, round 1 excluded (default: 3)")
    p.add_argument("--secagg-repeats", type=int, default=2,
                   help="(plain, secure) pairs per engine at N <= --flower-deploy-max (default: 2; 1 above)")
    p.add_argument("--flower-deploy-max", type=int, default=10,
                   help="largest N run on Flower's Deployment Engine; larger N run in-process only (default: 10)")
    p.add_argument("--flower-sparse-shares", nargs="*", default=["11"],
                   help="above --flower-deploy-max, also SecAgg+ with each of these share counts k (threshold "
                        "k // 2 + 1), the sparse graphs SecAgg+ is made for (default: 11)")
    p.add_argument("--secagg-out", type=Path, default=Path("benchmarks/results/secure_rounds.md"))
    p.add_argument("--out", type=Path,
                   help="(default: benchmarks/results/coordinator.md; with --against: print only)")
    args = p.parse_args(argv)
    if args.flower_secagg:
        return secure_main(args)
    if args.against:
        return compare_trees.main(args)
    args.sizes = [10, 100, 500, 2000] if args.sizes is None else args.sizes
    args.rounds, args.clients = args.rounds or 12, args.clients or "push"
    args.out = args.out or Path("benchmarks/results/coordinator.md")
    workdir = Path(tempfile.mkdtemp(prefix="pfeddc-bench-"))
    lines = ["# Coordinator cost per round (benchmarks/coordinator.py)", "", f"Hardware: {hardware()}", "",
             f"Update: {len(serde.encode({s.name: np.zeros(s.shape, np.float32) for s in SPEC}))} bytes "
             f"({', '.join(s.describe() for s in SPEC)}); scripted no-op clients, {args.workers} client processes.",
             "", "| N | clients | rounds | s/round median | s/round max | coordinator CPU-s/round | peak RSS MiB |",
             "|---:|---|---:|---:|---:|---:|---:|"]
    floors: list[str] = []
    print("\n".join(lines), flush=True)
    results: dict[tuple[int, str], Run] = {}
    size = len(serde.encode({s.name: np.zeros(s.shape, np.float32) for s in SPEC}))
    threads = args.clients == "threads"
    for n in args.sizes:
        workers = 1 if threads else min(args.workers, max(1, n // 5))
        for push in (True, False) if n in args.poll_sizes and not threads else (True,):
            r = run(n, args.rounds, push, workers, workdir, worker=CLIENTS[args.clients],
                    mode=args.clients if push else None)
            results[(n, r.mode)] = r
            lines.append(row(r))
            print(lines[-1], flush=True)
            _save(args.out, lines + floors)
        if args.floor_rounds:
            ours = statistics.median(results[(n, args.clients)].per_round(2, args.rounds)[1])
            for aio in (True, False):
                f = floor(n, args.floor_rounds, aio, workers, size, workdir)
                cpu = statistics.median(f.per_round(2, len(f.rounds))[1])
                floors.append(row(f) + f" {ours / cpu:.1f}x |")
                print(floors[-1], flush=True)
                _save(args.out, lines + floors)
    if floors:
        lines += ["", "gRPC-only floor (the same calls, holds and bytes; no federation):", "",
                  "| N | server | rounds | s/round median | s/round max | server CPU-s/round | peak RSS MiB | "
                  "pfeddc CPU / floor CPU |", "|---:|---|---:|---:|---:|---:|---:|---:|", *floors]
    ratios = []
    for n in args.poll_sizes:
        if (n, "push") in results and (n, "poll") in results:
            push_s = statistics.median(results[(n, "push")].per_round(2, args.rounds)[0])
            poll_s = statistics.median(results[(n, "poll")].per_round(2, args.rounds)[0])
            ratios.append(f"- N={n}: push rounds are {poll_s / push_s:.0f}x faster than polling rounds "
                          f"({push_s:.3f} s vs {poll_s:.3f} s median)")
    if ratios:
        lines += ["", *ratios]
        print("\n".join(["", *ratios]), flush=True)
    if args.flower_python:
        n = args.flower_clients
        runs: list[Run] = []
        for repeat in range(2):  # interleaved: pfeddc, Flower, pfeddc, Flower
            runs.append(run(n, args.rounds, True, min(args.workers, max(1, n // 5)), workdir))
            runs.append(flower(n, args.flower_rounds, args.flower_python,
                               Path(tempfile.mkdtemp(dir=workdir, prefix=f"flower{repeat}-"))))
        lines += ["", f"Flower 1.42 (Deployment Engine: SuperLink + {n} SuperNodes on loopback, insecure, FedAvg of "
                  "the same 82 KB arrays, no-op ClientApp), interleaved with pfeddc push at the same N:", "",
                  "| N | system | rounds | s/round median | s/round max | server CPU-s/round | peak RSS MiB |",
                  "|---:|---|---:|---:|---:|---:|---:|", *[row(r) for r in runs]]
        ours_s = statistics.median([s for r in runs if r.mode == "push" for s in r.per_round(2, len(r.rounds))[0]])
        flower_s = statistics.median([s for r in runs if r.mode == "flower" for s in r.per_round(2, len(r.rounds))[0]])
        lines += ["", f"- N={n}: pfeddc rounds are {flower_s / ours_s:.0f}x faster than Flower's "
                      f"({ours_s:.3f} s vs {flower_s:.3f} s median)"]
        print("\n".join(lines[-(len(runs) + 6):]), flush=True)
        _save(args.out, lines)
    if args.soak_rounds:
        soak = run(args.soak_clients, args.soak_rounds, True, min(args.workers, 2), workdir)
        lines += ["", f"Soak: {args.soak_rounds} rounds at N={args.soak_clients} (push)", "",
                  "| window | s/round mean | coordinator CPU-s/round mean | RSS MiB max |", "|---|---:|---:|---:|",
                  *soak_rows(soak)]
        print("\n".join(lines[-(len(soak_rows(soak)) + 4):]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"\nsaved {args.out}")
    return 0


def secure_main(args: argparse.Namespace) -> int:
    if not args.flower_python:
        raise SystemExit("--flower-secagg needs --flower-python")
    workdir = Path(tempfile.mkdtemp(prefix="pfeddc-secure-"))
    rows = secure_rounds.flower_rows(args.secagg_sizes, args.secagg_rounds, args.secagg_repeats,
                                     args.flower_deploy_max, args.flower_python, workdir, args.flower_sparse_shares)
    secure_rounds.save_section(args.secagg_out, secure_rounds.section(
        secure_rounds.FLOWER_TITLE, secure_rounds.FLOWER_METHOD, rows, hardware()))
    print("\n".join(secure_rounds.ratios(rows)), f"\nsaved {args.secagg_out}", sep="\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
