"""The coordinator's state on disk: the current state in one safetensors file, the history in rounds.jsonl.

checkpoint.safetensors holds only what the next round needs (the global prompts as tensors; the round,
the client registry and the privacy ledger in its metadata, with a SHA-256 of the tensors), so saving it
costs the same at every round. A round is committed by appending its summary to rounds.jsonl (fsynced),
then replacing the checkpoint atomically; on start the two are reconciled (server/ops/history.py), so they
always agree. A checkpoint that fails its checksum, holds an impossible round, or is missing while history
exists refuses to start, naming the fix.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from ...common import serde
from ...common.logs import Event, get_logger
from ...common.secagg.identity import signing_key_problem
from ...common.spec import (
    ADDED_BY_UPGRADE,
    SECURE_DEFAULT_METHOD,
    TensorSpec,
    head_key,
    initial_prompts,
    spec_difference,
)
from ..pipeline.privacy import PrivacyLedger
from ..round.state import MAX_RETIRED_KEYS, ClientRecord, FederationState
from .history import ROUNDS_FILE, HistoryError, RoundsLog

__all__ = ["CHECKPOINT_FILE", "ROUNDS_FILE", "Checkpoint", "CheckpointError"]
log = get_logger("coordinator")
CHECKPOINT_FILE = "checkpoint.safetensors"
_META_KEY = "pfeddc_federation"
# safetensors refuses to read a header above 100,000,000 bytes; the metadata (mostly the registry) stays well
# below, leaving room for the tensors' entries and JSON escaping.
MAX_META_BYTES = 90_000_000
FORMAT_VERSION = 2  # 1: the history rode in the metadata (read, and moved to rounds.jsonl, on resume)


class CheckpointError(RuntimeError):
    def __init__(self, message: str, advice: str | None = None) -> None:
        super().__init__(message)
        self.advice = advice  # what the operator can do, when a save failed for this reason


def _signing_key(path: Path, client_id: str, hex_key: object) -> bytes:
    """A record's bound signing key (none in checkpoints from before signing keys: bound at its next Join)."""
    try:
        key = bytes.fromhex(hex_key) if isinstance(hex_key, str) else None
    except ValueError:
        key = None
    if key is None or (key and signing_key_problem(key)):
        raise CheckpointError(f"checkpoint {path} holds an unreadable signing key for client {client_id!r}")
    return key


