"""Bounded registries and fair holds: capped client counts, a checkpoint that stays writable, advice by cause."""

from __future__ import annotations

import asyncio
import errno
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pfeddc.common import serde
from pfeddc.common.ids import MAX_CLIENT_ID_CHARS
from pfeddc.common.messages import Code, Metrics, Refused
from pfeddc.common.secagg.exchange import SPOKEN
from pfeddc.common.secagg.identity import Identity
from pfeddc.common.spec import TensorSpec
from pfeddc.server.ops import checkpoint as checkpoint_module
from pfeddc.server.ops.checkpoint import CHECKPOINT_FILE, Checkpoint, CheckpointError
from pfeddc.server.round import secure
from pfeddc.server.round.config import DEFAULT_MAX_CLIENTS, MAX_CLIENTS_LIMIT
from pfeddc.server.round.federation import Federation, FederationConfig, FederationState
from pfeddc.server.round.longpoll import ChangeFeed
from pfeddc.server.round.saving import save_advice
from pfeddc.server.round.state import MAX_RETIRED_KEYS, ClientRecord

SPEC = [TensorSpec("text.global", (2, 3))]
SECURE: dict[str, Any] = {"rounds": 2, "min_clients": 3, "secure_aggregation": True}
TENSORS = {"text.global": np.zeros((2, 3), np.float32)}
METRICS = Metrics(train_loss=0.5, accuracy_before=0.1, accuracy_after=0.2, num_test_examples=5)


def make(**overrides: object) -> Federation:
    config = FederationConfig(**{"rounds": 2, "min_clients": 2, **overrides})  # type: ignore[arg-type]
    return Federation(config, SPEC, FederationState(1, dict(TENSORS), {}))


def test_registry_refuses_new_ids_beyond_max_clients_but_not_rejoins() -> None:
    fed = make(max_clients=3)
    for cid in ("a", "b", "c"):
        fed.join(cid, 10, SPEC)
    with pytest.raises(Refused) as info:
        fed.join("d", 10, SPEC)
    assert info.value.code == Code.RESOURCE_EXHAUSTED and "--max-clients" in info.value.message
    assert fed.join("a", 20, SPEC) == 20  # a known id may always re-join


def test_registry_caps_new_ids_per_remote_peer() -> None:
    fed = make(max_joins_per_peer=2)
    fed.join("a", 10, SPEC, peer="ipv4:10.0.0.7")
    fed.join("b", 10, SPEC, peer="ipv4:10.0.0.7")
    with pytest.raises(Refused, match="--max-joins-per-peer"):
        fed.join("c", 10, SPEC, peer="ipv4:10.0.0.7")
    fed.join("a", 10, SPEC, peer="ipv4:10.0.0.7")  # re-joins do not count
    fed.join("c", 10, SPEC, peer="ipv4:10.0.0.8")
    fed.join("d", 10, SPEC)  # no peer: loopback or authenticated, not counted


def test_open_mode_beyond_loopback_needs_a_join_secret_for_every_id() -> None:
    fed = make(require_join_secret=True)
    with pytest.raises(Refused) as info:
        fed.join("a", 10, SPEC)
    assert info.value.code == Code.UNAUTHENTICATED and "join secret" in info.value.message
    fed.join("a", 10, SPEC, secret="mine")
    with pytest.raises(Refused, match="another join secret"):
        fed.join("a", 10, SPEC, secret="theirs")


