"""The coordinator benchmark's machinery: a real `pfeddc-server` process, scripted no-op clients, the gRPC-only
floor, Flower's SuperLink, and what a run measured. The command is benchmarks/coordinator.py; the regression
guard (compare_trees.py) and the secure-round benchmarks (secure_rounds.py, secure_pfeddc.py) run the same
machinery.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.request
from collections.abc import Callable, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from pfeddc.common import serde, wire
from pfeddc.common.backbones import HUB_DEFAULT_MODEL, KNOWN_BACKBONES
from pfeddc.common.messages import Metrics
from pfeddc.common.proto import federation_pb2 as pb
from pfeddc.common.proto import federation_pb2_grpc as pb_grpc
from pfeddc.common.spec import PromptConfig, global_spec

PROMPT = PromptConfig(method="pfeddc-prompts", text_ctx=16, vision_tokens=16)
SPEC = global_spec(KNOWN_BACKBONES[HUB_DEFAULT_MODEL], PROMPT)
SERVER_FLAGS = ["--model", HUB_DEFAULT_MODEL, "--method", "pfeddc-prompts", "--text-ctx", "16",
                "--vision-tokens", "16"]
HOLD_S = 30.0
TICK = os.sysconf("SC_CLK_TCK")
CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 64 << 20)]


# ----- scripted clients (worker processes)
_TRANSIENT = (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE)


async def _retrying(call: Any) -> Any:
    """Await `call()`, again after a short sleep when it fails transiently: with thousands of connections
    opened at once gRPC cancels a few calls (seen on the threaded server too); every call here is idempotent."""
    for attempt in range(10):
        try:
            return await call()
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in _TRANSIENT or attempt == 9:
                raise
            await asyncio.sleep(0.2 * (attempt + 1))


async def _client(target: str, client_id: str, push: bool, payload: bytes, metrics: pb.Metrics) -> int:
    async with grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) as ch:
        stub = pb_grpc.CoordinatorStub(ch)
        join = pb.JoinRequest(client_id=client_id, num_examples=100, spec=wire.spec_to_proto(SPEC))
        await _retrying(lambda: stub.Join(join))
        wait = HOLD_S if push else 0.0
        ask = pb.TaskRequest(client_id=client_id, max_wait_s=wait)
        task = await _retrying(lambda: stub.GetTask(ask))
        rounds = 0
        while task.action != pb.TaskReply.FINISHED:
            if task.action == pb.TaskReply.TRAIN:
                update = pb.UpdateRequest(client_id=client_id, round=task.round, global_state=payload,
                                          num_examples=100, metrics=metrics, next_task_wait_s=wait)
                reply = await _retrying(lambda u=update: stub.SubmitUpdate(u))
                rounds += 1
                if reply.HasField("next_task"):
                    task = reply.next_task
                    continue
            elif task.retry_after_s > 0:
                await asyncio.sleep(task.retry_after_s)
            task = await _retrying(lambda: stub.GetTask(ask))
        return rounds


def _noop_metrics() -> pb.Metrics:
    return wire.metrics_to_proto(Metrics(train_loss=1.0, accuracy_before=0.5, accuracy_after=0.5,
                                         num_test_examples=10, train_seconds=0.0))


async def _clients(target: str, ids: list[str], push: bool) -> list[int]:
    payload = serde.encode({s.name: np.full(s.shape, 0.01, np.float32) for s in SPEC})
    metrics = _noop_metrics()
    return await asyncio.gather(*(_client(target, c, push, payload, metrics) for c in ids))


def _worker(target: str, ids: list[str], push: bool) -> None:
    asyncio.run(_clients(target, ids, push))


# ----- the call pattern of issue 31: client threads in one process, GetTask held, SubmitUpdate of the global
def _thread_site(target: str, client_id: str, metrics: pb.Metrics) -> None:
    try:
        with grpc.insecure_channel(target, options=CHANNEL_OPTIONS) as ch:
            stub = pb_grpc.CoordinatorStub(ch)
            stub.GetFederation(pb.FederationRequest(client_id=client_id))
            stub.Join(pb.JoinRequest(client_id=client_id, num_examples=100, spec=wire.spec_to_proto(SPEC)))
            ask = pb.TaskRequest(client_id=client_id, max_wait_s=HOLD_S)
            while (task := stub.GetTask(ask)).action != pb.TaskReply.FINISHED:
                if task.action == pb.TaskReply.TRAIN:
                    stub.SubmitUpdate(pb.UpdateRequest(client_id=client_id, round=task.round, num_examples=100,
                                                       global_state=task.global_state, metrics=metrics))
                elif task.retry_after_s > 0:
                    time.sleep(task.retry_after_s)
    except BaseException:  # one site short and the others wait for it forever: fail the whole run now
        traceback.print_exc()
        os._exit(1)


def _thread_worker(target: str, ids: list[str], push: bool) -> None:
    """One thread per client id (`push` is ignored: these clients ask for their next task with GetTask)."""
    metrics = _noop_metrics()
    threads = [threading.Thread(target=_thread_site, args=(target, c, metrics), daemon=True) for c in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


CLIENTS: dict[str, Callable[[str, list[str], bool], None]] = {"push": _worker, "threads": _thread_worker}


# ----- the floor: gRPC alone, the same calls and bytes, no federation
_ECHO = "/bench.Floor/Round"


def _floor_server(port_q: Any, n: int, size: int, aio: bool, times: str) -> None:
    payload = b"x" * size

    def released() -> None:  # the round's commit time, like rounds.jsonl's
        with open(times, "a") as fh:
            fh.write(f"{time.time()}\n")

    options = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]
    if not aio:
        cond, state = threading.Condition(), {"n": 0, "gen": 0}

        def held(_request: bytes, _context: Any) -> bytes:
            with cond:
                state["n"] += 1
                gen = state["gen"]
                if state["n"] >= n:
                    state["n"], state["gen"] = 0, gen + 1
                    released()
                    cond.notify_all()
                else:
                    cond.wait_for(lambda: state["gen"] != gen, 60)
            return payload

        handler = grpc.method_handlers_generic_handler(
            "bench.Floor", {"Round": grpc.unary_unary_rpc_method_handler(held)})
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=n + 32), options=options)
        server.add_generic_rpc_handlers([handler])
        port_q.put(server.add_insecure_port("127.0.0.1:0"))
        server.start()
        server.wait_for_termination()
        return

    async def serve() -> None:
        arrived, events = [0], [asyncio.Event()]

        async def held_async(_request: bytes, _context: Any) -> bytes:
            arrived[0] += 1
            event = events[0]
            if arrived[0] >= n:
                arrived[0], events[0] = 0, asyncio.Event()
                released()
                event.set()
            else:
                await asyncio.wait_for(event.wait(), 60)
            return payload

        handler = grpc.method_handlers_generic_handler(
            "bench.Floor", {"Round": grpc.unary_unary_rpc_method_handler(held_async)})
        server = grpc.aio.server(options=options)
        server.add_generic_rpc_handlers([handler])
        port_q.put(server.add_insecure_port("127.0.0.1:0"))
        await server.start()
        await server.wait_for_termination()

    asyncio.run(serve())


async def _raw_clients(target: str, n: int, rounds: int, method: str, request: bytes) -> None:
    """N channels, each calling `method` with the raw bytes `request` `rounds` times in a row."""
    channels = [grpc.aio.insecure_channel(target, options=[("grpc.max_receive_message_length", 64 << 20)])
                for _ in range(n)]
    calls = [ch.unary_unary(method, request_serializer=None, response_deserializer=None) for ch in channels]

    async def one(call: Any) -> None:
        for _ in range(rounds):
            await _retrying(lambda: call(request))

    await asyncio.gather(*(one(c) for c in calls))


def _raw_worker(target: str, n: int, rounds: int, method: str, request: bytes) -> None:
    asyncio.run(_raw_clients(target, n, rounds, method, request))


def serve_raw(server: Callable[..., None], args: tuple[Any, ...], mode: str, clients: int, rounds: int, workers: int,
              workdir: Path, method: str, request: bytes) -> Run:
    """`server(port_q, *args, times_path)` in a process of its own (it puts its port on port_q and appends each
    round's commit time to times_path), served by `workers` processes of `clients // workers` raw-bytes clients
    each (`workers` must divide `clients`); measured like `run`."""
    ctx = multiprocessing.get_context("spawn")
    port_q = ctx.Queue()
    times = Path(tempfile.mkstemp(dir=workdir, prefix="raw-")[1])
    process = ctx.Process(target=server, args=(port_q, *args, str(times)))
    process.start()
    assert process.pid is not None
    pid, target = process.pid, f"127.0.0.1:{port_q.get(timeout=60)}"
    try:
        procs = [ctx.Process(target=_raw_worker, args=(target, clients // workers, rounds, method, request))
                 for _ in range(workers)]
        for p in procs:
            p.start()
        cpu, rss = [], []
        while any(p.is_alive() for p in procs):
            now = time.time()
            cpu.append((now, _cpu_s(pid)))
            rss.append((now, _memory_kib(pid)[0]))
            time.sleep(0.02)
        if any(p.exitcode for p in procs):
            raise RuntimeError(f"a client process of the {mode!r} run failed (see above)")
        commits = [float(t) for t in times.read_text().split()]
        return Run(clients, mode, commits, cpu, rss, _memory_kib(pid)[1])
    finally:
        process.terminate()


def floor(clients: int, rounds: int, aio: bool, workers: int, size: int, workdir: Path) -> Run:
    """The gRPC-only floor, measured like `run` (`workers` must divide `clients`)."""
    return serve_raw(_floor_server, (clients, size, aio), "aio floor" if aio else "threaded floor", clients, rounds,
                     workers, workdir, _ECHO, b"y" * size)


# ----- Flower (optional): the same no-op workload on Flower's Deployment Engine, on this machine
FLOWER_APP = Path(__file__).resolve().parent / "flower_noop"
_FLOWER_CONFIG = """[superlink]
default = "local"

[superlink.local]
address = "127.0.0.1:8000"
insecure = true
"""


def _wait_listening(port: int, timeout: float = 60.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listens on port {port}")


def _tree_cpu_s(pid: int) -> float:
    """CPU seconds of `pid` and its live descendants (the SuperLink starts a SuperExec, which starts the
    ServerApp), and of the descendants that already exited and were waited for (cutime, cstime)."""
    parent: dict[int, int] = {}
    spent: dict[int, float] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            child = int(stat.parent.name)
            parent[child] = int(fields[1])
            spent[child] = sum(int(f) for f in fields[11:15]) / TICK
        except (OSError, IndexError, ValueError):
            continue
    total, frontier = spent.get(pid, _cpu_s(pid)), [pid]
    while frontier:
        kids = [c for c, p in parent.items() if p in frontier]
        total += sum(spent[c] for c in kids)
        frontier = kids
    return total


def loopback_bytes() -> int:
    """Bytes sent on the loopback interface so far, machine-wide (/proc/net/dev, lo, transmit)."""
    for line in Path("/proc/net/dev").read_text().splitlines():
        name, _, counters = line.partition(":")
        if name.strip() == "lo":
            return int(counters.split()[8])
    return 0


def flower(clients: int, rounds: int, python: Path, workdir: Path, timeout: float = 900.0, app: Path = FLOWER_APP,
           config: str = "", mode: str = "flower") -> Run:
    """SuperLink + `clients` SuperNodes on loopback (insecure), `flwr run` of the no-op `app` (run-config
    `config` added); commit times come from the ServerApp's aggregation of each round (one float or one JSON
    object with "time" a line); CPU is the SuperLink's and its descendants' (the ServerApp among them)."""
    home, times = workdir / "flwr-home", workdir / "flower_round_times.txt"
    home.mkdir(exist_ok=True)
    (home / "config.toml").write_text(_FLOWER_CONFIG)
    bindir, log = python.parent, open(workdir / "flower.log", "w")  # noqa: SIM115 (closed below)
    # the SuperLink and SuperNodes start Flower's other executables by name
    env = {**os.environ, "FLWR_HOME": str(home), "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"}
    procs = [subprocess.Popen([str(bindir / "flower-superlink"), "--insecure"], env=env, stdout=log, stderr=log)]

    def commits() -> list[float]:
        lines = times.read_text().splitlines() if times.exists() else []
        return [json.loads(t)["time"] if t.startswith("{") else float(t) for t in lines if t.strip()]

    try:
        link = procs[0]
        _wait_listening(8000)  # Flower 1.42 serves every SuperLink API over HTTP on port 8000
        for i in range(clients):
            procs.append(subprocess.Popen(
                [str(bindir / "flower-supernode"), "--insecure", "--superlink", "127.0.0.1:8000",
                 "--port", str(9100 + i), "--node-config", f"partition-id={i} num-partitions={clients}"],
                env=env, stdout=log, stderr=log))
        run_config = f"num-server-rounds={rounds} num-nodes={clients} times-file='{times}' {config}".strip()
        subprocess.run([str(bindir / "flwr"), "run", str(app), "local", "--run-config", run_config], env=env,
                       stdout=log, stderr=log, check=True, timeout=300)
        cpu, rss, net, deadline = [], [], [], time.monotonic() + timeout
        while time.monotonic() < deadline:
            now = time.time()
            cpu.append((now, _tree_cpu_s(link.pid)))
            rss.append((now, _memory_kib(link.pid)[0]))
            net.append((now, float(loopback_bytes())))
            if len(commits()) >= rounds:
                break
            time.sleep(0.1)
        done = commits()
        if len(done) < 3:
            raise RuntimeError(f"Flower finished {len(done)} rounds in {timeout:.0f} s: see {workdir}/flower.log")
        return Run(clients, mode, done, cpu, rss, _memory_kib(link.pid)[1], net)
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.close()


# ----- the coordinator process and its measurements
def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def _memory_kib(pid: int) -> tuple[int, int]:
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            values[line.split(":")[0]] = int(line.split()[1])
    return values.get("VmRSS", 0), values.get("VmHWM", 0)


@dataclass
class Run:
    clients: int
    mode: str
    rounds: list[float]  # commit time of each round (unix s)
    cpu: list[tuple[float, float]]  # (unix s, coordinator CPU s) samples
    rss: list[tuple[float, int]]  # (unix s, RSS KiB)
    peak_rss_kib: int
    net: list[tuple[float, float]] = field(default_factory=list)  # (unix s, loopback bytes sent), Flower only
    checkpoint_s: float | None = None  # mean wall s of the checkpoint after a round (its /metrics), when asked

    def cpu_at(self, t: float) -> float:
        times = [s[0] for s in self.cpu]
        return float(np.interp(t, times, [s[1] for s in self.cpu]))

    def per_round(self, first: int, last: int) -> tuple[list[float], list[float]]:
        """Seconds and coordinator CPU-s of rounds first..last (1-based, round r spans commit r-1 -> commit r)."""
        secs = [self.rounds[r - 1] - self.rounds[r - 2] for r in range(max(first, 2), last + 1)]
        cpus = [self.cpu_at(self.rounds[r - 1]) - self.cpu_at(self.rounds[r - 2])
                for r in range(max(first, 2), last + 1)]
        return secs, cpus


def run(clients: int, rounds: int, push: bool, workers: int, workdir: Path, flags: tuple[str, ...] = (),
        worker: Callable[[str, list[str], bool], None] = _worker, *, env: dict[str, str] | None = None,
        mode: str | None = None, checkpoints: bool = False, server_flags: Sequence[str] = SERVER_FLAGS) -> Run:
    """`flags`: added to `server_flags` (the model and prompt flags); `worker`: the client processes' target,
    (target, ids, push); `env`: the coordinator's environment (compare_trees.py points its PYTHONPATH at another
    tree); `mode`: the rows' label; `checkpoints`: serve /metrics and read the checkpoints' time off it after the
    last round (Run.checkpoint_s)."""
    state = Path(tempfile.mkdtemp(dir=workdir, prefix=f"n{clients}-"))
    log = open(state / "server.log", "w")  # noqa: SIM115 (closed below)
    argv = [sys.executable, "-m", "pfeddc.server.app", "--bind", "127.0.0.1", "--port", "0", "--state-dir",
            str(state / "coordinator"), "--rounds", str(rounds), "--min-clients", str(clients), "--quorum", "1",
            "--round-timeout", "600", "--linger", "3", "--log-format", "json", "--poll-interval", "2",
            "--max-held-calls", str(clients + 16), *server_flags, *flags,
            *(["--metrics-port", "0"] if checkpoints else [])]
    server = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
    history = state / "coordinator" / "rounds.jsonl"
    try:
        started = _started(state / "server.log", server)
        port, metrics_port, checkpoint = started["port"], started.get("metrics_port"), None
        ids = [f"site-{i:05d}" for i in range(clients)]
        ctx = multiprocessing.get_context("spawn")
        procs = [ctx.Process(target=worker, args=(f"127.0.0.1:{port}", ids[i::workers], push)) for i in range(workers)]
        for p in procs:
            p.start()
        cpu: list[tuple[float, float]] = []
        rss, peak = [], 0
        while server.poll() is None:
            if any(p.exitcode for p in procs):
                raise RuntimeError(f"a client process failed (see above); coordinator's log: {state / 'server.log'}")
            if metrics_port and checkpoint is None and len(cpu) % 10 == 0 and _lines(history) >= rounds:
                checkpoint = _checkpoint_s(metrics_port)  # after the last round: outside the rounds measured
            now = time.time()
            try:
                cpu.append((now, _cpu_s(server.pid)))
                current, peak_now = _memory_kib(server.pid)
            except (FileNotFoundError, ProcessLookupError, IndexError):
                break
            rss.append((now, current))
            peak = max(peak, peak_now)
            time.sleep(0.02)
        for p in procs:
            p.join(60)
        if server.wait() != 0:
            raise RuntimeError(f"the coordinator exited with {server.returncode}: see {state / 'server.log'}")
        commits = [json.loads(line)["time"] for line in history.read_text().splitlines()]
        return Run(clients, mode or ("push" if push else "poll"), commits, cpu, rss, peak, checkpoint_s=checkpoint)
    finally:
        if server.poll() is None:
            server.kill()
        log.close()


def _lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def _checkpoint_s(metrics_port: int) -> float | None:
    """Mean wall seconds of the checkpoint written after each round, from the coordinator's Prometheus
    histogram (None when this coordinator does not export it, or is gone)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as reply:
            text = reply.read().decode()
    except OSError:
        return None
    values = dict(line.rsplit(" ", 1) for line in text.splitlines() if line.startswith("pfeddc_checkpoint_duration"))
    count = float(values.get("pfeddc_checkpoint_duration_seconds_count", 0))
    return float(values["pfeddc_checkpoint_duration_seconds_sum"]) / count if count else None


