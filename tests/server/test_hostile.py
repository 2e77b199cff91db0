"""A faulty or hostile site with valid credentials, scripted with the generated stubs against a real coordinator."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from structlog.testing import capture_logs
from tests_support import StartCoordinator

from pfeddc.client.connection import Backoff, Connection
from pfeddc.common import serde, wire
from pfeddc.common.logs import configure_logging
from pfeddc.common.messages import Code, Metrics, Refused
from pfeddc.common.proto import federation_pb2 as pb
from pfeddc.common.proto import federation_pb2_grpc as pb_grpc
from pfeddc.common.spec import TensorSpec
from pfeddc.common.transport import JOIN_SECRET_METADATA_KEY
from pfeddc.server.app import build_parser, start
from pfeddc.server.ops.certs import main as certs_main

SPEC = [TensorSpec("text.global", (4, 128))]  # promptfl, --text-ctx 4 on the embedded backbone
FLAGS = ("--rounds", "3", "--min-clients", "2", "--method", "promptfl", "--text-ctx", "4")
GOOD = Metrics(train_loss=0.5, accuracy_before=0.1, accuracy_after=0.2, num_test_examples=5)
METRICS = wire.metrics_to_proto(GOOD)


class Site:
    """A client that says whatever it likes, straight through the generated stub."""

    def __init__(self, port: int, client_id: str, secret: str | None = None) -> None:
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.stub = pb_grpc.CoordinatorStub(self.channel)
        self.client_id = client_id
        self.metadata = [(JOIN_SECRET_METADATA_KEY, secret)] if secret else None

    def join(self, num_examples: int, spec: list[TensorSpec] = SPEC) -> pb.JoinReply:
        request = pb.JoinRequest(client_id=self.client_id, num_examples=num_examples, spec=wire.spec_to_proto(spec))
        reply: pb.JoinReply = self.stub.Join(request, timeout=10, metadata=self.metadata)
        return reply

    def task(self) -> pb.TaskReply:
        reply: pb.TaskReply = self.stub.GetTask(pb.TaskRequest(client_id=self.client_id), timeout=10,
                                                 metadata=self.metadata)
        return reply

    def submit(self, payload: bytes, num_examples: int, round_: int = 1) -> pb.UpdateReply:
        request = pb.UpdateRequest(client_id=self.client_id, round=round_, global_state=payload,
                                   num_examples=num_examples, metrics=METRICS)
        reply: pb.UpdateReply = self.stub.SubmitUpdate(request, timeout=30, metadata=self.metadata)
        return reply


def filled(value: float) -> bytes:
    return serde.encode({"text.global": np.full((4, 128), value, np.float32)})


def refusal(call: object) -> tuple[Code, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()  # type: ignore[operator]
    return wire.rpc_code(info.value), wire.rpc_details(info.value)


def raw_safetensors(header: dict[str, object], data: bytes = b"") -> bytes:
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + data


def test_hostile_weight_is_the_join_count_capped_and_a_disagreeing_submit_is_refused(
    coordinator: StartCoordinator,
) -> None:
    server = coordinator(*FLAGS, "--update-clip-norm", "0", "--max-examples-per-client", "1000")
    honest, evil = Site(server.port, "site-a"), Site(server.port, "evil")
    assert honest.join(10).weight == 10
    assert evil.join(10**15).weight == 1000  # capped at Join
    code, message = refusal(lambda: evil.submit(filled(9.0), 10**15 + 1))
    assert code == Code.INVALID_ARGUMENT and "declared at Join" in message
    evil.submit(filled(9.0), 10**15)
    honest.submit(filled(1.0), 10)
    # FedAvg with the capped weight: (1000 * 9 + 10 * 1) / 1010, not the attacker's 9.0
    np.testing.assert_allclose(server.federation.global_tensors["text.global"], (9000 + 10) / 1010, rtol=1e-6)


def test_hostile_absurd_magnitude_is_refused_and_clipping_bounds_the_rest(coordinator: StartCoordinator) -> None:
    server = coordinator(*FLAGS, "--update-clip-norm", "1.0")
    honest, evil = Site(server.port, "site-a"), Site(server.port, "evil")
    honest.join(10)
    evil.join(10)
    code, message = refusal(lambda: evil.submit(filled(3e38), 10))
    assert code == Code.INVALID_ARGUMENT and "magnitude" in message and "--max-abs-value" in message
    assert server.federation.round == 1
    evil.submit(filled(100.0), 10)  # finite and under the magnitude limit: accepted, clipped
    honest.submit(filled(0.001), 10)
    change = server.federation.global_tensors["text.global"].astype(np.float64)
    # each change is clipped to L2 norm 1: the average moves by at most 1, whatever the attacker sent
    assert np.sqrt(np.sum(change**2)) <= 1.0 + 1e-5
    assert server.federation.last_round is not None and server.federation.last_round.clipped == ("evil",)


def test_hostile_headers_are_bounded_by_the_spec_before_parsing(coordinator: StartCoordinator) -> None:
    server = coordinator(*FLAGS)
    evil = Site(server.port, "evil")
    Site(server.port, "site-a").join(10)
    evil.join(10)
    huge = raw_safetensors({f"t{i}": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]} for i in range(50_000)})
    code, message = refusal(lambda: evil.submit(huge, 10))  # 3 MB: above the request limit the spec sets
    assert code == Code.RESOURCE_EXHAUSTED
    many = raw_safetensors({f"t{i}": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]} for i in range(90)})
    code, message = refusal(lambda: evil.submit(many, 10))  # within the request limit, beyond the header's
    assert code == Code.INVALID_ARGUMENT and "header of" in message and "spec needs" in message
    few = raw_safetensors({f"t{i}": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]} for i in range(3)})
    code, message = refusal(lambda: evil.submit(few, 10))
    assert code == Code.INVALID_ARGUMENT and "3 tensors" in message
    assert server.federation.round == 1 and set(server.federation.snapshot().sampled) == {"evil", "site-a"}


@pytest.mark.parametrize("dtype", ["BF16", "F8_E4M3", "Q4"])
def test_hostile_unknown_dtypes_are_invalid_argument_not_unknown(coordinator: StartCoordinator, dtype: str) -> None:
    server = coordinator(*FLAGS)
    evil = Site(server.port, "evil")
    Site(server.port, "site-a").join(10)
    evil.join(10)
    size = 4 * 128 * (2 if dtype == "BF16" else 1)
    payload = raw_safetensors({"text.global": {"dtype": dtype, "shape": [4, 128], "data_offsets": [0, size]}},
                              b"\0" * size)
    code, message = refusal(lambda: evil.submit(payload, 10))
    assert code == Code.INVALID_ARGUMENT and dtype in message


def test_hostile_client_id_must_match_in_full(coordinator: StartCoordinator) -> None:
    server = coordinator(*FLAGS)
    Site(server.port, "hospital-a").join(10)
    code, message = refusal(lambda: Site(server.port, "hospital-a\n").join(10))
    assert code == Code.INVALID_ARGUMENT and "must be 1-128 letters" in message
    assert {r.client_id for r in server.federation.snapshot().clients} == {"hospital-a"}


def test_open_mode_binds_a_client_id_to_its_join_secret(coordinator: StartCoordinator) -> None:
    server = coordinator(*FLAGS)
    owner = Connection(f"127.0.0.1:{server.port}", "site-a", backoff=Backoff(0.05, 0.1, 2), join_secret="s3cret")
    assert owner.join(10, SPEC).weight == 10
    Site(server.port, "site-b", "other").join(10)
    for impostor in (Site(server.port, "site-a", "guess"), Site(server.port, "site-a")):
        for call in (impostor.task, lambda i=impostor: i.submit(filled(1.0), 10), lambda i=impostor: i.join(10**6)):
            code, message = refusal(call)
            assert code == Code.PERMISSION_DENIED and "join secret" in message
    assert owner.task().action == "train"  # the owner is neither locked out nor re-weighted
    assert server.federation.snapshot().clients[0].num_examples == 10


def test_non_loopback_bind_without_client_auth_needs_insecure(tmp_path: object) -> None:
    argv = ["--bind", "0.0.0.0", "--port", "0", "--state-dir", str(tmp_path), "--rounds", "1"]
    with pytest.raises(ValueError, match="--insecure") as info:
        start(build_parser().parse_args(argv))
    assert "without TLS and client authentication" in str(info.value)
    start(build_parser().parse_args([*argv, "--insecure"])).stop(0)


def test_the_design_command_starts_on_loopback_and_credentials_open_every_interface(tmp_path: Path) -> None:
    """`pfeddc-server --rounds 20` (here on a free port) starts: without credentials it listens on loopback
    only; with TLS and client authentication every interface, as the README's by-hand federation needs."""
    configure_logging("json", "info")
    try:
        with capture_logs() as logs:
            bare = start(build_parser().parse_args(["--rounds", "20", "--port", "0", "--state-dir",
                                                    str(tmp_path / "a")]))
    finally:
        configure_logging("json", "warning")
    said = [e for e in logs if e["event"] == "loopback_only"]
    assert len(said) == 1 and "to serve other machines" in said[0]["advice"]
    try:
        with grpc.insecure_channel(f"127.0.0.1:{bare.port}") as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        bare.stop(0)
    creds = tmp_path / "creds"
    certs_main(["init", "--out", str(creds), "--host", "localhost"])
    secured = build_parser().parse_args(["--rounds", "1", "--port", "0", "--state-dir", str(tmp_path / "b"),
                                         "--tls-cert", str(creds / "coordinator.pem"),
                                         "--tls-key", str(creds / "coordinator.key"),
                                         "--tls-client-ca", str(creds / "ca.pem")])
    start(secured).stop(0)
    assert secured.bind == "0.0.0.0"


