"""Hostile callers against a real coordinator process on loopback, scripted with the generated stubs.

Each attack of issue 19, with its bound asserted; benchmarks/hostile.py measures the same attacks and records
the figures (benchmarks/results/hostile.md).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from pfeddc.client.sim.processes import LoggedProcess
from pfeddc.common import serde, wire
from pfeddc.common.logs import Event
from pfeddc.common.messages import Code
from pfeddc.common.proto import federation_pb2 as pb
from pfeddc.common.proto import federation_pb2_grpc as pb_grpc
from pfeddc.common.transport import JOIN_SECRET_METADATA_KEY, TOKEN_METADATA_KEY, TlsFiles
from pfeddc.server.ops import certs

pytestmark = pytest.mark.integration  # starts real processes

FLAGS = ["--method", "promptfl", "--text-ctx", "4", "--rounds", "1", "--min-clients", "2", "--log-format", "json",
         "--poll-interval", "0.2", "--linger", "5"]
SPEC = [pb.TensorSpec(name="text.global", shape=[4, 128], dtype="F32")]
BIG = 60 * 1000 * 1000
OPTIONS = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]


class Coordinator:
    def __init__(self, tmp: Path, *flags: str) -> None:
        argv = [sys.executable, "-m", "pfeddc.server.app", "--bind", "127.0.0.1", "--port", "0", "--state-dir",
                str(tmp / "state"), *FLAGS, *flags]
        self.proc = LoggedProcess(argv, tmp / "server.log", {**os.environ, "PYTHONUNBUFFERED": "1"})
        self.port = int(self.proc.wait_event(Event.SERVER_STARTED, 60)["port"])

    def usage(self) -> tuple[float, float]:
        """CPU seconds and RSS in MiB, from /proc."""
        pid = self.proc.popen.pid
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        rss = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                   if line.startswith("VmRSS:"))
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), rss / 1024


def raw(channel: grpc.Channel, method: str, body: bytes, metadata: tuple[tuple[str, str], ...] = (),
        timeout: float = 60) -> tuple[Code, str]:
    rpc = channel.unary_unary(f"/pfeddc.v1.Coordinator/{method}", None, None)
    try:
        rpc(body, timeout=timeout, metadata=metadata or None)
    except grpc.RpcError as exc:
        return wire.rpc_code(exc), wire.rpc_details(exc)
    return Code.UNKNOWN, "answered"


def big_join() -> bytes:
    entry = pb.TensorSpec(name="x" * 50, shape=[1, 2, 3], dtype="F32").SerializeToString()
    return (pb.JoinRequest(client_id="site-a", num_examples=10).SerializeToString()
            + (b"\x1a" + bytes([len(entry)]) + entry) * (BIG // (len(entry) + 2)))


def big_submit() -> bytes:
    return pb.UpdateRequest(client_id="site-a", round=1, global_state=b"\0" * BIG).SerializeToString()


@pytest.fixture(scope="module")
def creds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("creds")
    assert certs.main(["init", "--out", str(out)]) == 0
    assert certs.main(["client", "--out", str(out), "--client-id", "site-a"]) == 0
    return out


@pytest.fixture
def secured(tmp_path: Path, creds: Path) -> Iterator[tuple[Coordinator, grpc.Channel, tuple[tuple[str, str], ...]]]:
    """A TLS + --tokens coordinator, a TLS channel to it, and site-a's token metadata."""
    coordinator = Coordinator(tmp_path, "--tls-cert", str(creds / "coordinator.pem"), "--tls-key",
                              str(creds / "coordinator.key"), "--tokens", str(creds / "tokens.json"))
    token = (creds / "clients" / "site-a" / "token").read_text().strip()
    channel = grpc.secure_channel(f"localhost:{coordinator.port}", TlsFiles(ca=creds / "ca.pem").channel_credentials(),
                                  options=OPTIONS)
    yield coordinator, channel, ((TOKEN_METADATA_KEY, f"Bearer {token}"),)
    channel.close()
    coordinator.proc.kill()


