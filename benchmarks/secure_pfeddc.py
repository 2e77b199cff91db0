"""pfeddc's secure aggregation beside its plain push FedAvg, per round, over real gRPC: the pfeddc rows of
results/secure_rounds.md, next to Flower's (secure_rounds.py).

    python benchmarks/secure_pfeddc.py                     # N = 10 and 100: plain, secure, plain; 4 rounds each
    python benchmarks/secure_pfeddc.py --sizes 10 --rounds 3

A real `pfeddc-server` process (coordinator.run: ViT-B/16 shapes, an 82 KB update) serves N scripted sites
that do no training: threads in a few worker processes, each site a `pfeddc.client.connection.Connection` of
its own (one channel), decoding the global it is sent and returning it plus a fixed small change. `pfeddc
push` sites submit with the next task awaited in the same call; `pfeddc secure` sites (`--secure-aggregation`)
send their update through `pfeddc.client.secure.contribute` (keys, shares, check, masked input, reveal: five
held SecureAggregate calls, the last of which also carries their next task).

Measured: s/round from the commit times in rounds.jsonl and the coordinator's CPU-s per round from /proc (as
coordinator.py does), round 1 excluded; bytes per round = the `ByteSize()` of every protobuf request and reply
of every site (counted in a wrapper around `Connection._stub`, a request when sent, a reply when received,
each into the round whose commits bracket it); busiest site = the most thread CPU-s a site spent in a round,
from receiving its task to receiving the next (decoding the global, the protocol, its protobuf and gRPC calls).
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import coordinator_runs as coordinator
import numpy as np
import secure_rounds
from secure_rounds import Row

from pfeddc.client.connection import Backoff, Connection, global_tensors
from pfeddc.client.peer_keys import PinnedKeys
from pfeddc.client.secure import contribute
from pfeddc.common.logs import configure_logging
from pfeddc.common.messages import Action, Metrics

HOLD_S = 30.0
COUNT = 100
METRICS = Metrics(train_loss=1.0, accuracy_before=0.5, accuracy_after=0.5, num_test_examples=10)
TITLE = "## pfeddc's secure aggregation beside its plain push FedAvg (gRPC)"
GOAL_BYTES, GOAL_S = 2.0, 1.0  # the goal: at most 2x the bytes and +1 s per round


class CountingStub:
    """The Coordinator stub, logging (time, method, request bytes, reply bytes) of every call's protobufs."""

    def __init__(self, stub: Any, log: list[tuple[float, str, int, int]]) -> None:
        self._stub, self._log = stub, log

    def __getattr__(self, method: str) -> Any:
        real = getattr(self._stub, method)

        def call(request: Any, **kwargs: Any) -> Any:
            self._log.append((time.time(), method, request.ByteSize(), 0))
            reply = real(request, **kwargs)
            self._log.append((time.time(), method, 0, reply.ByteSize()))
            return reply

        return call


def _site(target: str, client_id: str, secure: bool, log: list[tuple[float, str, int, int]],
          cpu: list[tuple[int, float]], failures: list[str]) -> None:
    conn = Connection(target, client_id, backoff=Backoff(0.2, 2.0, 20), rpc_timeout_s=120)
    conn._stub = CountingStub(conn._stub, log)  # type: ignore[assignment]  # counts what the site sends
    rng = np.random.default_rng(sum(map(ord, client_id)))
    delta = {s.name: rng.normal(0, 1e-3, s.shape).astype(np.float32) for s in coordinator.SPEC}
    conn.join(COUNT, coordinator.SPEC)
    pins = PinnedKeys(Path(f"/nonexistent/{client_id}/peer_keys.json"))  # checks and pins as a daemon (never saved)
    task = conn.task(wait_s=HOLD_S)
    while task.action != Action.FINISHED:
        if task.action != Action.TRAIN:
            task = conn.task(wait_s=HOLD_S)
            continue
        start, round_ = time.thread_time(), task.round
        base = global_tensors(task)
        update = {k: base[k] + delta[k] for k in base}
        if secure:
            assert task.secure is not None, task
            outcome = contribute(conn, task.secure, round_, base, update, coordinator.SPEC, COUNT, verifier=pins)
            if not outcome.committed:
                failures.append(f"{client_id} round {round_}: {outcome.reason}")
            task = outcome.next_task or conn.task(wait_s=HOLD_S)  # the reveal's call carries it (as the daemon's)
        else:
            reply = conn.submit(round_, update, COUNT, METRICS, next_task_wait_s=HOLD_S)
            task = reply.next_task or conn.task(wait_s=HOLD_S)
        cpu.append((round_, time.thread_time() - start))
    conn.close()


