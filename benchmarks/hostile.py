"""What a hostile caller costs a real coordinator process: the figures behind the hostile-caller suite.

    python benchmarks/hostile.py                       # both parts (the join flood takes minutes)
    python benchmarks/hostile.py --joins 0             # only the large unauthenticated requests

Part 1, a TLS + --tokens coordinator (credentials from pfeddc-certs) on loopback, sent with no token:
a 60 MB Join and a 60 MB SubmitUpdate. Measured from /proc: the coordinator's CPU seconds and RSS growth over
each request, the time to the refusal, the latency of a legitimate call (GetFederation with a token) sent while
the request is in flight against the same call with nothing else going on (the floor), and the time from
SIGTERM, sent while a 60 MB request is in flight, to the process's exit.
Part 2, an open-mode coordinator (--max-clients default): `--joins` Join attempts, each under a new client id,
from one process with 256 calls in flight; then two legitimate sites join and submit, and the round must commit.
Measured: RSS and CPU seconds after the flood, the registry's size, the checkpoint's size, and that the round
committed. Prints a markdown table and the hardware.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import os
import platform
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from pfeddc.client.sim.processes import LoggedProcess
from pfeddc.common import serde, wire
from pfeddc.common.logs import Event
from pfeddc.common.proto import federation_pb2 as pb
from pfeddc.common.proto import federation_pb2_grpc as pb_grpc
from pfeddc.common.transport import TOKEN_METADATA_KEY, TlsFiles
from pfeddc.server.ops import certs

FLAGS = ["--method", "promptfl", "--text-ctx", "4", "--rounds", "1", "--min-clients", "2", "--log-format", "json",
         "--poll-interval", "0.2"]
MB60 = 60 * 1000 * 1000
TICK = os.sysconf("SC_CLK_TCK")


def usage(pid: int) -> tuple[float, float]:
    """(CPU seconds, RSS MiB) of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / TICK
    rss = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
               if line.startswith("VmRSS:")) / 1024
    return cpu, rss


def start(tmp: Path, *flags: str) -> tuple[LoggedProcess, int]:
    argv = [sys.executable, "-m", "pfeddc.server.app", "--bind", "127.0.0.1", "--port", "0", "--state-dir",
            str(tmp / "state"), *FLAGS, *flags]
    proc = LoggedProcess(argv, tmp / "server.log", {**os.environ, "PYTHONUNBUFFERED": "1"})
    return proc, int(proc.wait_event(Event.SERVER_STARTED, 60)["port"])