def test_beyond_loopback_tokens_alone_need_an_explicit_flag(tmp_path: Path) -> None:
    """Client certificates by default: without them a stranger completes the TLS handshake and opens streams."""
    creds = tmp_path / "creds"
    certs_main(["init", "--out", str(creds), "--host", "localhost"])
    certs_main(["client", "--out", str(creds), "--client-id", "site-a"])
    argv = ["--rounds", "1", "--port", "0", "--bind", "0.0.0.0", "--state-dir", str(tmp_path / "s"),
            "--tls-cert", str(creds / "coordinator.pem"), "--tls-key", str(creds / "coordinator.key"),
            "--tokens", str(creds / "tokens.json")]
    with pytest.raises(ValueError, match="tokens alone") as info:
        start(build_parser().parse_args(argv))
    assert "--tls-client-ca" in str(info.value) and "--allow-tokens-only" in str(info.value)
    start(build_parser().parse_args([*argv, "--allow-tokens-only"])).stop(0)
    start(build_parser().parse_args([*argv, "--fresh", "--tls-client-ca", str(creds / "ca.pem")])).stop(0)


@pytest.mark.parametrize("flag", ["--port", "--health-port", "--metrics-port"])
@pytest.mark.parametrize("value", ["99999", "-1", "http"])
def test_a_port_out_of_range_is_refused_by_name(flag: str, value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["--rounds", "1", flag, value])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert flag in err and ("out of range" in err or "not a port number" in err)