def test_a_signing_key_is_bound_at_the_first_join_and_kept_by_the_checkpoint(tmp_path: Path) -> None:
    """Secure rounds without client certificates: the key a site signs with is bound by its first Join, a Join
    without one or with another is refused (its peers pinned the first), saved and restored with the registry; a
    checkpoint from before signing keys resumes keyless and its secure rounds say they are unsigned."""
    mine, theirs = Identity.generate().credential, Identity.generate().credential
    checkpoint = Checkpoint(tmp_path)
    state = FederationState(1, dict(TENSORS), {})
    fed = Federation(FederationConfig(**SECURE), SPEC, state, save=checkpoint.save)
    fed.join("a", 10, SPEC, capabilities=SPOKEN, signing_key=mine)
    for key, code, words in ((b"", Code.FAILED_PRECONDITION, "carries none"),
                             (theirs, Code.PERMISSION_DENIED, "another signing key"),
                             (b"\x02" * 12, Code.INVALID_ARGUMENT, "33 bytes")):
        with pytest.raises(Refused) as refused:
            fed.join("a", 10, SPEC, capabilities=SPOKEN, signing_key=key)
        assert refused.value.code == code and words in refused.value.message
    fed.join("a", 10, SPEC, capabilities=SPOKEN, signing_key=mine)
    fed.join("b", 10, SPEC, capabilities=SPOKEN, signing_key=theirs)
    checkpoint.save(state)
    loaded = checkpoint.load(SPEC, 2)
    assert loaded is not None and loaded.clients["a"].signing_key == mine and loaded.clients["b"].signing_key == theirs
    meta = {"format": 2, "round": 1, "clients": {"a": {"num_examples": 5, "rounds_participated": 0}}}
    serde.save_file(tmp_path / "old" / CHECKPOINT_FILE, TENSORS, metadata={"pfeddc_federation": json.dumps(meta)})
    older = Checkpoint(tmp_path / "old").load(SPEC, 2)
    assert older is not None and older.clients["a"].signing_key == b""
    for c_key, signed in ((b"", False), (Identity.generate().credential, True)):
        plan = secure.open_run(FederationConfig(rounds=2, min_clients=3, secure_aggregation=True), 1, 1,
                               ["a", "b", "c"], {"a": 5, "b": 5, "c": 5}, SPEC, {}, 60.0, lambda *a, **k: None,
                               {"a": mine, "b": theirs, "c": c_key}).plan
        assert [s.signed for s in plan.values()] == [signed] * 3
    meta["clients"]["a"]["signing_key"] = "02zz"  # type: ignore[index]
    serde.save_file(tmp_path / "old" / CHECKPOINT_FILE, TENSORS, metadata={"pfeddc_federation": json.dumps(meta)})
    with pytest.raises(CheckpointError, match="unreadable signing key for client 'a'"):
        Checkpoint(tmp_path / "old").load(SPEC, 2)


def test_the_keys_of_evicted_ids_outlive_a_committed_round_and_a_restart(tmp_path: Path) -> None:
    """The checkpoint a round commits carries them, not only the live state."""
    checkpoint = Checkpoint(tmp_path)
    kept = Identity.generate().credential
    state = FederationState(1, dict(TENSORS), {}, retired_keys={"gone": kept})
    fed = Federation(FederationConfig(rounds=3, min_clients=2), SPEC, state, save=checkpoint.save)
    for c in ("a", "b"):
        fed.join(c, 10, SPEC)
    for c in ("a", "b"):
        fed.task(c)
        fed.submit(c, 1, serde.encode({"text.global": np.ones((2, 3), np.float32)}), 10, METRICS)
    assert fed.round == 2
    loaded = Checkpoint(tmp_path).load(SPEC, 3)
    assert loaded is not None and loaded.round == 2 and loaded.retired_keys == {"gone": kept}


def test_only_a_federation_that_checks_bound_keys_binds_them() -> None:
    """Plain rounds, or secure rounds signed with client certificates: nothing is bound, so a site that lost its
    state dir (a new key) joins again under its id (under mTLS its id is its certificate's name)."""
    mine, theirs = Identity.generate().credential, Identity.generate().credential
    for config in (FederationConfig(rounds=2, min_clients=3), FederationConfig(**SECURE, signing_ca="ca.pem")):
        state = FederationState(1, dict(TENSORS), {})
        fed = Federation(config, SPEC, state)
        fed.join("a", 10, SPEC, capabilities=SPOKEN, signing_key=mine)
        fed.join("a", 10, SPEC, capabilities=SPOKEN, signing_key=theirs)
        fed.join("a", 10, SPEC, capabilities=SPOKEN)
        assert state.clients["a"].signing_key == b""


def test_an_evicted_id_comes_back_only_with_the_key_it_had_bound(tmp_path: Path) -> None:
    """Its peers may have pinned it: were it to return with a new key, every peer would refuse the round. The key
    outlives the record (bounded, saved with the checkpoint)."""
    keys = {c: Identity.generate().credential for c in "abcd"}
    state = FederationState(1, dict(TENSORS), {c: ClientRecord(c, 10, signing_key=keys[c]) for c in "abc"})
    fed = Federation(FederationConfig(**SECURE, max_clients=3), SPEC, state)  # none seen since the restart
    fed.join("d", 10, SPEC, capabilities=SPOKEN, signing_key=keys["d"])  # full: the longest unseen makes room
    assert "a" not in state.clients and state.retired_keys == {"a": keys["a"]}
    Checkpoint(tmp_path).save(state)
    loaded = Checkpoint(tmp_path).load(SPEC, 2)
    assert loaded is not None and loaded.retired_keys == {"a": keys["a"]}
    with pytest.raises(Refused, match="another signing key"):
        fed.join("a", 10, SPEC, capabilities=SPOKEN, signing_key=keys["b"])
    assert sorted(state.clients) == ["b", "c", "d"] and "a" in state.retired_keys  # the refusal changed nothing
    fed.join("a", 10, SPEC, capabilities=SPOKEN, signing_key=keys["a"])
    assert state.clients["a"].signing_key == keys["a"] and "a" not in state.retired_keys
    for i in range(MAX_RETIRED_KEYS + 5):
        state.retire(ClientRecord(f"gone-{i}", 1, signing_key=keys["d"]))
    assert len(state.retired_keys) == MAX_RETIRED_KEYS and "gone-0" not in state.retired_keys


