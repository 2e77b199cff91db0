"""Nothing silent: full disks, a dying ticker and missing sites are reported, and no round outruns the disk."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from structlog.testing import capture_logs
from tests_support import StartCoordinator

from pfeddc.common import serde, wire
from pfeddc.common.logs import Event
from pfeddc.common.messages import Code, Metrics
from pfeddc.common.proto import federation_pb2 as pb
from pfeddc.common.proto import federation_pb2_grpc as pb_grpc
from pfeddc.common.spec import TensorSpec
from pfeddc.server.app import RunningServer
from pfeddc.server.ops import checkpoint as checkpoint_module
from pfeddc.server.ops.checkpoint import ROUNDS_FILE
from pfeddc.server.round.federation import Federation, FederationConfig, FederationState
from pfeddc.server.round.rounds import WAITING_LOG_INTERVAL_S
from pfeddc.server.wire.gate import SERVICE_NAME

SPEC = [TensorSpec("text.global", (4, 128))]
FLAGS = ("--rounds", "3", "--min-clients", "1", "--method", "promptfl", "--text-ctx", "4")
METRICS = wire.metrics_to_proto(Metrics(train_loss=0.5, accuracy_before=0.1, accuracy_after=0.2, num_test_examples=5))


def join_and_submit(port: int, client_id: str = "site-a") -> Callable[[], pb.UpdateReply]:
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = pb_grpc.CoordinatorStub(channel)
    stub.Join(pb.JoinRequest(client_id=client_id, num_examples=10, spec=wire.spec_to_proto(SPEC)), timeout=10)
    payload = serde.encode({"text.global": np.full((4, 128), 0.01, np.float32)})
    request = pb.UpdateRequest(client_id=client_id, round=1, global_state=payload, num_examples=10, metrics=METRICS)
    return lambda: stub.SubmitUpdate(request, timeout=10)


def health_of(port: int) -> int:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return int(stub.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=5).status)


def eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def assert_round_kept_until_disk_recovers(server: RunningServer, submit: Callable[[], pb.UpdateReply],
                                          state_dir: Path, recover: Callable[[], None]) -> None:
    with pytest.raises(grpc.RpcError) as info:
        submit()  # this update closes round 1, whose checkpoint cannot be written
    assert wire.rpc_code(info.value) == Code.UNAVAILABLE and "could not be saved" in wire.rpc_details(info.value)
    assert server.federation.round == 1  # not advanced in memory past what is durable
    eventually(lambda: health_of(server.port) == health_pb2.HealthCheckResponse.NOT_SERVING)
    recover()
    eventually(lambda: server.federation.round == 2)
    eventually(lambda: health_of(server.port) == health_pb2.HealthCheckResponse.SERVING)
    assert submit().duplicate  # the client's retry is acknowledged
    lines = (state_dir / ROUNDS_FILE).read_text().splitlines()
    assert [json.loads(line)["round"] for line in lines] == [1]


def test_failed_checkpoint_write_keeps_the_round_open_and_answers_retryable(
    coordinator: StartCoordinator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state_dir = tmp_path / "state"
    server = coordinator(*FLAGS, state_dir=state_dir)
    submit = join_and_submit(server.port)
    real_save = serde.save_file

    def disk_full(*_args: object, **_kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint_module.serde, "save_file", disk_full)
    with capture_logs() as logs:
        assert_round_kept_until_disk_recovers(
            server, submit, state_dir, lambda: monkeypatch.setattr(checkpoint_module.serde, "save_file", real_save))
    failed = [e for e in logs if e["event"] == Event.CHECKPOINT_FAILED]
    assert failed and failed[0]["log_level"] == "error" and "No space left" in failed[0]["error"]
    assert any(e["event"] == Event.CHECKPOINT_RECOVERED for e in logs)


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a tmpfs needs root (the injected write error covers the same path)")
    try:
        yield mount
    finally:
        # lazily: the coordinator fixture, torn down after this one, may still hold its state dir open
        subprocess.run(["umount", "--lazy", str(mount)], check=False)


def test_full_tmpfs_keeps_the_round_open_until_space_is_freed(coordinator: StartCoordinator,
                                                              small_tmpfs: Path) -> None:
    state_dir = small_tmpfs / "state"
    server = coordinator(*FLAGS, state_dir=state_dir)
    submit = join_and_submit(server.port)
    filler = small_tmpfs / "filler"
    with open(filler, "wb", buffering=0) as fh, pytest.raises(OSError):  # fill the volume to the last byte
        while True:
            fh.write(b"\0" * 4096)
    assert_round_kept_until_disk_recovers(server, submit, state_dir, filler.unlink)


def test_ticker_survives_an_error_and_reports_it(coordinator: StartCoordinator,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    server = coordinator(*FLAGS)
    calls = {"n": 0}
    real_tick = server.federation.tick

    def flaky() -> None:
        calls["n"] += 1
        if calls["n"] <= 2:
            raise RuntimeError("bug in a transition")
        real_tick()

    with capture_logs() as logs:
        monkeypatch.setattr(server.federation, "tick", flaky)
        eventually(lambda: calls["n"] >= 4)
    failed = [e for e in logs if e["event"] == Event.TICKER_FAILED]
    assert len(failed) == 2 and failed[0]["log_level"] == "error" and "bug in a transition" in failed[0]["error"]
    eventually(lambda: health_of(server.port) == health_pb2.HealthCheckResponse.SERVING)


def test_waiting_for_clients_is_reported_with_counts_every_30s() -> None:
    now = [0.0]
    fed = Federation(FederationConfig(rounds=2, min_clients=2), SPEC,
                     FederationState(1, {"text.global": np.zeros((4, 128), np.float32)}, {}), clock=lambda: now[0])
    with capture_logs() as logs:
        fed.join("site-a", 10, SPEC)
        for _ in range(130):  # 65 s of ticks, 0.5 s apart
            now[0] += 0.5
            fed.tick()
    waiting = [e for e in logs if e["event"] == Event.WAITING_FOR_CLIENTS]
    assert [(e["active"], e["needed"]) for e in waiting] == [(1, 2)] * 3  # at 0, 30 and 60 s
    assert all(e["log_level"] == "warning" for e in waiting) and WAITING_LOG_INTERVAL_S == 30.0