def test_hostile_60mb_unauthenticated_requests_cost_nothing_and_legit_calls_go_on(
        secured: tuple[Coordinator, grpc.Channel, tuple[tuple[str, str], ...]]) -> None:
    coordinator, channel, token = secured
    assert raw(channel, "GetFederation", pb.FederationRequest(client_id="site-a").SerializeToString(), token)[0] \
        == Code.UNKNOWN  # answered: warm
    cpu0, rss0 = coordinator.usage()
    for method, body in (("Join", big_join()), ("SubmitUpdate", big_submit())):
        code, _ = raw(channel, method, body)
        # refused from its headers (no token), or by gRPC core from its length prefix: never buffered
        assert code in (Code.UNAUTHENTICATED, Code.RESOURCE_EXHAUSTED), method
    cpu1, rss1 = coordinator.usage()
    # before: 12M entries (60 MB) in a Join cost 8.4 GB; now gRPC core refuses it from its length prefix
    assert rss1 - rss0 < 50 and cpu1 - cpu0 < 0.5
    code, _ = raw(channel, "GetFederation", pb.FederationRequest(client_id="site-a").SerializeToString(), token)
    assert code == Code.UNKNOWN
    assert not [e for e in coordinator.proc.events if e.get("level") == "error"]


def test_hostile_callers_without_credentials_are_refused_before_parsing(
        secured: tuple[Coordinator, grpc.Channel, tuple[tuple[str, str], ...]]) -> None:
    coordinator, channel, token = secured
    many = pb.JoinRequest(client_id="site-a", num_examples=10, spec=SPEC * 300).SerializeToString()  # ~10 KB
    assert raw(channel, "Join", many)[0] == Code.UNAUTHENTICATED  # no token: not even read
    assert raw(channel, "Join", b"\xff" * 100)[0] == Code.UNAUTHENTICATED
    assert raw(channel, "Join", many, token)[0] == Code.RESOURCE_EXHAUSTED  # a credential: the size counts
    for _ in range(20):
        code, message = raw(channel, "GetTask", b"\x0a\xff\xff\xff\x0f", token)
        assert code == Code.INVALID_ARGUMENT and "not a valid" in message
    long_id = pb.TaskRequest(client_id="z" * 3000).SerializeToString()
    code, message = raw(channel, "GetTask", long_id, token)
    assert code == Code.INVALID_ARGUMENT and len(message) < 300
    time.sleep(0.3)
    assert not [e for e in coordinator.proc.events if e.get("level") == "error"]
    assert len(coordinator.proc.find(Event.REQUEST_REFUSED)) <= 3  # 20 undecodable requests, logged at a bounded rate


def test_hostile_sigterm_during_a_60mb_request_still_stops_the_coordinator(
        secured: tuple[Coordinator, grpc.Channel, tuple[tuple[str, str], ...]]) -> None:
    coordinator, channel, _ = secured
    body = big_submit()
    sender = threading.Thread(target=raw, args=(channel, "SubmitUpdate", body))
    sender.start()
    time.sleep(0.05)
    started = time.monotonic()
    os.kill(coordinator.proc.popen.pid, signal.SIGTERM)
    coordinator.proc.wait(10)
    assert time.monotonic() - started < 5  # the goal is 2 s (benchmarks/results/hostile.md measures it)
    sender.join(30)


def test_hostile_join_flood_in_open_mode_is_capped_and_rounds_still_commit(tmp_path: Path) -> None:
    coordinator = Coordinator(tmp_path, "--max-clients", "40", "--round-timeout", "20")
    try:
        with grpc.insecure_channel(f"127.0.0.1:{coordinator.port}") as channel:
            stub = pb_grpc.CoordinatorStub(channel)

            def join(cid: str) -> Code:
                md = ((JOIN_SECRET_METADATA_KEY, f"secret-{cid}"),)
                try:
                    stub.Join(pb.JoinRequest(client_id=cid, num_examples=10, spec=SPEC), timeout=10, metadata=md)
                except grpc.RpcError as exc:
                    return wire.rpc_code(exc)
                return Code.UNKNOWN

            codes = [join(f"flood-{i}") for i in range(200)]
            assert codes.count(Code.UNKNOWN) == 40 and codes.count(Code.RESOURCE_EXHAUSTED) == 160
            assert join("flood-0") == Code.UNKNOWN  # a registered id may re-join at the cap
            payload = serde.encode({"text.global": np.zeros((4, 128), np.float32)})
            for cid in ("flood-0", "flood-1"):
                md = ((JOIN_SECRET_METADATA_KEY, f"secret-{cid}"),)
                task = stub.GetTask(pb.TaskRequest(client_id=cid), timeout=10, metadata=md)
                if task.action == pb.TaskReply.TRAIN:
                    stub.SubmitUpdate(pb.UpdateRequest(client_id=cid, round=1, global_state=payload, num_examples=10,
                                                       metrics=pb.Metrics(num_test_examples=1)), timeout=10,
                                      metadata=md)
            coordinator.proc.wait_event(Event.ROUND_COMPLETED, 60)  # committed (its checkpoint written)
        assert (tmp_path / "state" / "checkpoint.safetensors").stat().st_size > 0
    finally:
        coordinator.proc.kill()


