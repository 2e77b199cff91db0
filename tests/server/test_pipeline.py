"""One owner per value on the update path: each committed global encoded once, each update spec-checked once."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors import safe_open

from pfeddc.common import serde
from pfeddc.common.messages import Action, Metrics
from pfeddc.common.spec import TensorSpec
from pfeddc.server.ops.checkpoint import Checkpoint
from pfeddc.server.pipeline import stages as pipeline
from pfeddc.server.round.federation import Federation, FederationConfig, FederationState

SPEC = [TensorSpec("text.global", (2, 3)), TensorSpec("vision.global", (1, 2, 4))]
METRICS = Metrics(train_loss=1.0, accuracy_before=0.5, accuracy_after=0.6, num_test_examples=10)


def counting(monkeypatch: pytest.MonkeyPatch, module: Any, name: str) -> list[int]:
    calls: list[int] = []
    real: Callable[..., Any] = getattr(module, name)

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, spy)
    return calls


def payload(value: float) -> bytes:
    return serde.encode({s.name: np.full(s.shape, value, np.float32) for s in SPEC})


def started(tmp_path: Path, rounds: int = 3) -> tuple[Federation, Checkpoint]:
    checkpoint = Checkpoint(tmp_path)
    state = FederationState(1, {s.name: np.zeros(s.shape, np.float32) for s in SPEC}, {})
    config = FederationConfig(rounds=rounds, min_clients=2, update_clip_norm=0.0)
    fed = Federation(config, SPEC, state, save=checkpoint.save)
    for client_id in ("a", "b"):
        fed.join(client_id, 10, SPEC)
    return fed, checkpoint


def test_pipeline_encodes_each_committed_global_once_for_the_checkpoint_and_every_task(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fed, checkpoint = started(tmp_path)
    payloads = {r: payload(float(r)) for r in (1, 2, 3)}
    encode = serde.encode
    serde.spec_header_bytes(SPEC)  # its cached encode of zeros is not a commit's
    encodes = counting(monkeypatch, serde, "encode")
    saved_sha = None
    for round_ in (1, 2, 3, 4):
        tasks = [fed.task(c) for c in ("a", "b")]
        shas = {t.sha256 for t in tasks}
        assert len(shas) == 1 and len(encodes) == (round_ > 1), "each committed global is encoded exactly once"
        if saved_sha is not None:  # the checkpoint and every task carry the same bytes' digest
            assert shas == {saved_sha} == {serde.sha256(encode(fed.global_tensors))}
        if round_ == 4:
            assert fed.finished and all(t.action == Action.FINISHED for t in tasks)
            break
        assert all(t.action == Action.TRAIN for t in tasks)
        encodes.clear()
        for client_id in ("a", "b"):
            fed.submit(client_id, round_, payloads[round_], 10, METRICS)
        with safe_open(str(checkpoint.path), framework="numpy") as fh:
            saved_sha = json.loads((fh.metadata() or {})["pfeddc_federation"])["tensors_sha256"]


def test_pipeline_checks_each_accepted_update_against_the_spec_once(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    fed, _ = started(tmp_path, rounds=1)
    fed.task("a"), fed.task("b")
    spec_checks = counting(monkeypatch, serde, "spec_difference")
    validations = counting(monkeypatch, serde, "validate")
    fed.submit("a", 1, payload(1.0), 10, METRICS)
    assert (len(spec_checks), len(validations)) == (1, 0)
    fed.submit("b", 1, payload(3.0), 10, METRICS)  # closes the round: aggregate and commit check nothing again
    assert (len(spec_checks), len(validations)) == (2, 0)
    assert fed.round == 2


def test_pipeline_lists_the_round_stages_in_order() -> None:
    assert [s.__name__ for s in pipeline.ROUND_STAGES] == ["bound_classes", "bound", "aggregate", "noise", "commit"]


def test_pipeline_checkpoint_reuses_the_encoded_bytes_and_reads_back(tmp_path: Path) -> None:
    fed, checkpoint = started(tmp_path, rounds=1)
    fed.task("a"), fed.task("b")
    fed.submit("a", 1, payload(1.0), 10, METRICS)
    fed.submit("b", 1, payload(3.0), 10, METRICS)
    state = checkpoint.load(SPEC, 1)
    assert state is not None and state.round == 2
    np.testing.assert_allclose(state.global_tensors["text.global"], 2.0)
    assert state.global_encoded().sha256 == fed.task("a").sha256
