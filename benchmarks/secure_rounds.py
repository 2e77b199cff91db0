"""Secure aggregation's cost per round beside plain FedAvg: Flower's SecAgg+ (pfeddc's secure mode: secure_pfeddc.py,
which writes its own section with `save_section`), the part of benchmarks/coordinator.py behind --flower-secagg.

    python benchmarks/coordinator.py --sizes --soak-rounds 0 --flower-secagg \\
        --flower-python "$PWD/.venv-flower/bin/python"      # the venv's own path, not the interpreter it links to

Flower 1.42 runs the app in benchmarks/flower_secagg: a no-op NumPyClient that returns the 82 KB arrays it
received, on Flower's legacy DefaultWorkflow with FedAvg, its fit stage either plain ("flower fedavg") or
SecAggPlusWorkflow ("flower secagg+": num_shares 1.0, so every node shares with every other, as in pfeddc's
protocol, reconstruction_threshold N // 2 + 1, Flower's defaults otherwise: clipping range 8, quantization
range 2^22, modulus 2^32), the ClientApp going through secaggplus_mod. Two engines:

- "deployment": SuperLink + N SuperNodes on loopback (coordinator.flower): Flower as deployed, with a
  ClientApp process started per message. s/round from the ServerApp's aggregation times; server CPU is the
  SuperLink's and its descendants' (the ServerApp's among them), as for the plain Flower rows.
- "in-process" (secaggfl/inproc.py): the same ServerApp and ClientApp in one process, the ClientApps called
  in turn, each message copied through Flower's own serialisation; for N where N SuperNodes (each a
  SuperNode and a SuperExec process, plus a ClientApp process per message) do not fit on 2 cores. s/round is
  that process's wall time (all N clients one after another); server CPU is the ServerApp's own work, the
  transport (the copies) excluded, so it is a lower bound on a SuperLink's; site CPU is the busiest node's.

Bytes per round: the serialised size of every object of every message the ServerApp sent and received
(Flower 1.42 ships a message as its objects: the message, its records, its arrays), counted inside the
ServerApp; the CPU spent counting is subtracted from the server's. Deployment rows also give the bytes sent on
loopback (/proc/net/dev, lo, machine-wide): that includes HTTP framing, polling, the SuperNode <-> ClientApp
hop (each message crosses loopback twice) and whatever else ran on the machine.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import coordinator_runs as coordinator
import numpy as np

APP = Path(__file__).resolve().parent / "flower_secagg"


@dataclass
class Row:
    n: int
    system: str  # "flower fedavg", "flower secagg+", "pfeddc push", "pfeddc secure"
    engine: str  # "deployment", "in-process", "gRPC"
    secs: list[float]  # per measured round (round 1 excluded)
    cpu: list[float]  # server CPU-s per round
    bytes: list[float]  # message bytes per round, both ways
    site_cpu: list[float] = field(default_factory=list)  # busiest site's CPU-s per round, where measured
    loopback: list[float] = field(default_factory=list)  # loopback bytes per round, where measured
    note: str = ""


def _med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _deltas(values: list[float]) -> list[float]:
    return [b - a for a, b in zip(values, values[1:], strict=False)]


def _label(secagg: bool, shares: str) -> str:
    if not secagg:
        return "flower fedavg"
    return "flower secagg+" if shares == "1.0" else f"flower secagg+ (k={shares})"


def _config(secagg: bool, shares: str) -> str:
    return f"secagg={'true' if secagg else 'false'} num-shares={shares}"


def deployment(n: int, rounds: int, secagg: bool, python: Path, workdir: Path, shares: str = "1.0") -> Row:
    wd = Path(tempfile.mkdtemp(dir=workdir, prefix=f"flower-dep-{n}-"))
    run = coordinator.flower(n, rounds, python, wd, timeout=3600, app=APP, config=_config(secagg, shares),
                             mode=_label(secagg, shares))
    lines = [json.loads(t) for t in (wd / "flower_round_times.txt").read_text().splitlines()]
    secs, cpus = run.per_round(2, len(run.rounds))
    meter = _deltas([x["meter_cpu"] for x in lines])
    sent = _deltas([float(x["down"] + x["up"]) for x in lines])
    times, lo = [t for t, _ in run.net], [b for _, b in run.net]
    loop = _deltas([float(np.interp(t, times, lo)) for t in run.rounds])
    return Row(n, run.mode, "deployment", secs, [c - m for c, m in zip(cpus, meter, strict=False)], sent,
               loopback=loop)


def inproc(n: int, rounds: int, secagg: bool, python: Path, workdir: Path, shares: str = "1.0") -> Row:
    wd = Path(tempfile.mkdtemp(dir=workdir, prefix=f"flower-inproc-{n}-"))
    times = wd / "times.jsonl"
    argv = [str(python), "-m", "secaggfl.inproc", "--nodes", str(n), "--rounds", str(rounds),
            "--num-shares", shares, "--times-file", str(times), *(["--secagg"] if secagg else [])]
    with open(wd / "inproc.log", "w") as log:
        subprocess.run(argv, cwd=APP, stdout=log, stderr=subprocess.STDOUT, check=True, timeout=7200)
    lines = [json.loads(t) for t in times.read_text().splitlines()]
    own = [json.loads(t) for t in Path(f"{times}.inproc").read_text().splitlines()][1:]  # round 1 excluded
    sent = _deltas([float(x["down"] + x["up"]) for x in lines])
    return Row(n, _label(secagg, shares), "in-process", [x["wall"] for x in own], [x["server_cpu"] for x in own],
               sent, site_cpu=[x["client_cpu_max"] for x in own])


def flower_rows(sizes: list[int], rounds: int, repeats: int, deploy_max: int, python: Path, workdir: Path,
                sparse: list[str], echo: bool = True) -> list[Row]:
    """Interleaved at each N: (fedavg, secagg+) x repeats on each engine, then fedavg once more. Sizes up to
    deploy_max run on both engines; larger ones in-process only, with secagg+ once (at N=100 a full-graph
    SecAgg+ round takes minutes of CPU) and then each sparse variant (num_shares k) once."""
    rows: list[Row] = []

    def add(row: Row) -> None:
        rows.append(row)
        if echo:
            print(format_row(row), flush=True)

    for n in sizes:
        engines = [deployment, inproc] if n <= deploy_max else [inproc]
        for engine in engines:
            for _ in range(repeats if n <= deploy_max else 1):
                add(engine(n, rounds, False, python, workdir))
                add(engine(n, rounds, True, python, workdir))
            for shares in sparse if n > deploy_max else []:
                add(engine(n, rounds, True, python, workdir, shares))
            add(engine(n, rounds, False, python, workdir))
    return rows


HEADER = ["| N | system | engine | rounds | s/round median | server CPU-s/round | busiest site CPU-s/round | "
          "bytes/round (messages) | loopback bytes/round |", "|---:|---|---|---:|---:|---:|---:|---:|---:|"]


def format_row(r: Row) -> str:
    site = f"{_med(r.site_cpu):.3f}" if r.site_cpu else ""
    loop = f"{_med(r.loopback):,.0f}" if r.loopback else ""
    return (f"| {r.n} | {r.system} | {r.engine} | {len(r.secs)} | {_med(r.secs):.3f} | {_med(r.cpu):.3f} | {site} | "
            f"{_med(r.bytes):,.0f} | {loop} |")


def ratios(rows: list[Row]) -> list[str]:
    """Secure / plain per (N, engine, system family), from the medians over every measured round of each."""
    out = []
    pairs = (("flower secagg+", "flower fedavg"), ("pfeddc secure", "pfeddc push"))
    for n in sorted({r.n for r in rows}):
        for engine in ("deployment", "in-process", "gRPC"):
            for secure, plain in pairs:
                base = [r for r in rows if (r.n, r.engine, r.system) == (n, engine, plain)]
                for name in sorted({r.system for r in rows if r.system.startswith(secure)}):
                    sec = [r for r in rows if (r.n, r.engine, r.system) == (n, engine, name)]
                    if not (base and sec):
                        continue
                    s0, s1 = (_med([s for r in g for s in r.secs]) for g in (base, sec))
                    c0, c1 = (_med([c for r in g for c in r.cpu]) for g in (base, sec))
                    b0, b1 = (_med([b for r in g for b in r.bytes]) for g in (base, sec))
                    out.append(f"- N={n}, {engine}: {name} / {plain}: {b1 / b0:.2f}x the bytes, {s1 - s0:+.2f} s "
                               f"per round ({s1:.3f} vs {s0:.3f} s), {c1 / c0:.1f}x the server CPU "
                               f"({c1:.3f} vs {c0:.3f} CPU-s)")
    return out


FLOWER_TITLE = "## Flower's SecAgg+ beside its plain FedAvg"
FLOWER_METHOD = [
    "Flower 1.42, benchmarks/flower_secagg: a no-op NumPyClient returning the 82 KB arrays it received (the "
    "plain Flower rows' arrays), on the legacy DefaultWorkflow with flwr.server.strategy.FedAvg; its fit stage "
    "plain (flower fedavg) or SecAggPlusWorkflow with secaggplus_mod on the clients (flower secagg+: "
    "num_shares 1.0, so every node shares with every other as in pfeddc's protocol, reconstruction_threshold "
    "N // 2 + 1; Flower's defaults otherwise: clipping range 8, quantization range 2^22, modulus 2^32, "
    "max_weight 1000). `(k=11)`: SecAgg+ as designed for large N, each node sharing with 10 neighbours, "
    "threshold 6.",
    "",
    "Engines: deployment = SuperLink + N SuperNodes on loopback (insecure), a ClientApp process started per "
    "message; s/round from the ServerApp's aggregation times, server CPU = the SuperLink and its descendants "
    "(SuperExec, ServerApp). in-process = the same ServerApp and ClientApp in one process (secaggfl/inproc.py), "
    "each message copied through Flower's own serialisation, the N ClientApps called one after another: s/round "
    "is that process's wall time (server and all N clients in turn, one core), server CPU the ServerApp's own "
    "work without the transport (a lower bound on a SuperLink's), busiest site = the node that spent the most "
    "CPU in the round. Round 1 excluded everywhere (SecAgg+ turns the global into float64 after it, doubling "
    "the download).",
    "",
    "Bytes: the serialised size of every object of every message the ServerApp sent and received (how Flower 1.42 "
    "ships a message: the message, its records, its arrays), counted in the ServerApp (that CPU subtracted from "
    "the server's). Loopback bytes: /proc/net/dev lo, transmitted, machine-wide over the round (HTTP framing, "
    "SuperNode polling, the SuperNode <-> ClientApp hop, so each message crosses twice, and other jobs' "
    "loopback traffic).",
]


def section(title: str, method: list[str], rows: list[Row], hardware: str) -> list[str]:
    return [title, "", f"Hardware: {hardware}", "", *method, "", *HEADER, *[format_row(r) for r in rows], "",
            *ratios(rows), ""]


def save_section(path: Path, lines: list[str]) -> None:
    """Write `lines` (a section starting with its '## ' title) into `path`, replacing that section if present."""
    old = path.read_text().splitlines() if path.exists() else ["# Secure aggregation per round (coordinator.py "
                                                               "--flower-secagg)", ""]
    title = lines[0]
    if title in old:
        start = old.index(title)
        end = next((i for i in range(start + 1, len(old)) if old[i].startswith("## ")), len(old))
        old = old[:start] + lines + old[end:]
    else:
        old = old + ([""] if old and old[-1] else []) + lines
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(old).rstrip("\n") + "\n")