def test_hostile_one_client_id_cannot_take_every_held_call(tmp_path: Path) -> None:
    coordinator = Coordinator(tmp_path, "--min-clients", "3")
    try:
        with grpc.insecure_channel(f"127.0.0.1:{coordinator.port}") as channel:
            stub = pb_grpc.CoordinatorStub(channel)
            md = ((JOIN_SECRET_METADATA_KEY, "s"),)
            stub.Join(pb.JoinRequest(client_id="greedy", num_examples=10, spec=SPEC), timeout=10, metadata=md)
            took: list[float] = []

            def hold() -> None:
                started = time.monotonic()
                stub.GetTask(pb.TaskRequest(client_id="greedy", max_wait_s=4), timeout=10, metadata=md)
                took.append(time.monotonic() - started)

            threads = [threading.Thread(target=hold) for _ in range(6)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(20)
        quick = [t for t in took if t < 2.0]
        assert len(took) == 6 and len(quick) == 4  # two held (the waiting room's share of one id), four answered
    finally:
        coordinator.proc.kill()


def test_hostile_metrics_port_beyond_loopback_needs_a_guard(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "pfeddc.server.app", "--bind", "127.0.0.1", "--port", "0", "--state-dir",
            str(tmp_path / "state"), *FLAGS, "--metrics-port", "0", "--metrics-bind", "0.0.0.0"]
    proc = LoggedProcess(argv, tmp_path / "server.log", {**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.wait(60) == 2
    assert "--metrics-guarded" in proc.tail()


def test_hostile_dripping_streams_without_a_valid_token_are_ended_from_their_headers(
        secured: tuple[Coordinator, grpc.Channel, tuple[tuple[str, str], ...]], creds: Path) -> None:
    """Streams that send headers and 4 KB of a 60 KB message, then wait, with no token or an unknown one: the
    coordinator ends every one at once (gRPC buffers none of their bodies) and a legitimate call goes on."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    from dripping import Dripper

    coordinator, channel, token = secured
    assert raw(channel, "GetFederation", pb.FederationRequest(client_id="site-a").SerializeToString(), token)[0] \
        == Code.UNKNOWN  # answered: warm
    _, rss0 = coordinator.usage()
    for bearer in (None, "f" * 64):
        dripper = Dripper(coordinator.port, creds / "ca.pem", None, bearer)
        dripper.start(connections=3, streams=600)
        assert dripper.refused == 600, bearer
        _, rss1 = coordinator.usage()
        code, _ = raw(channel, "GetFederation", pb.FederationRequest(client_id="site-a").SerializeToString(), token)
        assert code == Code.UNKNOWN
        dripper.close()
    assert rss1 - rss0 < 30  # before the header check: 14 MB per 500 streams, held after the peers left
    refusals = [e for e in coordinator.proc.find(Event.CALLER_REFUSED) if e.get("at") == "headers"]
    assert 1 <= len(refusals) <= 4  # 1,200 refusals, logged at a bounded rate


def test_hostile_slow_and_reset_http_connections_do_not_starve_scrapes_or_flood_the_log(tmp_path: Path) -> None:
    """200 connections sending a byte a second, then 500 that reset mid-request: scrapes go on, each < 1 s, and
    the log does not fill (before: 40 slow connections took all 32 threads, 500 resets printed 12,274 lines)."""
    import socket
    import struct
    import urllib.request

    coordinator = Coordinator(tmp_path, "--metrics-port", "0")
    port = int(coordinator.proc.wait_event(Event.SERVER_STARTED, 60)["metrics_port"])
    log_lines = lambda: len((tmp_path / "server.log").read_text().splitlines())  # noqa: E731
    lines_before = log_lines()
    slow = []
    for _ in range(200):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
        slow.append(s)
    took = []
    for _ in range(60):
        started = time.monotonic()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            assert reply.status == 200 and b"pfeddc_round" in reply.read()
        took.append(time.monotonic() - started)
    assert max(took) < 1.0, took
    for _ in range(500):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"GET /api/status HTTP/1.1\r\nHost: x\r\nContent-Le")
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = RST
        s.close()
    for s in slow:
        s.close()
    time.sleep(1.0)
    assert log_lines() - lines_before <= 10
    coordinator.proc.kill()
