"""The client's personal state on its own disk, typed, every file written atomically.

state_dir/
  client_id            stable identity presented to the coordinator
  join_secret          proves that identity to a coordinator without client authentication (0600)
  signing_key.pem      signs its secure-aggregation messages without a client certificate; bound at Join (0600)
  peer_keys.json       its peers' signing keys, pinned when first seen ({site id: hex}; an operator may pre-fill it)
  meta.json            `ClientMeta`: federation, model, prompt layout, class list, held-out split, last round
  local.safetensors    local prompts + fusion modules (never leave this machine)
  global.safetensors   the last global prompts received (metadata: round)
  history.jsonl        one `RoundRecord` per round this client trained
"""

from __future__ import annotations

import json
import math
import secrets
import uuid
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..common import serde
from ..common.ids import client_id_problem
from ..common.messages import Metrics
from ..common.secagg.identity import Identity
from ..common.spec import PromptConfig
from .peer_keys import PinnedKeys

CLIENT_ID_FILE = "client_id"
SIGNING_KEY_FILE = "signing_key.pem"
PEER_KEYS_FILE = "peer_keys.json"
GENERATED_PREFIX = "client-"  # + 12 hex digits: an id the client made up for itself (no --client-id, no certificate)


def _generated(client_id: str) -> bool:
    tail = client_id.removeprefix(GENERATED_PREFIX)
    return client_id.startswith(GENERATED_PREFIX) and len(tail) == 12 and all(c in "0123456789abcdef" for c in tail)

META_FILE = "meta.json"
HISTORY_FILE = "history.jsonl"
LOCAL_FILE = "local.safetensors"
GLOBAL_FILE = "global.safetensors"


class StateError(RuntimeError):
    pass


@dataclass(frozen=True)
class ClientMeta:
    federation_id: str | None = None
    model: str | None = None
    prompt_config: PromptConfig | None = None
    classnames: list[str] | None = None
    test_split: list[str] | None = None  # paths relative to the data root, chosen once
    data: str | None = None
    last_round: int = 0
    final_accuracy: float | None = None
    finished: bool = False
    lr_scale: float = 1.0  # halved after each round whose training diverged or collapsed

    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["prompt_config"] = self.prompt_config.to_dict() if self.prompt_config else None
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ClientMeta:
        known = {f.name: data[f.name] for f in fields(cls) if f.name in data}
        if known.get("prompt_config") is not None:
            known["prompt_config"] = PromptConfig.from_dict(known["prompt_config"])
        return cls(**known)


@dataclass(frozen=True)
class RoundRecord:
    """One line of history.jsonl: a round this client trained, and what became of its update."""

    round: int
    accepted: bool
    reason: str = ""
    num_examples: int = 0
    metrics: Metrics = field(default_factory=Metrics)
    time: float = 0.0
    update_norms: dict[str, float] = field(default_factory=dict)  # L2 norm of (sent - received) per global tensor

    def to_json(self) -> dict[str, Any]:
        flat = {k: v for k, v in asdict(self).items() if k not in ("metrics", "update_norms")}
        flat["update_norms"] = {k: _json_number(v) for k, v in self.update_norms.items()}
        return {**flat, **{k: _json_number(v) for k, v in self.metrics.as_dict().items()}}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RoundRecord:
        values: dict[str, Any] = {k: float("nan") if data[k] is None else data[k] for k in Metrics.names() if k in data}
        metrics = Metrics(**values)
        return cls(int(data["round"]), bool(data["accepted"]), str(data.get("reason", "")),
                   int(data.get("num_examples", 0)), metrics, float(data.get("time", 0.0)),
                   dict(data.get("update_norms", {})))


def _json_number(value: float) -> float | None:
    """Strict JSON has no NaN or Infinity: an absent (or blown-up) metric is written as null."""
    return value if math.isfinite(value) else None


