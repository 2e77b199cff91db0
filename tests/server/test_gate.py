"""The gate: no request is parsed before its caller shows a credential and its size fits the method's limit."""

from __future__ import annotations

import json
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from structlog.testing import capture_logs
from tests_support import StartCoordinator

from pfeddc.common import wire
from pfeddc.common.logs import Event
from pfeddc.common.messages import Code
from pfeddc.common.proto import federation_pb2 as pb
from pfeddc.common.spec import TensorSpec
from pfeddc.common.transport import TOKEN_METADATA_KEY
from pfeddc.server.wire.gate import SMALL_REQUEST_BYTES, BoundedLog, max_receive_bytes, method_limits

SPEC = [TensorSpec("text.global", (4, 128))]
FLAGS = ("--rounds", "2", "--min-clients", "2", "--method", "promptfl", "--text-ctx", "4")
TOKEN = "a" * 64


def call(port: int, method: str, body: bytes, token: str | None = None, timeout: float = 10) -> tuple[Code, str]:
    """Send raw bytes as `method`'s request (a Coordinator method, or a full /service/method path); the status
    code and details of the answer."""
    path = method if method.startswith("/") else f"/pfeddc.v1.Coordinator/{method}"
    with grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.max_send_message_length", 256 << 20)]) as ch:
        rpc = ch.unary_unary(path, None, None)  # raw bytes both ways
        metadata: tuple[tuple[str, str | bytes], ...] | None = \
            ((TOKEN_METADATA_KEY, f"Bearer {token}"),) if token else None
        try:
            rpc(body, timeout=timeout, metadata=metadata)
        except grpc.RpcError as exc:
            return wire.rpc_code(exc), wire.rpc_details(exc)
    return Code.UNKNOWN, "OK"  # not a refusal (`UNKNOWN` never comes from the gate)


def join(client_id: str, tensors: int = 1, name_len: int = 11) -> bytes:
    spec = [pb.TensorSpec(name="t" * name_len, shape=[4, 128], dtype="F32") for _ in range(tensors)]
    return pb.JoinRequest(client_id=client_id, num_examples=10, spec=spec).SerializeToString()


@pytest.fixture
def tokens(tmp_path: Path) -> Path:
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps({"site-a": TOKEN}))
    return path


def test_gate_limits_follow_the_spec() -> None:
    limits = method_limits(SPEC)
    assert limits["GetTask"] == limits["GetFederation"] == limits["ReportFailure"] == SMALL_REQUEST_BYTES
    assert SMALL_REQUEST_BYTES < limits["Join"] < 2 * SMALL_REQUEST_BYTES
    assert 4 * 128 * 4 < limits["SubmitUpdate"] - SMALL_REQUEST_BYTES < 4 * 128 * 4 + 8 * 1024
    big = [TensorSpec("vision.global", (12, 8, 768))]
    assert max_receive_bytes(big) > 12 * 8 * 768 * 4 and max_receive_bytes(SPEC) < 100 * 1024


def test_gate_refuses_a_caller_without_credentials_before_reading_its_request(coordinator: StartCoordinator,
                                                                              tokens: Path) -> None:
    server = coordinator(*FLAGS, "--tokens", str(tokens))
    huge_join = join("site-a", tensors=400)  # ~10 KB: within gRPC's limit, above Join's
    assert call(server.port, "Join", huge_join)[0] == Code.UNAUTHENTICATED
    assert call(server.port, "Join", huge_join, token="b" * 64)[0] == Code.UNAUTHENTICATED
    assert call(server.port, "Join", b"\xff\xff\xff", token="b" * 64)[0] == Code.UNAUTHENTICATED
    code, message = call(server.port, "Join", huge_join, token=TOKEN)  # a valid credential: now the size counts
    assert code == Code.RESOURCE_EXHAUSTED and "Join request of" in message and "limit" in message
    code, message = call(server.port, "Join", join("site-a", tensors=2), token=TOKEN)
    assert code == Code.INVALID_ARGUMENT and "lists 2 tensors" in message
    assert server.federation.snapshot().clients == ()