def _started(log: Path, server: subprocess.Popen[bytes], timeout: float = 60.0) -> dict[str, Any]:
    """The coordinator's server_started log line (its port, metrics_port, ...), once it has written it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in log.read_text().splitlines():
            if '"server_started"' in line:
                return dict(json.loads(line))
        if server.poll() is not None:
            raise RuntimeError(f"the coordinator exited: {log.read_text()[-2000:]}")
        time.sleep(0.05)
    raise TimeoutError("the coordinator did not start")


# ----- report
def hardware() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return (f"{model}, {os.cpu_count()} cores, Linux {platform.release()}, Python {platform.python_version()}, "
            f"grpcio {grpc.__version__}")


def row(r: Run) -> str:
    secs, cpus = r.per_round(2, len(r.rounds))
    return (f"| {r.clients} | {r.mode} | {len(secs)} | {statistics.median(secs):.3f} | {max(secs):.3f} | "
            f"{statistics.median(cpus):.3f} | {r.peak_rss_kib / 1024:.0f} |")


def soak_rows(r: Run) -> list[str]:
    n = len(r.rounds)
    start, end = (10, 110), (n - 99, n)
    out = []
    for label, (a, b) in (("rounds 10-110", start), (f"rounds {end[0]}-{end[1]}", end)):
        secs, cpus = r.per_round(a, b)
        rss = [kib for t, kib in r.rss if r.rounds[a - 2] <= t <= r.rounds[b - 1]]
        out.append(f"| {label} | {statistics.mean(secs):.4f} | {statistics.mean(cpus):.4f} | "
                   f"{max(rss) / 1024:.1f} |")
    (s0, c0), (s1, c1) = (r.per_round(*start), r.per_round(*end))
    out.append(f"| last / first | {statistics.mean(s1) / statistics.mean(s0):.2f}x | "
               f"{statistics.mean(c1) / statistics.mean(c0):.2f}x | |")
    return out


def _save(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