def test_a_join_refused_for_its_address_evicts_nobody() -> None:
    state = FederationState(1, dict(TENSORS), {c: ClientRecord(c, 10) for c in ("a", "b")})  # unseen: evictable
    fed = Federation(FederationConfig(rounds=2, min_clients=2, max_clients=2, max_joins_per_peer=1), SPEC, state)
    fed.join("c", 10, SPEC, peer="ipv4:10.0.0.7")  # evicts one unseen id for the new one
    with pytest.raises(Refused, match="--max-joins-per-peer"):
        fed.join("d", 10, SPEC, peer="ipv4:10.0.0.7")
    assert len(state.clients) == 2 and "c" in state.clients  # the refused Join took no one's place


def test_max_clients_is_bounded_by_what_the_checkpoint_can_hold() -> None:
    record = ClientRecord("x" * MAX_CLIENT_ID_CHARS, 10**9, 10**6, secret_sha256="f" * 64,
                          signing_key=Identity.generate().credential)
    worst = len(json.dumps({record.client_id: record.to_json()}, separators=(",", ":")))
    retired = len(json.dumps({record.client_id: record.signing_key.hex()}, separators=(",", ":")))
    assert worst * MAX_CLIENTS_LIMIT + retired * MAX_RETIRED_KEYS < checkpoint_module.MAX_META_BYTES
    with pytest.raises(ValueError, match="--max-clients"):
        FederationConfig(rounds=1, max_clients=MAX_CLIENTS_LIMIT + 1)


def test_checkpoint_at_the_default_cap_with_the_longest_ids_saves_and_loads(tmp_path: Path) -> None:
    clients = {f"{i:06d}" + "x" * (MAX_CLIENT_ID_CHARS - 6): ClientRecord(f"{i:06d}" + "x" * (MAX_CLIENT_ID_CHARS - 6),
                                                                          10, 1, secret_sha256="f" * 64)
               for i in range(DEFAULT_MAX_CLIENTS)}
    checkpoint = Checkpoint(tmp_path)
    checkpoint.save(FederationState(1, dict(TENSORS), clients))
    restored = checkpoint.load(SPEC, 2)
    assert restored is not None and len(restored.clients) == DEFAULT_MAX_CLIENTS


def test_checkpoint_over_the_header_budget_is_refused_with_the_right_advice(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checkpoint_module, "MAX_META_BYTES", 500)
    clients = {f"c{i}": ClientRecord(f"c{i}", 10) for i in range(50)}
    with pytest.raises(CheckpointError) as info:
        Checkpoint(tmp_path).save(FederationState(1, dict(TENSORS), clients))
    assert "100 MB header limit" in str(info.value)
    assert not (tmp_path / checkpoint_module.CHECKPOINT_FILE).exists()
    advice = save_advice(info.value)
    assert "--max-clients" in advice and "free space" not in advice
    assert "free space" in save_advice(OSError(errno.ENOSPC, "No space left on device"))
    assert "writable" in save_advice(OSError(errno.EROFS, "Read-only file system"))


def test_checkpoint_removes_temp_files_of_an_interrupted_write_on_start(tmp_path: Path) -> None:
    checkpoint = Checkpoint(tmp_path)
    checkpoint.save(FederationState(1, dict(TENSORS), {}))
    stale = tmp_path / f".{checkpoint_module.CHECKPOINT_FILE}.abc123.tmp"
    stale.write_bytes(b"half a checkpoint")
    keep = tmp_path / "notes.tmp"
    keep.write_text("not ours")
    assert checkpoint.load(SPEC, 2) is not None
    assert not stale.exists() and keep.exists()
    assert serde.remove_stale_temps(tmp_path / "missing") == []


def test_held_calls_are_capped_per_client_id() -> None:
    async def scenario() -> tuple[list[bool], bool, bool]:
        feed = ChangeFeed(max_waiters=100, max_per_key=2)
        feed.attach(asyncio.get_running_loop())
        held = [asyncio.create_task(feed.wait_async(0, 5.0, "greedy")) for _ in range(2)]
        await asyncio.sleep(0.05)
        third = await feed.wait_async(0, 5.0, "greedy")  # answered at once: the id holds its share
        other = asyncio.create_task(feed.wait_async(0, 5.0, "fair"))
        await asyncio.sleep(0.05)
        assert feed.held_by("greedy") == 2 and feed.held_by("fair") == 1
        feed.notify()
        return [await t for t in held], third, await other

    held, third, other = asyncio.run(scenario())
    assert held == [True, True] and third is False and other is True
