"""State on disk: constant size per round, checksummed, honest, and always in agreement with rounds.jsonl."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open

from pfeddc.common import serde
from pfeddc.common.messages import Metrics
from pfeddc.common.spec import TensorSpec
from pfeddc.server.ops.checkpoint import CHECKPOINT_FILE, ROUNDS_FILE, Checkpoint, CheckpointError
from pfeddc.server.round.federation import Federation, FederationConfig, FederationState

SPEC = [TensorSpec("text.global", (4, 8))]
METRICS = Metrics(train_loss=0.5, accuracy_before=0.25, accuracy_after=0.5, num_test_examples=4)


def run_rounds(state_dir: Path, rounds: int, clients: int = 3, total: int = 50) -> Federation:
    """A federation on a real Checkpoint that completes `rounds` rounds with `clients` clients."""
    checkpoint = Checkpoint(state_dir)
    state = checkpoint.load(SPEC, total) or FederationState(1, {"text.global": np.zeros((4, 8), np.float32)}, {})
    checkpoint.save(state)
    fed = Federation(FederationConfig(rounds=total, min_clients=clients), SPEC, state, save=checkpoint.save)
    ids = [f"site-{i}" for i in range(clients)]
    for cid in ids:
        fed.join(cid, 10, SPEC)
    for _ in range(rounds):
        for i, cid in enumerate(ids):
            payload = serde.encode({"text.global": np.full((4, 8), 0.01 * (fed.round + i), np.float32)})
            fed.submit(cid, fed.round, payload, 10, METRICS)
    return fed


def rounds_in(path: Path) -> list[int]:
    return [json.loads(line)["round"] for line in (path / ROUNDS_FILE).read_text().splitlines()]


def test_checkpoint_size_is_constant_per_round_and_history_goes_to_rounds_jsonl(tmp_path: Path) -> None:
    fed = run_rounds(tmp_path, 2)
    size_at_2 = (tmp_path / CHECKPOINT_FILE).stat().st_size
    fed = run_rounds(tmp_path, 28)  # resumes, 28 more rounds with the same clients
    assert fed.round == 31
    # the same but for the round number's extra digit, which the 8-byte header alignment may or may not absorb
    assert 0 <= (tmp_path / CHECKPOINT_FILE).stat().st_size - size_at_2 <= 8
    assert rounds_in(tmp_path) == list(range(1, 31))
    line = json.loads((tmp_path / ROUNDS_FILE).read_text().splitlines()[-1])
    assert line["time"] > 1e9 and line["clients"] == ["site-0", "site-1", "site-2"] and line["attempts"] == 1


def test_checkpoint_bit_flip_in_tensor_data_is_refused(tmp_path: Path) -> None:
    run_rounds(tmp_path, 1)
    raw = bytearray((tmp_path / CHECKPOINT_FILE).read_bytes())
    raw[-3] ^= 0x10  # a bit of the last tensor value
    (tmp_path / CHECKPOINT_FILE).write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="fails its checksum"):
        Checkpoint(tmp_path).load(SPEC, 50)


def test_deleted_checkpoint_with_history_refuses_to_start_unless_fresh(tmp_path: Path) -> None:
    run_rounds(tmp_path, 2)
    (tmp_path / CHECKPOINT_FILE).unlink()
    with pytest.raises(CheckpointError, match="--fresh"):
        Checkpoint(tmp_path).load(SPEC, 50)
    assert Checkpoint(tmp_path).load(SPEC, 50, fresh=True) is None
    assert not (tmp_path / ROUNDS_FILE).exists() and len(list(tmp_path.glob(f"{ROUNDS_FILE}.*.old"))) == 1
    assert run_rounds(tmp_path, 1).round == 2 and rounds_in(tmp_path) == [1]


@pytest.mark.parametrize("round_", [-5, 0, 52, "3"])
def test_checkpoint_with_an_impossible_round_is_refused(tmp_path: Path, round_: object) -> None:
    tensors = {"text.global": np.zeros((4, 8), np.float32)}
    meta = {"format": 2, "round": round_, "clients": {}, "privacy": [],
            "tensors_sha256": serde.sha256(serde.encode(tensors))}
    serde.save_file(tmp_path / CHECKPOINT_FILE, tensors, metadata={"pfeddc_federation": json.dumps(meta)})
    with pytest.raises(CheckpointError, match="impossible with --rounds 50"):
        Checkpoint(tmp_path).load(SPEC, 50)


def test_history_line_of_an_uncommitted_round_and_a_torn_line_are_dropped_on_start(tmp_path: Path) -> None:
    run_rounds(tmp_path, 3)
    with open(tmp_path / ROUNDS_FILE, "a") as fh:  # crash after appending round 4, before its checkpoint
        fh.write(json.dumps({"round": 4, "clients": []}) + "\n" + '{"round": 5, "cli')
    state = Checkpoint(tmp_path).load(SPEC, 50)
    assert state is not None and state.round == 4
    assert rounds_in(tmp_path) == [1, 2, 3]


def test_history_missing_committed_rounds_refuses_to_start(tmp_path: Path) -> None:
    run_rounds(tmp_path, 3)
    lines = (tmp_path / ROUNDS_FILE).read_text().splitlines()
    (tmp_path / ROUNDS_FILE).write_text("\n".join(lines[:1]) + "\n")
    with pytest.raises(CheckpointError, match="lacks rounds 2..3"):
        Checkpoint(tmp_path).load(SPEC, 50)


def test_format_1_checkpoint_rebuilds_the_history_line_it_lacked(tmp_path: Path) -> None:
    tensors = {"text.global": np.zeros((4, 8), np.float32)}
    history = [{"round": 1, "clients": ["a"]}, {"round": 2, "clients": ["a"]}]
    meta = {"format": 1, "round": 3, "clients": {"a": {"num_examples": 5, "rounds_participated": 2}},
            "history": history}
    serde.save_file(tmp_path / CHECKPOINT_FILE, tensors, metadata={"pfeddc_federation": json.dumps(meta)})
    (tmp_path / ROUNDS_FILE).write_text(json.dumps(history[0]) + "\n")  # the old save crashed before appending 2
    state = Checkpoint(tmp_path).load(SPEC, 50)
    assert state is not None and state.round == 3 and state.clients["a"].rounds_participated == 2
    assert rounds_in(tmp_path) == [1, 2]
    Checkpoint(tmp_path).save(state)
    with safe_open(str(tmp_path / CHECKPOINT_FILE), framework="numpy") as fh:
        assert "history" not in json.loads(fh.metadata()["pfeddc_federation"])


def test_history_is_strict_json_even_for_undefined_metrics(tmp_path: Path) -> None:
    checkpoint = Checkpoint(tmp_path)
    state = FederationState(1, {"text.global": np.zeros((4, 8), np.float32)}, {})
    checkpoint.save(state)
    fed = Federation(FederationConfig(rounds=2, min_clients=1), SPEC, state, save=checkpoint.save)
    fed.join("a", 10, SPEC)
    nothing_tested = Metrics(train_loss=0.0, accuracy_before=0.0, accuracy_after=0.0, num_test_examples=0)
    fed.submit("a", 1, serde.encode({"text.global": np.ones((4, 8), np.float32)}), 10, nothing_tested)

    def no_constants(name: str) -> None:
        raise AssertionError(f"rounds.jsonl holds {name}")

    record = json.loads((tmp_path / ROUNDS_FILE).read_text(), parse_constant=no_constants)
    assert record["accuracy_after"] is None and record["num_examples"] == 10


def test_a_restored_conviction_ends_on_time_even_when_no_round_can_commit_without_the_site(tmp_path: Path) -> None:
    """A checkpoint's conviction with 5 s left, in a federation whose rounds need all 4 sites: the round opens
    once the 5 s have passed (the exclusion is read at every draw, not only when a round commits, which here
    could never happen); one saved with more time left than --client-ttl is held to --client-ttl."""
    state = FederationState(1, {"text.global": np.zeros((4, 8), np.float32)}, {}, convicted={"site-d": 5.0})
    Checkpoint(tmp_path).save(state)
    loaded = Checkpoint(tmp_path).load(SPEC, 2)
    assert loaded is not None and loaded.convicted == {"site-d": 5.0}
    now = [1000.0]
    fed = Federation(FederationConfig(rounds=2, min_clients=4, quorum=4), SPEC, loaded, clock=lambda: now[0])
    sites = ["site-a", "site-b", "site-c", "site-d"]
    for cid in sites:
        fed.join(cid, 10, SPEC)
    assert fed.snapshot().sampled == frozenset()
    now[0] += 6.0
    fed.tick()
    assert fed.snapshot().sampled == set(sites)
    long = FederationState(1, {"text.global": np.zeros((4, 8), np.float32)}, {}, convicted={"site-d": 1e9})
    held = Federation(FederationConfig(rounds=2, min_clients=4, quorum=4, client_ttl_s=60.0), SPEC, long,
                      clock=lambda: now[0])
    for cid in sites:
        held.join(cid, 10, SPEC)
    now[0] += 61.0
    held.tick()
    assert held.snapshot().sampled == set(sites)


@pytest.mark.parametrize("convicted", [{"site-d": -1.0}, {"site-d": "5"}, {"site-d": True}, ["site-d"]])
def test_a_checkpoint_with_impossible_convictions_is_refused_by_name(tmp_path: Path, convicted: object) -> None:
    tensors = {"text.global": np.zeros((4, 8), np.float32)}
    meta = {"format": 2, "round": 1, "clients": {}, "privacy": [], "convicted": convicted,
            "tensors_sha256": serde.sha256(serde.encode(tensors))}
    serde.save_file(tmp_path / CHECKPOINT_FILE, tensors, metadata={"pfeddc_federation": json.dumps(meta)})
    with pytest.raises(CheckpointError, match="impossible convictions"):
        Checkpoint(tmp_path).load(SPEC, 2)
