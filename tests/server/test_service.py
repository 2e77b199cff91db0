"""The coordinator over real gRPC on loopback: status codes, health, checkpoints and resume."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tests_support import StartCoordinator

from pfeddc.client.connection import Backoff, Connection, CoordinatorUnreachable, global_tensors
from pfeddc.common import serde, wire
from pfeddc.common.messages import Action, Code, Metrics, Refused, Task
from pfeddc.common.proto import federation_pb2 as pb
from pfeddc.common.proto import federation_pb2_grpc as pb_grpc
from pfeddc.common.spec import TensorSpec
from pfeddc.server.wire.gate import SERVICE_NAME

# clipping off: these tests check exact averages of large, synthetic updates
FLAGS = ("--rounds", "2", "--min-clients", "2", "--update-clip-norm", "0", "--method", "promptfl", "--text-ctx", "4")
METRICS = Metrics(train_loss=0.5, accuracy_before=0.1, accuracy_after=0.2, num_test_examples=5)


def connect(port: int, client_id: str) -> Connection:
    return Connection(f"127.0.0.1:{port}", client_id, backoff=Backoff(0.05, 0.2, 3), rpc_timeout_s=10)


def train_round(conn: Connection, value: float, examples: int) -> Task:
    task = conn.task()
    assert task.action == Action.TRAIN, task
    update = {k: np.full_like(v, value) for k, v in global_tensors(task).items()}
    conn.submit(task.round, update, examples, METRICS)
    return task


def raw_submit(port: int, client_id: str, payload: bytes) -> None:
    """What a hostile or broken client can send: any bytes, straight through the generated stub."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        pb_grpc.CoordinatorStub(channel).SubmitUpdate(pb.UpdateRequest(
            client_id=client_id, round=1, global_state=payload, num_examples=10,
            metrics=wire.metrics_to_proto(METRICS)), timeout=10)


def test_service_runs_rounds_and_serves_final_prompts(coordinator: StartCoordinator) -> None:
    server = coordinator(*FLAGS)
    a, b = connect(server.port, "site-a"), connect(server.port, "site-b")
    info = a.federation()
    assert info.prompt_config.method == "promptfl"
    assert [s.name for s in info.spec] == ["text.global"]
    a.join(10, info.spec)
    assert a.task().action == Action.WAIT  # min_clients=2
    b.join(30, info.spec)
    for round_ in (1, 2):
        assert train_round(a, 1.0 * round_, 10).round == round_
        train_round(b, 3.0 * round_, 30)
    final = a.task()
    assert final.action == Action.FINISHED
    np.testing.assert_allclose(global_tensors(final)["text.global"], (20 + 180) / 40)


def test_service_maps_refusals_to_status_codes(coordinator: StartCoordinator) -> None:
    server = coordinator(*FLAGS, "--max-update-mb", "0.001")
    a = connect(server.port, "site-a")
    with pytest.raises(Refused) as info:
        a.task()
    assert info.value.code == Code.NOT_FOUND and "call Join first" in info.value.message
    with pytest.raises(Refused) as info:
        a.join(10, [TensorSpec("text.global", (4, 99))])
    assert info.value.code == Code.FAILED_PRECONDITION
    assert "text.global" in info.value.message and "[4, 99]" in info.value.message
    spec = a.federation().spec
    a.join(10, spec)
    connect(server.port, "site-b").join(10, spec)
    big = serde.encode({"text.global": np.zeros((4, 128), np.float32)})
    with pytest.raises(grpc.RpcError) as raw:
        raw_submit(server.port, "site-a", big + b"x" * 2048)
    assert wire.rpc_code(raw.value) == Code.RESOURCE_EXHAUSTED and "byte limit" in wire.rpc_details(raw.value)
    with pytest.raises(grpc.RpcError) as raw:
        raw_submit(server.port, "site-a", b"garbage")
    assert wire.rpc_code(raw.value) == Code.INVALID_ARGUMENT


def test_health_service_reports_serving_then_not_serving(coordinator: StartCoordinator) -> None:
    server = coordinator(*FLAGS)
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for name in ("", SERVICE_NAME):
            reply = stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        server.health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.NOT_SERVING)
        reply = stub.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING


def test_restarted_coordinator_resumes_round_prompts_and_clients(coordinator: StartCoordinator, tmp_path: Path) -> None:
    state = tmp_path / "state"
    server = coordinator(*FLAGS, "--rounds", "3", state_dir=state)
    a, b = connect(server.port, "site-a"), connect(server.port, "site-b")
    spec = a.federation().spec
    a.join(10, spec)
    b.join(10, spec)
    train_round(a, 2.0, 10)
    train_round(b, 4.0, 10)
    server.stop(0)

    server = coordinator(*FLAGS, "--rounds", "3", state_dir=state)
    a, b = connect(server.port, "site-a"), connect(server.port, "site-b")
    # known clients need no re-join; the round starts once both have checked in again
    assert a.task().action == Action.WAIT
    task = train_round(b, 1.0, 10)
    assert task.round == 2
    np.testing.assert_allclose(global_tensors(task)["text.global"], 3.0)
    assert server.federation.last_round is None  # the history is on disk, not in memory
    assert [json.loads(line)["round"] for line in (state / "rounds.jsonl").read_text().splitlines()] == [1]


def test_checkpoint_for_another_spec_is_refused(coordinator: StartCoordinator, tmp_path: Path) -> None:
    state = tmp_path / "state"
    coordinator(*FLAGS, state_dir=state).stop(0)
    with pytest.raises(RuntimeError, match="another prompt spec"):
        coordinator(*FLAGS[:-1], "8", state_dir=state)


def test_unreachable_coordinator_raises_after_backoff() -> None:
    conn = Connection("127.0.0.1:1", "site-a", backoff=Backoff(0.01, 0.02, 2), rpc_timeout_s=1)
    with pytest.raises(CoordinatorUnreachable, match="after 2 attempts"):
        conn.federation()


def test_a_checkpoint_from_before_the_residual_resumes_with_it_at_zero_and_others_stay_refused(
        coordinator: StartCoordinator, tmp_path: Path) -> None:
    """A pfeddc federation checkpointed before the class head's residual was shipped (today's pfeddc-noresidual)
    resumes under today's pfeddc with the residual at its initial value; a tensor not added by an upgrade (the
    prompts of pfeddc-prompts) is still refused by name."""
    state = tmp_path / "state"
    head = ("--rounds", "3", "--min-clients", "1", "--classes", "cat,dog,ankle_boot")
    before = coordinator(*head, "--method", "pfeddc-noresidual", state_dir=state)
    assert "head.residual.global" not in before.federation.global_tensors
    before.stop(0)
    after = coordinator(*head, state_dir=state)
    residual = after.federation.global_tensors["head.residual.global"]
    assert residual.shape[0] == 3 and not residual.any()
    after.stop(0)
    with pytest.raises(RuntimeError, match="another prompt spec.*text.global"):
        coordinator(*head, "--method", "pfeddc-prompts", state_dir=state)
