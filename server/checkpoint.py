"""The coordinator's state on disk: one safetensors file, replaced atomically after every round.

The global prompts are its tensors; the round number, the client registry and the per-round history ride in
its metadata, so tensors and bookkeeping can never disagree after a crash. Each closed round is also
appended to rounds.jsonl for people and tools to read.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..common import serde
from ..common.spec import TensorSpec, spec_difference
from .federation import ClientRecord, FederationState

CHECKPOINT_FILE = "checkpoint.safetensors"
ROUNDS_FILE = "rounds.jsonl"
_META_KEY = "pfeddc_federation"
FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    pass


class Checkpoint:
    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self.path = self.state_dir / CHECKPOINT_FILE

    def save(self, state: FederationState) -> None:
        meta = {
            "format": FORMAT_VERSION,
            "round": state.round,
            "clients": {c: r.to_json() for c, r in sorted(state.clients.items())},
            "history": state.history,
        }
        serde.save_file(self.path, state.global_tensors, metadata={_META_KEY: json.dumps(meta)})
        if state.history:
            with open(self.state_dir / ROUNDS_FILE, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(state.history[-1]) + "\n")

    def load(self, spec: list[TensorSpec]) -> FederationState | None:
        """The saved state, or None when there is none; refuses one made for a different prompt spec."""
        if not self.path.exists():
            return None
        from safetensors import safe_open

        try:
            with safe_open(str(self.path), framework="numpy") as fh:
                meta = json.loads((fh.metadata() or {})[_META_KEY])
                tensors: dict[str, np.ndarray] = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118
        except Exception as exc:  # corrupt or foreign file: say which
            raise CheckpointError(f"cannot read checkpoint {self.path}: {exc}") from exc
        diff = spec_difference(spec, serde.spec_of(tensors))
        if diff:
            raise CheckpointError(
                f"checkpoint {self.path} was made for another prompt spec ({diff}); "
                "use the flags it was made with, or a new --state-dir"
            )
        clients = {
            c: ClientRecord(c, int(r["num_examples"]), int(r["rounds_participated"]))
            for c, r in meta["clients"].items()
        }
        return FederationState(int(meta["round"]), tensors, clients, list(meta["history"]))
