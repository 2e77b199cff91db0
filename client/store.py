"""The client's personal state on its own disk, every file written atomically.

state_dir/
  client_id            stable identity presented to the coordinator
  meta.json            federation, model, prompt layout, class list, held-out test split, last round done
  local.safetensors    local prompts + fusion modules (never leave this machine)
  global.safetensors   the last global prompts received (metadata: round)
  history.jsonl        one line per completed round (metrics)
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from pfeddc.common import serde


class StateError(RuntimeError):
    pass


class ClientStore:
    def __init__(self, state_dir: Path) -> None:
        self.dir = Path(state_dir).expanduser()
        self.dir.mkdir(parents=True, exist_ok=True)

    # ----- identity
    def client_id(self, requested: str | None = None) -> str:
        path = self.dir / "client_id"
        stored = path.read_text().strip() if path.exists() else None
        if requested and stored and requested != stored:
            raise StateError(f"state dir {self.dir} belongs to client {stored!r}, not {requested!r}: "
                             "use another --state-dir or drop --client-id")
        client_id = stored or requested or f"client-{uuid.uuid4().hex[:12]}"
        if stored is None:
            serde.atomic_write(path, client_id.encode() + b"\n")
        return client_id

    # ----- metadata
    def meta(self) -> dict[str, Any]:
        path = self.dir / "meta.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def save_meta(self, meta: dict[str, Any]) -> None:
        serde.atomic_write(self.dir / "meta.json", json.dumps(meta, indent=1, sort_keys=True).encode())

    def check_classes(self, classnames: list[str]) -> None:
        recorded = self.meta().get("classnames")
        if recorded is not None and recorded != classnames:
            raise StateError(f"the class list changed since this client's state was made: was {recorded}, now "
                             f"{classnames}; restore the data layout or start a new --state-dir")

    # ----- tensors
    def load_local(self) -> dict[str, np.ndarray] | None:
        path = self.dir / "local.safetensors"
        return serde.load_file(path) if path.exists() else None

    def save_round(self, round_: int, local: dict[str, np.ndarray], global_: dict[str, np.ndarray],
                   record: dict[str, Any] | None) -> None:
        """Persist a completed round: tensors first, then the metadata that points at them."""
        serde.save_file(self.dir / "local.safetensors", local, metadata={"round": str(round_)})
        serde.save_file(self.dir / "global.safetensors", global_, metadata={"round": str(round_)})
        if record is not None:
            with open(self.dir / "history.jsonl", "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")
        self.save_meta({**self.meta(), "last_round": round_})

    def load_global(self) -> dict[str, np.ndarray] | None:
        path = self.dir / "global.safetensors"
        return serde.load_file(path) if path.exists() else None

    def history(self) -> list[dict[str, Any]]:
        path = self.dir / "history.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