def _sites(target: str, ids: list[str], push: bool, secure: bool, outdir: str) -> None:
    """One worker process: a thread per site; writes its calls' bytes and its sites' CPU to outdir."""
    assert push
    configure_logging(level="warning")  # not a line per site and round
    log: list[tuple[float, str, int, int]] = []
    cpu: dict[str, list[tuple[int, float]]] = {c: [] for c in ids}
    failures: list[str] = []
    threads = [threading.Thread(target=_site, args=(target, c, secure, log, cpu[c], failures)) for c in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    Path(outdir, f"{ids[0]}.json").write_text(json.dumps({"log": log, "cpu": cpu, "failures": failures}))


def run(n: int, rounds: int, secure: bool, workers: int, workdir: Path) -> tuple[Row, Counter[str], list[float]]:
    """One federation of `rounds` rounds: its row, its measured rounds' bytes per RPC method, and the CPU-s all
    its sites spent in each measured round."""
    outdir = tempfile.mkdtemp(dir=workdir, prefix=f"sites-{n}-")
    flags = ("--secure-aggregation",) if secure else ()
    r = coordinator.run(n, rounds, True, workers, workdir, flags,
                        functools.partial(_sites, secure=secure, outdir=outdir))
    if len(r.rounds) != rounds:
        raise RuntimeError(f"N={n} secure={secure}: {len(r.rounds)} of {rounds} rounds committed")
    secs, cpus = r.per_round(2, rounds)
    parts = [json.loads(p.read_text()) for p in Path(outdir).glob("*.json")]
    if len(parts) != workers:
        raise RuntimeError(f"{workers - len(parts)} worker processes failed: see their output above")
    calls = [c for p in parts for c in p["log"]]
    per_round, methods = [], Counter[str]()
    for first, last in zip(r.rounds, r.rounds[1:], strict=False):
        inside = [c for c in calls if first < c[0] <= last]
        per_round.append(float(sum(c[2] + c[3] for c in inside)))
        for c in inside:
            methods[c[1]] += c[2] + c[3]
    site_cpu = [max((s for p in parts for site in p["cpu"].values() for rnd, s in site if rnd == k), default=0.0)
                for k in range(2, rounds + 1)]
    all_sites = [sum(s for p in parts for site in p["cpu"].values() for rnd, s in site if rnd == k)
                 for k in range(2, rounds + 1)]
    failures = [f for p in parts for f in p["failures"]]
    row = Row(n, "pfeddc secure" if secure else "pfeddc push", "gRPC", secs, cpus, per_round, site_cpu=site_cpu,
              note=f"{len(failures)} sites not counted: {failures[:3]}" if failures else "")
    return row, methods, all_sites


def goals(rows: list[Row]) -> list[str]:
    """Per N: the secure rows' pooled medians against those of the plain runs around them, vs the issue's goal."""
    out = []
    for n in sorted({r.n for r in rows}):
        plain = [r for r in rows if r.n == n and r.system == "pfeddc push"]
        secure = [r for r in rows if r.n == n and r.system == "pfeddc secure"]
        if not (plain and secure):
            continue
        s0, s1 = (statistics.median([s for r in g for s in r.secs]) for g in (plain, secure))
        b0, b1 = (statistics.median([b for r in g for b in r.bytes]) for g in (plain, secure))
        met = b1 / b0 <= GOAL_BYTES and s1 - s0 <= GOAL_S
        out.append(f"- N={n}: goal (at most {GOAL_BYTES:g}x the bytes, +{GOAL_S:g} s per round) "
                   f"{'met' if met else 'missed'}: {b1 / b0:.2f}x, {s1 - s0:+.2f} s")
    return out


def detail_lines(breakdown: dict[tuple[int, str], tuple[Counter[str], list[float]]]) -> list[str]:
    """Per (N, system), over the measured rounds of all its runs: the bytes by RPC, all sites' CPU per round."""
    out = []
    for (n, system), (methods, site_cpu) in sorted(breakdown.items()):
        total = sum(methods.values())
        parts = ", ".join(f"{m} {v / total:.0%}" for m, v in methods.most_common())
        out.append(f"- N={n}, {system}: {parts} of the bytes; all {n} sites together "
                   f"{statistics.median(site_cpu):.3f} CPU-s/round (median)")
    return out


METHOD = [
    "A real `pfeddc-server` (`--model openai/clip-vit-base-patch16 --method pfeddc-prompts --text-ctx 16 "
    "--vision-tokens 16`: an 82 KB float32 update, the plain Flower rows' arrays) on loopback, insecure, serving "
    "N scripted sites that do no training: threads in a few worker processes (2 at N=10, 4 at N=100) on the same "
    "2 cores, each site a `pfeddc.client.connection.Connection` (one gRPC channel) that decodes and verifies the "
    "global it is sent and returns it plus a fixed small change. pfeddc push: `SubmitUpdate` with the next task "
    "awaited in the same call (one call per site per round). pfeddc secure (`--secure-aggregation`, threshold N "
    "// 2 + 1, field 2^32, every site sharing with every other): `pfeddc.client.secure.contribute` (keys, shares,"
    " check, masked input, reveal: five SecureAggregate calls, each held until its stage closes; the reveal's "
    "held on until the next round opens and carries its task, as `SubmitUpdate` does in push mode).",
    "",
    "s/round: commit times in rounds.jsonl; server CPU: the coordinator process (/proc/<pid>/stat, 20 ms "
    "samples); round 1 excluded. Bytes: the protobuf `ByteSize()` of every request and reply of every site "
    "(a wrapper around `Connection._stub`: a request counted when sent, a reply when received, each into the "
    "round whose commits bracket it), both ways, without gRPC/HTTP2 framing. Busiest site: the most thread CPU-s "
    "one site spent in a round, from receiving its task to receiving the next (decoding the global, the "
    "protocol's keys, shares and masks, its protobuf and gRPC calls). The N sites share the 2 cores with the "
    "coordinator, so s/round includes all N sites' CPU one after another, which a real federation (a machine "
    "per site) does not pay.",
]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="*", default=[10, 100])
    p.add_argument("--rounds", type=int, default=4, help="rounds per run, round 1 excluded (default: 4)")
    p.add_argument("--repeats", type=int, default=1, help="(plain, secure) pairs per N, then plain (default: 1)")
    p.add_argument("--workers", type=int, default=4, help="site processes at most (default: 4)")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/secure_rounds.md"))
    args = p.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="pfeddc-secure-"))
    rows: list[Row] = []
    breakdown: dict[tuple[int, str], tuple[Counter[str], list[float]]] = {}
    for n in args.sizes:
        workers = min(args.workers, max(1, n // 5))
        for secure in [False, True] * args.repeats + [False]:  # interleaved: plain, secure, ..., plain
            row, methods, site_cpu = run(n, args.rounds, secure, workers, workdir)
            rows.append(row)
            seen = breakdown.setdefault((n, row.system), (Counter(), []))
            seen[0].update(methods)
            seen[1].extend(site_cpu)
            print(secure_rounds.format_row(row), row.note, flush=True)
    lines = secure_rounds.section(TITLE, METHOD, rows, coordinator.hardware())
    extra = [*goals(rows), "", "Bytes by RPC and the sites' CPU:", "", *detail_lines(breakdown), ""]
    notes = [f"- {r.n} {r.system}: {r.note}" for r in rows if r.note]
    secure_rounds.save_section(args.out, [*lines, *extra, *notes])
    print("\n".join([*secure_rounds.ratios(rows), *extra, *notes]), f"saved {args.out}", sep="\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