def big_join() -> bytes:
    entry = pb.TensorSpec(name="x" * 50, shape=[1, 2, 3], dtype="F32").SerializeToString()
    head = pb.JoinRequest(client_id="site-a", num_examples=10).SerializeToString()
    return head + (b"\x1a" + bytes([len(entry)]) + entry) * (MB60 // (len(entry) + 2))


def big_submit() -> bytes:
    return pb.UpdateRequest(client_id="site-a", round=1, global_state=b"\0" * MB60).SerializeToString()


def send(target: str, ca: Path, method: str, times: int, sending: Any = None) -> tuple[str, float]:
    """Send a 60 MB `method` request without a token `times` times; the last answer's code and duration.
    `sending`: an event set just before the first request goes out (the process is started by then)."""
    body = big_join() if method == "Join" else big_submit()
    options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
    with grpc.secure_channel(target, TlsFiles(ca=ca).channel_credentials(), options=options) as channel:
        grpc.channel_ready_future(channel).result(timeout=30)
        rpc = channel.unary_unary(f"/pfeddc.v1.Coordinator/{method}", None, None)
        code, took = "OK", 0.0
        if sending is not None:
            sending.set()
        for _ in range(times):
            t = time.perf_counter()
            try:
                rpc(body, timeout=60)
            except grpc.RpcError as exc:
                code = str(wire.rpc_code(exc))
            took = time.perf_counter() - t
    return code, took


def large_requests(tmp: Path, repeats: int) -> list[str]:
    creds = tmp / "creds"
    certs.main(["init", "--out", str(creds)])
    certs.main(["client", "--out", str(creds), "--client-id", "site-a"])
    token = (creds / "clients" / "site-a" / "token").read_text().strip()
    proc, port = start(tmp, "--tls-cert", str(creds / "coordinator.pem"), "--tls-key", str(creds / "coordinator.key"),
                 "--tokens", str(creds / "tokens.json"), "--grace", "10")
    target = f"localhost:{port}"
    tls = TlsFiles(ca=creds / "ca.pem").channel_credentials()
    options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
    hostile = grpc.secure_channel(target, tls, options=options)
    legit = grpc.secure_channel(target, tls, options=options)
    legit_call = pb_grpc.CoordinatorStub(legit).GetFederation
    legit_md = ((TOKEN_METADATA_KEY, f"Bearer {token}"),)

    def legit_latency() -> float:
        t = time.perf_counter()
        legit_call(pb.FederationRequest(client_id="site-a"), metadata=legit_md, timeout=30)
        return time.perf_counter() - t

    for _ in range(5):
        legit_latency()  # warm the connection
    idle = [legit_latency() for _ in range(500)]
    floor = max(idle)
    rows = [f"| legitimate GetFederation, nothing else (floor) | - | - | - | {1000 * statistics.median(idle):.1f} / "
            f"{1000 * floor:.1f} ms ({len(idle)} calls) | - |"]
    ca = creds / "ca.pem"
    for name in ("Join", "SubmitUpdate"):
        for _ in range(repeats):  # the request alone: what it costs the coordinator
            cpu0, rss0 = usage(proc.popen.pid)
            code, took = send(target, ca, name, 1)
            time.sleep(0.3)
            cpu1, rss1 = usage(proc.popen.pid)
            # the same request from another process, while this one times legitimate calls
            spawn = mp.get_context("spawn")
            sending = spawn.Event()
            attacker = spawn.Process(target=send, args=(target, ca, name, 1, sending))
            latencies: list[float] = []
            attacker.start()
            sending.wait(60)
            while attacker.is_alive() or not latencies:
                latencies.append(legit_latency())
            attacker.join()
            worst = max(latencies)
            rows.append(f"| 60 MB {name}, no token | {code} in {1000 * took:.0f} ms | {cpu1 - cpu0:.3f} | "
                        f"{rss1 - rss0:+.1f} | {1000 * statistics.median(latencies):.1f} / {1000 * worst:.1f} ms "
                        f"({len(latencies)} calls) | {1000 * (worst - floor):+.1f} ms |")
    # SIGTERM while a 60 MB request is in flight
    rpc = hostile.unary_unary("/pfeddc.v1.Coordinator/SubmitUpdate", None, None)
    body = big_submit()
    sender = threading.Thread(target=lambda: _swallow(lambda: rpc(body, timeout=60)))
    sender.start()
    time.sleep(0.05)
    t = time.perf_counter()
    os.kill(proc.popen.pid, signal.SIGTERM)
    exit_code = proc.wait(30)
    stopped = time.perf_counter() - t
    sender.join()
    rows.append(f"| SIGTERM during a 60 MB request | exit {exit_code} after {1000 * stopped:.0f} ms | - | - | - | - |")
    hostile.close()
    legit.close()
    head = ["| attack | answer | coordinator CPU-s | RSS growth MiB | legitimate calls during it: median / worst "
            "| worst vs floor |", "|---|---|---:|---:|---:|---:|"]
    errors = [e for e in proc.events if e.get("level") == "error"]
    return head + rows + [f"\nerror-level log lines from the coordinator during part 1: {len(errors)}"]


def _swallow(fn: Callable[[], object]) -> None:
    with contextlib.suppress(grpc.RpcError):
        fn()


def join_flood(tmp: Path, joins: int) -> list[str]:
    proc, port = start(tmp / "open", "--round-timeout", "30")
    target = f"127.0.0.1:{port}"
    channel = grpc.insecure_channel(target)
    stub = pb_grpc.CoordinatorStub(channel)
    spec = [pb.TensorSpec(name="text.global", shape=[4, 128], dtype="F32")]
    cpu0, rss0 = usage(proc.popen.pid)
    window = threading.BoundedSemaphore(256)
    codes: dict[str, int] = {}
    lock = threading.Lock()

    def done(future: Any) -> None:
        code = future.code().name if future.code() else "OK"
        with lock:
            codes[code] = codes.get(code, 0) + 1
        window.release()

    t = time.perf_counter()
    for i in range(joins):
        window.acquire()
        md = (("x-pfeddc-join-secret", f"s{i}"),)
        stub.Join.future(pb.JoinRequest(client_id=f"flood-{i}", num_examples=1, spec=spec), metadata=md,
                         timeout=60).add_done_callback(done)
    for _ in range(256):
        window.acquire()
    took = time.perf_counter() - t
    cpu1, rss1 = usage(proc.popen.pid)
    # then two legitimate sites: known ids (they rejoin) must still be served; new ones are refused at the cap
    committed = False
    for cid in ("flood-0", "flood-1"):
        stub.Join(pb.JoinRequest(client_id=cid, num_examples=10, spec=spec), timeout=30,
                  metadata=(("x-pfeddc-join-secret", f"s{cid.split('-')[1]}"),))
    payload = serde.encode({"text.global": np.zeros((4, 128), np.float32)})
    for cid in ("flood-0", "flood-1"):
        md = (("x-pfeddc-join-secret", f"s{cid.split('-')[1]}"),)
        task = stub.GetTask(pb.TaskRequest(client_id=cid), timeout=30, metadata=md)
        if task.action == pb.TaskReply.TRAIN:
            stub.SubmitUpdate(pb.UpdateRequest(client_id=cid, round=1, global_state=payload, num_examples=10,
                                               metrics=pb.Metrics(num_test_examples=1)), timeout=30, metadata=md)
    try:
        proc.wait_event(Event.ROUND_COMPLETED, 60)
        committed = True
    except Exception:  # noqa: BLE001 (reported in the table)
        committed = False
    checkpoint = (tmp / "open" / "state" / "checkpoint.safetensors").stat().st_size / 2**20
    channel.close()
    proc.kill()
    return ["| join attempts | answers | time | coordinator CPU-s | RSS before -> after (MiB) | checkpoint | round "
            "committed after |", "|---:|---|---:|---:|---:|---:|---|",
            f"| {joins:,} | {', '.join(f'{k} {v:,}' for k, v in sorted(codes.items()))} | {took:.0f} s | "
            f"{cpu1 - cpu0:.1f} | {rss0:.0f} -> {rss1:.0f} | {checkpoint:.1f} MiB | {'yes' if committed else 'NO'} |"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--joins", type=int, default=1_000_000, help="join attempts of part 2 (0: skip it)")
    p.add_argument("--repeats", type=int, default=3, help="60 MB requests of each kind in part 1")
    args = p.parse_args(argv)
    print(f"# Hostile callers against a real coordinator ({os.cpu_count()}-core {platform.machine()} CPU, shared; "
          f"Python {platform.python_version()}, grpcio {grpc.__version__})\n")
    with tempfile.TemporaryDirectory() as tmp:
        print("\n".join(large_requests(Path(tmp), args.repeats)), flush=True)
        if args.joins:
            (Path(tmp) / "open").mkdir()
            print("\n" + "\n".join(join_flood(Path(tmp), args.joins)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
