"""The wire layer: every domain type survives protobuf and back, and the field lists cannot drift."""

from __future__ import annotations

from dataclasses import fields

import grpc
import numpy as np
import pytest

from pfeddc.client.connection import global_tensors
from pfeddc.common import serde, wire
from pfeddc.common.messages import (
    MAX_FAILURE_DETAIL_CHARS,
    Action,
    Code,
    FailureReason,
    FailureReport,
    FederationInfo,
    FederationRequest,
    HeartbeatRequest,
    JoinRequest,
    JoinResult,
    Metrics,
    SubmitResult,
    Task,
    TaskRequest,
    TrainSettings,
    UpdateRequest,
)
from pfeddc.common.proto import federation_pb2 as pb
from pfeddc.common.spec import Fusion, PromptConfig, TensorSpec

SPEC = [TensorSpec("text.global", (4, 8)), TensorSpec("vision.global", (1, 2, 16), "F16")]


def test_wire_field_lists_of_settings_and_metrics_equal_the_proto_messages() -> None:
    assert [f.name for f in fields(TrainSettings)] == [f.name for f in pb.TrainSettings.DESCRIPTOR.fields]
    assert list(Metrics.names()) == [f.name for f in pb.Metrics.DESCRIPTOR.fields]


@pytest.mark.parametrize("action", list(Action))
def test_wire_task_round_trips_for_every_action(action: Action) -> None:
    payload = serde.encode({"text.global": np.arange(32, dtype=np.float32).reshape(4, 8)})
    task = Task(action, round=3, total_rounds=9, payload=payload, sha256=serde.sha256(payload),
                settings=TrainSettings(local_epochs=2, lr=0.01, batch_size=8, seed=7) if action == Action.TRAIN
                else None, retry_after_s=1.5 if action == Action.WAIT else 0.0, deadline_s=12.0)
    back = wire.task_from_proto(pb.TaskReply.FromString(wire.task_to_proto(task).SerializeToString()))
    assert back == task
    tensors = serde.decode_verified(back.payload, back.sha256, "global prompts")
    np.testing.assert_array_equal(tensors["text.global"], np.arange(32).reshape(4, 8))


def test_wire_task_with_unknown_action_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="unknown task action 0"):
        wire.task_from_proto(pb.TaskReply())


def test_wire_task_tensors_refuse_bytes_that_fail_their_hash() -> None:
    payload = serde.encode({"text.global": np.zeros((4, 8), np.float32)})
    task = Task(Action.TRAIN, 1, 2, payload, sha256="0" * 64)
    with pytest.raises(serde.InvalidTensors, match="global prompts of round 1 failed their SHA-256"):
        global_tensors(task)


def test_wire_every_request_round_trips_through_its_message() -> None:
    metrics = Metrics(0.5, 0.25, 0.75, 3, 1.5, 0.5)  # no NaN: NaN != NaN
    cases = [
        (FederationRequest("site-a"), wire.federation_request_to_proto, wire.federation_request_from_proto),
        (JoinRequest("site-a", 12, SPEC), wire.join_request_to_proto, wire.join_request_from_proto),
        (TaskRequest("site-a", 2.5), wire.task_request_to_proto, wire.task_request_from_proto),
        (UpdateRequest("site-a", 3, b"bytes", 12, metrics, 30.0), wire.update_request_to_proto,
         wire.update_request_from_proto),
        (FailureReport("site-a", 3, FailureReason.COLLAPSED, "one class"), wire.failure_to_proto,
         wire.failure_from_proto),
        (HeartbeatRequest("site-a", 4), wire.heartbeat_request_to_proto, wire.heartbeat_request_from_proto),
    ]
    for request, to_proto, from_proto in cases:
        message = to_proto(request)  # type: ignore[operator]
        assert from_proto(type(message).FromString(message.SerializeToString())) == request  # type: ignore[operator]
    assert wire.heartbeat_reply_from_proto(wire.heartbeat_reply_to_proto(7)) == 7


def test_wire_failure_detail_is_cut_and_an_unknown_reason_reads_as_other() -> None:
    long = wire.failure_to_proto(FailureReport("site-a", 1, FailureReason.OTHER, "x" * (MAX_FAILURE_DETAIL_CHARS + 9)))
    assert len(long.detail) == MAX_FAILURE_DETAIL_CHARS
    newer = pb.FailureReport(client_id="a", round=1, reason=99)  # type: ignore[arg-type]  # a newer client
    assert wire.failure_from_proto(newer).reason == FailureReason.OTHER


def test_wire_info_metrics_join_and_submit_round_trip() -> None:
    info = FederationInfo("abc123", 20, 4, "embedded", PromptConfig(method="promptfl", fusion=Fusion.SUM), SPEC)
    assert wire.info_from_proto(wire.info_to_proto(info)) == info
    metrics = Metrics(train_loss=0.5, accuracy_before=0.25, accuracy_after=0.75, num_test_examples=12,
                      train_seconds=3.5, accuracy_global=0.5)
    assert wire.metrics_from_proto(wire.metrics_to_proto(metrics)) == metrics
    assert wire.join_from_proto(wire.join_to_proto(JoinResult("f", 3, 1))) == JoinResult("f", 3, 1)
    assert wire.submit_from_proto(wire.submit_to_proto(SubmitResult(True, 2, 3))) == SubmitResult(True, 2, 3)
    assert wire.spec_from_proto(wire.spec_to_proto(SPEC)) == SPEC


def test_wire_every_code_is_a_grpc_status_and_back() -> None:
    for code in Code:
        assert wire.code_of(wire.status_of(code)) == code
    assert wire.code_of(grpc.StatusCode.DATA_LOSS) == Code.UNKNOWN
    assert wire.code_of(None) == Code.UNKNOWN


def test_train_settings_refuse_nonsense_and_apply_only_given_overrides() -> None:
    with pytest.raises(ValueError, match="lr must be > 0"):
        TrainSettings(lr=0.0)
    base = TrainSettings()
    changed = base.with_overrides(lr=0.05, batch_size=None)
    assert changed.lr == 0.05 and changed.batch_size == base.batch_size