class ClientStore:
    def __init__(self, state_dir: Path, tidy: bool = True) -> None:
        """`tidy=False`: leave temp files alone (a command run beside a daemon that may be writing one)."""
        self.dir = Path(state_dir).expanduser()
        self.dir.mkdir(parents=True, exist_ok=True)
        if tidy:
            serde.remove_stale_temps(self.dir)  # what a crash mid-write left (the files themselves are whole)

    # ----- identity
    def client_id(self, requested: str | None = None, source: str = "--client-id") -> str:
        """The id this state dir belongs to; `requested` (from `source`) names it on a first run. An id the
        client generated for itself gives way to a requested one until a round was trained under it (a first run
        without --client-id or a certificate must not tie the state dir to a random id for good)."""
        problem = client_id_problem(requested) if requested else None
        if problem:  # the coordinator would refuse it at Join: say so before anything is written or loaded
            raise StateError(f"{source}: {problem}")
        path = self.dir / CLIENT_ID_FILE
        stored = self.stored_client_id()
        if requested and stored and requested != stored:
            if not (_generated(stored) and not self.history()):
                raise StateError(f"state dir {self.dir} belongs to client {stored!r} (its local prompts and history "
                                 f"are that client's), not {requested!r} (from {source}): give {requested!r} a state "
                                 "dir of its own (--state-dir)")
            stored = None
        client_id = stored or requested or f"{GENERATED_PREFIX}{uuid.uuid4().hex[:12]}"
        if stored is None:
            serde.atomic_write(path, client_id.encode() + b"\n")
        return client_id

    def stored_client_id(self) -> str | None:
        """The id this state dir already belongs to (None before its first run)."""
        path = self.dir / CLIENT_ID_FILE
        return path.read_text().strip() if path.exists() else None

    def join_secret(self) -> str:
        """The secret this client sends with every call (made once, kept 0600): a coordinator in open mode
        binds it to the client id at the first join, so no other caller can act under that id."""
        path = self.dir / "join_secret"
        if not path.exists():
            serde.atomic_write(path, secrets.token_urlsafe(32).encode() + b"\n")  # mkstemp: mode 0600
        return path.read_text().strip()

    def signing_key(self) -> Identity:
        """The key this client signs secure rounds with when it has no client certificate (made once, 0600); the
        coordinator binds its public half to the client id at the first Join."""
        return Identity.kept_at(self.dir / SIGNING_KEY_FILE)

    def peer_keys(self) -> PinnedKeys:
        """Its peers' signing keys as first seen (or as the operator listed them)."""
        return PinnedKeys(self.dir / PEER_KEYS_FILE)

    # ----- metadata
    def meta(self) -> ClientMeta:
        path = self.dir / META_FILE
        return ClientMeta.from_json(json.loads(path.read_text())) if path.exists() else ClientMeta()

    def update_meta(self, **changes: Any) -> ClientMeta:
        meta = replace(self.meta(), **changes)
        serde.atomic_write(self.dir / META_FILE, json.dumps(meta.to_json(), indent=1, sort_keys=True).encode())
        return meta

    def check_classes(self, classnames: list[str]) -> None:
        recorded = self.meta().classnames
        if recorded is not None and recorded != classnames:
            raise StateError(f"the class list changed since this client's state was made: was {recorded}, now "
                             f"{classnames}; restore the data layout or start a new --state-dir")

    # ----- tensors
    def load_local(self) -> dict[str, np.ndarray] | None:
        path = self.dir / LOCAL_FILE
        return serde.load_file(path) if path.exists() else None

    def load_global(self) -> dict[str, np.ndarray] | None:
        path = self.dir / GLOBAL_FILE
        return serde.load_file(path) if path.exists() else None

    def save_round(self, round_: int, local: dict[str, np.ndarray], global_: dict[str, np.ndarray] | serde.Encoded,
                   record: RoundRecord | None) -> None:
        """Persist a completed round: tensors first, then the history and the metadata that point at them
        (`global_` as sent, when it is the `Encoded` update)."""
        serde.save_file(self.dir / LOCAL_FILE, local, metadata={"round": str(round_)})
        serde.save_file(self.dir / GLOBAL_FILE, global_, metadata={"round": str(round_)})
        if record is not None:
            with open(self.dir / HISTORY_FILE, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record.to_json(), allow_nan=False) + "\n")
        self.update_meta(last_round=round_)

    def history(self) -> list[RoundRecord]:
        path = self.dir / HISTORY_FILE
        if not path.exists():
            return []
        return [RoundRecord.from_json(json.loads(line)) for line in path.read_text().splitlines() if line.strip()]