def test_a_refused_update_leaves_the_client_free_to_send_a_good_one(coordinator: StartCoordinator) -> None:
    server = coordinator(*FLAGS, "--update-clip-norm", "0")
    a = Connection(f"127.0.0.1:{server.port}", "site-a", backoff=Backoff(0.05, 0.1, 2))
    b = Connection(f"127.0.0.1:{server.port}", "site-b", backoff=Backoff(0.05, 0.1, 2))
    a.join(10, SPEC)
    b.join(10, SPEC)
    with pytest.raises(Refused) as info:
        a.submit(1, {"text.global": np.full((4, 128), np.nan, np.float32)}, 10, GOOD)
    assert info.value.code == Code.INVALID_ARGUMENT
    a.submit(1, {"text.global": np.full((4, 128), 2.0, np.float32)}, 10, GOOD)
    b.submit(1, {"text.global": np.full((4, 128), 4.0, np.float32)}, 10, GOOD)
    np.testing.assert_allclose(server.federation.global_tensors["text.global"], 3.0)


def test_dp_with_the_class_head_is_refused_with_the_measurement(tmp_path: Path) -> None:
    argv = ["--rounds", "1", "--port", "0", "--state-dir", str(tmp_path), "--dp-noise-multiplier", "1.0",
            "--dp-clip", "0.1"]
    with pytest.raises(ValueError, match="refused with --method pfeddc") as info:
        start(build_parser().parse_args(argv))
    assert "11.9%" in str(info.value) and "--secure-aggregation" in str(info.value)
    start(build_parser().parse_args([*argv, "--method", "pfeddc-noproto"])).stop(0)