def test_gate_answers_undecodable_requests_invalid_argument_at_a_bounded_log_rate(
        coordinator: StartCoordinator) -> None:
    server = coordinator(*FLAGS)
    with capture_logs() as logs:
        answers = [call(server.port, method, b"\x0a\xff\xff\xff\x0f")
                   for method in ("Join", "GetTask", "SubmitUpdate") for _ in range(5)]
    assert all(code == Code.INVALID_ARGUMENT and "not a valid" in message for code, message in answers)
    refused = [e for e in logs if e["event"] == Event.REQUEST_REFUSED]
    assert len(refused) == 3 and {e["method"] for e in refused} == {"Join", "GetTask", "SubmitUpdate"}
    assert all(e["log_level"] == "warning" for e in refused)


def test_every_service_answers_undecodable_requests_invalid_argument(coordinator: StartCoordinator) -> None:
    """Admin and Health too (gRPC alone would answer an unhandled error), each logged at a bounded rate."""
    server = coordinator(*FLAGS)
    with capture_logs() as logs:
        answers = [call(server.port, path, b"\x0a\xff\xff\xff\x0f")
                   for path in ("/pfeddc.v1.Admin/GetStatus", "/grpc.health.v1.Health/Check") for _ in range(5)]
    assert all(code == Code.INVALID_ARGUMENT and "not a valid" in message for code, message in answers), answers
    assert len([e for e in logs if e["event"] == Event.REQUEST_REFUSED]) == 2
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:  # well-formed requests are served as before
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_gate_refuses_long_client_ids_without_echoing_them(coordinator: StartCoordinator) -> None:
    server = coordinator(*FLAGS)
    long_id = "x" * 3000
    code, message = call(server.port, "GetTask", pb.TaskRequest(client_id=long_id).SerializeToString())
    assert code == Code.INVALID_ARGUMENT and "3000 characters" in message and long_id[:200] not in message
    code, message = call(server.port, "Join", join("y" * 129))
    assert code == Code.INVALID_ARGUMENT and "129 characters is longer than 128" in message


def test_gate_a_request_above_the_receive_limit_is_refused_and_the_coordinator_answers_others(
        coordinator: StartCoordinator) -> None:
    server = coordinator(*FLAGS)
    body = join("site-a") + b"\x1a" + b"\xff" * 4 + b"\x01" + b"\0" * (8 << 20)  # an 8 MB spec entry
    start = time.monotonic()
    code, _ = call(server.port, "Join", body)
    assert code == Code.RESOURCE_EXHAUSTED
    code, _ = call(server.port, "Join", join("site-a", name_len=11).replace(b"t" * 11, b"text.global"))
    assert code == Code.UNKNOWN  # answered: the join went through
    assert time.monotonic() - start < 10
    assert [c.client_id for c in server.federation.snapshot().clients] == ["site-a"]


def test_bounded_log_logs_once_per_interval_and_counts_the_rest() -> None:
    now = [0.0]
    lines: list[dict[str, object]] = []
    bounded = BoundedLog(lambda event, **kw: lines.append({"event": event, **kw}), 10.0, lambda: now[0])
    for _ in range(100):
        bounded("Join", "refused")
    now[0] = 10.5
    bounded("Join", "refused")
    bounded("GetTask", "refused")
    assert [(line["event"], line["skipped"]) for line in lines] == [("refused", 0), ("refused", 99), ("refused", 0)]


def test_every_rpc_of_the_proto_has_one_row_and_one_handler() -> None:
    """server/wire/rpcs.py is the one declaration of the federation port's RPCs: its rows are the proto's methods,
    with the proto's request and reply types, and the servicer has a handler for each (and nothing else)."""
    from pfeddc.common.proto import federation_pb2 as proto
    from pfeddc.server.wire.rpcs import RPCS
    from pfeddc.server.wire.servicer import CoordinatorServicer

    service = proto.DESCRIPTOR.services_by_name["Coordinator"]
    assert set(RPCS) == {m.name for m in service.methods}
    for method in service.methods:
        rpc = RPCS[method.name]
        assert rpc.request.DESCRIPTOR is method.input_type and rpc.reply.DESCRIPTOR is method.output_type
        assert callable(getattr(CoordinatorServicer, method.name))
    handlers = {n for n in vars(CoordinatorServicer) if n[0].isupper()}
    assert handlers == set(RPCS)
    assert {n for n, r in RPCS.items() if not r.bound} == {"GetFederation", "Join"}  # before any join secret