class Checkpoint:
    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self.path = self.state_dir / CHECKPOINT_FILE
        self.rounds = RoundsLog(self.state_dir / ROUNDS_FILE)

    def save(self, state: FederationState) -> None:
        """Commit `state`: its round's summary appended to rounds.jsonl first, then the checkpoint replaced (the
        global's bytes as the commit stage encoded them, with the metadata added to their header)."""
        encoded = state.global_encoded()
        meta = {
            "format": FORMAT_VERSION,
            "round": state.round,
            "clients": {c: r.to_json() for c, r in sorted(state.clients.items())},
            "privacy": state.privacy.to_json(),
            "change_scale": {k: float(v) for k, v in sorted(state.change_scale.items())},
            "tensors_sha256": encoded.sha256,
            "classes": list(state.classes),
            "convicted": {c: float(left) for c, left in sorted(state.convicted.items())},
            "retired_keys": {c: key.hex() for c, key in state.retired_keys.items()},  # oldest first
        }
        text = json.dumps(meta, allow_nan=False, separators=(",", ":"))
        if len(text) > MAX_META_BYTES:  # safetensors would write it, then refuse to read it back
            raise CheckpointError(f"the checkpoint's metadata ({len(text)} bytes, mostly the registry of "
                                  f"{len(state.clients)} clients) exceeds the {MAX_META_BYTES}-byte budget under "
                                  "safetensors' 100 MB header limit",
                                  advice="lower --max-clients (the registry outgrew the checkpoint), then restart")
        if state.last_round is not None:
            self.rounds.append(state.last_round)
        serde.save_file(self.path, encoded, metadata={_META_KEY: text})

    def load(self, spec: list[TensorSpec], total_rounds: int, fresh: bool = False) -> FederationState | None:
        """The saved state, or None to start a new federation. Refuses damaged or inconsistent state."""
        for stale in serde.remove_stale_temps(self.state_dir):
            log.warning(Event.HISTORY_REPAIRED, path=str(stale), reason="temporary file of an interrupted write")
        has_history = self.rounds.path.exists() and self.rounds.path.stat().st_size > 0
        if fresh:
            self._set_aside()
            return None
        if not self.path.exists():
            if has_history:
                raise CheckpointError(
                    f"{self.state_dir} holds {ROUNDS_FILE} but no {CHECKPOINT_FILE}: the checkpoint was deleted or "
                    "lost, and starting over would mix two federations' histories. Restore the checkpoint, or pass "
                    "--fresh to start a new federation (the old files are kept, renamed)")
            return None
        meta, tensors = self._read()
        try:
            state = self._state_of(meta, tensors, spec, total_rounds)
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"checkpoint {self.path} is not a pfeddc checkpoint ({exc!r})") from exc
        committed = {int(r["round"]): r for r in meta.get("history", [])}  # format 1
        before = self.rounds.read() if has_history else []
        try:
            self.rounds.reconcile(state.round, committed)
        except HistoryError as exc:
            raise CheckpointError(str(exc)) from exc
        after = self.rounds.read()
        if [r["round"] for r in before] != [r["round"] for r in after]:
            log.warning(Event.HISTORY_REPAIRED, path=str(self.rounds.path), lines_before=len(before),
                        lines_after=len(after), round=state.round)
        return state

    def _read_meta(self) -> dict[str, Any]:
        from safetensors import safe_open

        try:
            with safe_open(str(self.path), framework="numpy") as fh:
                meta = json.loads((fh.metadata() or {})[_META_KEY])
        except Exception as exc:  # corrupt or foreign file: say which
            raise CheckpointError(f"cannot read checkpoint {self.path}: {exc!r}") from exc
        return meta if isinstance(meta, dict) else {}

    def _read(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        from safetensors import safe_open

        try:
            with safe_open(str(self.path), framework="numpy") as fh:
                meta = json.loads((fh.metadata() or {})[_META_KEY])
                tensors: dict[str, np.ndarray] = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118
        except Exception as exc:  # corrupt or foreign file: say which
            raise CheckpointError(f"cannot read checkpoint {self.path}: {exc!r}") from exc
        if not isinstance(meta, dict):
            raise CheckpointError(f"checkpoint {self.path} has no pfeddc metadata")
        return meta, tensors

    def _state_of(self, meta: dict[str, Any], tensors: dict[str, np.ndarray], spec: list[TensorSpec],
                  total_rounds: int) -> FederationState:
        expected_sha = meta.get("tensors_sha256")
        encoded = serde.Encoded.of(tensors)
        if expected_sha is not None and encoded.sha256 != expected_sha:
            raise CheckpointError(f"checkpoint {self.path} fails its checksum: its tensors changed after it was "
                                  "written (disk or copy damage). Restore it from a backup")
        added = [s for s in spec if s.name in ADDED_BY_UPGRADE and s.name not in tensors]
        if added:
            tensors = {**tensors, **initial_prompts(added, 0)}
            log.warning(Event.HISTORY_REPAIRED, path=str(self.path), added=[s.describe() for s in added],
                        reason="a shared tensor newer than the checkpoint, at its initial value")
        diff = spec_difference(spec, serde.spec_of(tensors))
        if diff:
            method = (f" (--method first: without it a secure federation runs {SECURE_DEFAULT_METHOD} since "
                      "2026-12-07, pfeddc before)") if head_key("residual") in diff else ""
            raise CheckpointError(f"checkpoint {self.path} was made for another prompt spec ({diff}); use the flags "
                                  f"it was made with{method}, or a new --state-dir")
        bad = sorted(k for k, v in tensors.items() if not np.isfinite(v).all())
        if bad:
            raise CheckpointError(f"checkpoint {self.path} holds NaN or Inf in {bad}; restore it from a backup")
        round_ = meta["round"]
        if not isinstance(round_, int) or not 1 <= round_ <= total_rounds + 1:
            raise CheckpointError(
                f"checkpoint {self.path} is at round {round_!r}, impossible with --rounds {total_rounds} (a run "
                f"is at rounds 1..{total_rounds + 1}): raise --rounds, or use the state dir it was made for")
        clients = {}
        for c, r in meta["clients"].items():
            clients[c] = ClientRecord(c, int(r["num_examples"]), int(r["rounds_participated"]),
                                      secret_sha256=r.get("secret_sha256"),
                                      signing_key=_signing_key(self.path, c, r.get("signing_key", "")))
            if clients[c].num_examples <= 0 or clients[c].rounds_participated < 0:
                raise CheckpointError(f"checkpoint {self.path} holds impossible counts for client {c!r}: {r}")
        scale = {str(k): float(v) for k, v in meta.get("change_scale", {}).items()}
        if not all(math.isfinite(v) and v >= 0 for v in scale.values()):
            raise CheckpointError(f"checkpoint {self.path} holds an impossible change_scale: {scale}")
        classes = meta.get("classes", [])
        if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
            raise CheckpointError(f"checkpoint {self.path} holds an impossible class list: {classes!r}")
        convicted = meta.get("convicted", {})  # absent before convictions were saved: none
        if not isinstance(convicted, dict) or not all(
                isinstance(c, str) and isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
                and v >= 0 for c, v in convicted.items()):
            raise CheckpointError(f"checkpoint {self.path} holds impossible convictions: {convicted!r}")
        retired = meta.get("retired_keys", {})  # absent before keys were bound: none
        retired_keys = {str(c): _signing_key(self.path, c, k) for c, k in retired.items()} \
            if isinstance(retired, dict) else {}
        if not isinstance(retired, dict) or len(retired) > MAX_RETIRED_KEYS or not all(retired_keys.values()):
            raise CheckpointError(f"checkpoint {self.path} holds an impossible list of retired signing keys")
        return FederationState(round_, tensors, clients, PrivacyLedger.from_json(meta.get("privacy")), None, scale,
                               encoded, tuple(classes), {c: float(v) for c, v in convicted.items()}, retired_keys)

    def saved_classes(self) -> tuple[str, ...]:
        """The class list the saved federation runs with (none saved: empty), from the header alone."""
        if not self.path.exists():
            return ()
        classes = self._read_meta().get("classes", [])
        return tuple(str(c) for c in classes) if isinstance(classes, list) else ()

    def _set_aside(self) -> None:
        """--fresh: keep an earlier federation's files under new names instead of mixing them with the new one."""
        stamp = time.strftime("%Y%m%dT%H%M%S")
        for path in (self.path, self.rounds.path):
            if path.exists():
                target = path.with_name(f"{path.name}.{stamp}.old")
                path.rename(target)
                log.warning(Event.HISTORY_REPAIRED, path=str(path), moved_to=str(target), reason="--fresh")
