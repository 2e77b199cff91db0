"""Where the coordinator's CPU per push round goes, by adding pfeddc's layers to the gRPC-only floor one at a time.

    python benchmarks/coordinator_ladder.py                    # N = 100, 3 interleaved repeats
    python benchmarks/coordinator_ladder.py --sizes 10 100 500 --repeats 5

Each rung is a grpc.aio server answering the same call pattern as benchmarks/coordinator.py's push clients and its
floor (N calls held until the last arrives, then all answered; 82 KB each way, ViT-B/16 shapes), and does what the
rung it builds on does plus one thing pfeddc does per call:
  0 floor          raw bytes in, raw bytes out (coordinator.py's aio floor)
  1 messages       on 0: the request parsed as an UpdateRequest, the answer an UpdateReply carrying the next
                   TaskReply, built by common/wire.py from a Task with its training settings
  2 decode         on 1: what the coordinator does to each update before the round takes it (the resubmit digest,
                   the safetensors decode against the spec, the metrics, bounds and magnitude checks), on the event
                   loop, as server/wire/servicer.py does for an update up to INLINE_UPDATE_BYTES
  2t decode, hop   on 1: the same on a worker thread (asyncio.to_thread), as the servicer does above that size and
                   did for every update before 2026-12-08
  pfeddc           on 2: the real coordinator (`pfeddc-server`, coordinator.py's push clients): the rest is the
                   federation (authentication, the round's bookkeeping and close, FedAvg and clipping, the
                   checkpoint, the log)
The rungs run in turn (0 1 2 2t pfeddc, then again), so drift on a shared machine spreads over all of them.
Reported: each rung's median coordinator CPU-s per round (rounds 2.., /proc), what it adds to the rung it builds
on, and its ratio to the floor.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from coordinator_runs import (  # noqa: E402
    SPEC,
    Run,
    _noop_metrics,
    _save,
    hardware,
    run,
    serve_raw,
)

from pfeddc.common import serde, wire  # noqa: E402
from pfeddc.common.messages import Action, SubmitResult, Task, TrainSettings  # noqa: E402
from pfeddc.common.proto import federation_pb2 as pb  # noqa: E402
from pfeddc.server.pipeline import updates  # noqa: E402

RUNGS = ("0 floor", "1 messages", "2 decode", "2t decode, hop")
BUILDS_ON = {"1 messages": "0 floor", "2 decode": "1 messages", "2t decode, hop": "1 messages", "pfeddc": "2 decode"}
_METHOD = "/bench.Ladder/Round"
RESULTS = Path(__file__).resolve().parent / "results"


def _update_bytes() -> tuple[bytes, bytes]:
    """(the global's safetensors bytes, a serialized UpdateRequest carrying them), as push clients send it."""
    payload = serde.encode({s.name: np.full(s.shape, 0.01, np.float32) for s in SPEC})
    request = pb.UpdateRequest(client_id="site-00000", round=1, global_state=payload, num_examples=100,
                               metrics=_noop_metrics(), next_task_wait_s=30.0)
    return payload, request.SerializeToString()


def _rung_server(port_q: Any, n: int, rung: int, times: str) -> None:
    payload, _ = _update_bytes()
    spec = list(SPEC)
    limits = updates.UpdateLimits()

    def released() -> None:
        with open(times, "a") as fh:
            fh.write(f"{time.time()}\n")

    def take(request: Any) -> None:  # rungs 2 and 2t: what the coordinator does to an update
        digest = serde.resubmit_digest(request.global_state)
        metrics = wire.metrics_from_proto(request.metrics)
        updates.check(updates.decode(request.global_state, request.num_examples, metrics, spec, limits, digest),
                      limits)

    async def serve() -> None:
        arrived, events, round_ = [0], [asyncio.Event()], [1]

        async def held(raw: bytes, _context: Any) -> bytes:
            request = pb.UpdateRequest.FromString(raw) if rung >= 1 else None
            if rung == 2:
                take(request)
            elif rung == 3:
                await asyncio.to_thread(take, request)
            arrived[0] += 1
            event = events[0]
            if arrived[0] >= n:
                arrived[0], events[0] = 0, asyncio.Event()
                round_[0] += 1
                released()
                event.set()
            else:
                await asyncio.wait_for(event.wait(), 60)
            if rung == 0:
                return payload
            task = Task(Action.TRAIN, round_[0], 10_000, payload, "", TrainSettings(), deadline_s=600.0)
            return wire.submit_to_proto(SubmitResult(False, n, n, task)).SerializeToString()

        handler = grpc.method_handlers_generic_handler(
            "bench.Ladder", {"Round": grpc.unary_unary_rpc_method_handler(held)})
        server = grpc.aio.server(options=[("grpc.max_receive_message_length", 64 << 20),
                                          ("grpc.max_send_message_length", 64 << 20)])
        server.add_generic_rpc_handlers([handler])
        port_q.put(server.add_insecure_port("127.0.0.1:0"))
        await server.start()
        await server.wait_for_termination()

    asyncio.run(serve())


def rung_run(clients: int, rung: int, rounds: int, workers: int, workdir: Path) -> Run:
    """One run of a rung, measured like coordinator_runs.floor (`workers` must divide `clients`)."""
    return serve_raw(_rung_server, (clients, rung), RUNGS[rung], clients, rounds, workers, workdir, _METHOD,
                     _update_bytes()[1])


def per_round(r: Run) -> tuple[float, float]:
    """(median CPU-s, median s) per round of a run, round 1 excluded."""
    secs, cpus = r.per_round(2, len(r.rounds))
    return statistics.median(cpus), statistics.median(secs)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[100], help="N (default: 100)")
    p.add_argument("--rounds", type=int, default=12, help="rounds per run, round 1 excluded (default: 12)")
    p.add_argument("--repeats", type=int, default=3, help="runs of each rung and N, interleaved (default: 3)")
    p.add_argument("--workers", type=int, default=4, help="client processes (default: 4)")
    p.add_argument("--out", type=Path, default=RESULTS / "coordinator_ladder.md")
    args = p.parse_args(argv)
    lines = ["# Coordinator CPU per push round, rung by rung (benchmarks/coordinator_ladder.py)", "",
             f"Hardware: {hardware()}", "",
             f"{args.repeats} interleaved runs per rung, {args.rounds} rounds each (round 1 excluded); CPU-s per round "
             "of the server process from /proc, the median of the runs' medians.", "",
             "| N | rung | s/round | CPU-s/round of each run | CPU-s/round | adds to the rung it builds on "
             "| x the floor |",
             "|---:|---|---:|---|---:|---:|---:|"]
    names = [*RUNGS, "pfeddc"]
    with tempfile.TemporaryDirectory(prefix="pfeddc-ladder-") as tmp:
        for n in args.sizes:
            workers = max(1, min(args.workers, n))
            while n % workers:
                workers -= 1
            per: dict[str, list[float]] = {name: [] for name in names}
            secs: dict[str, list[float]] = {name: [] for name in names}
            for repeat in range(args.repeats):
                for i, name in enumerate(names):
                    measured = rung_run(n, i, args.rounds + 1, workers, Path(tmp)) if i < len(RUNGS) else \
                        run(n, args.rounds + 1, True, workers, Path(tmp))
                    cpu, sec = per_round(measured)
                    per[name].append(cpu)
                    secs[name].append(sec)
                    print(f"N={n} run {repeat + 1} {name}: {cpu:.4f} CPU-s, {sec:.4f} s per round", flush=True)
            medians = {name: statistics.median(v) for name, v in per.items()}
            floor = medians[RUNGS[0]]
            for name in names:
                below = BUILDS_ON.get(name)
                added = f"{medians[name] - medians[below]:+.4f} (on {below.split()[0]})" if below else ""
                lines.append(f"| {n} | {name} | {statistics.median(secs[name]):.4f} | "
                             f"{' '.join(f'{v:.4f}' for v in per[name])} | {medians[name]:.4f} | {added} | "
                             f"{medians[name] / floor:.2f}x |")
            _save(args.out, lines)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
