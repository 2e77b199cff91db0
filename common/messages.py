"""The domain side of the wire: what the coordinator and a client say to each other, as typed values.

`common/wire.py` converts these to and from protobuf; nothing else touches the generated stubs. They are plain
data (decoding a task's payload is `serde.decode_verified`'s job). Every default of local training lives in
`TrainSettings` and every metric name in `Metrics`: the CLIs, the sim, the benchmarks and the docs read them from
here.
"""

from __future__ import annotations

import math
from dataclasses import Field, dataclass, field, fields, replace
from enum import StrEnum
from typing import Any

from .metrics import Metrics as Metrics  # re-exported: the wire's domain types in one import
from .secagg.exchange import SecureSettings
from .spec import PromptConfig, TensorSpec


class Code(StrEnum):
    """Why a request was refused; the values are gRPC status names (wire.py maps them one to one)."""

    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    NOT_FOUND = "NOT_FOUND"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    UNAVAILABLE = "UNAVAILABLE"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    CANCELLED = "CANCELLED"
    INTERNAL = "INTERNAL"
    UNIMPLEMENTED = "UNIMPLEMENTED"  # a method the coordinator does not know (an older version)
    UNKNOWN = "UNKNOWN"


class Refused(Exception):
    """A request turned down; on the coordinator nothing in the state changed."""

    def __init__(self, code: Code, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class Action(StrEnum):
    TRAIN = "train"  # train on the task's global prompts for its round and submit an update
    WAIT = "wait"  # not sampled (or already submitted, or waiting for clients): ask again later
    FINISHED = "finished"  # the last round is over; the payload holds the final global prompts


# A running client sends a Heartbeat this often (training or waiting); the coordinator's --heartbeat-window
# (HEARTBEAT_WINDOW_S by default) allows two of them to be lost before it shows the client offline.
HEARTBEAT_INTERVAL_S = 10.0
HEARTBEAT_WINDOW_S = 25.0

# Longest the coordinator holds a task request (long poll) before answering WAIT, whatever the client asks: a
# bounded wait lets dead peers go. The client asks for this much.
MAX_HOLD_S = 30.0

# A failure report's detail is cut to this on both sides (the coordinator's gate bounds the whole request).
MAX_FAILURE_DETAIL_CHARS = 500


class FailureReason(StrEnum):
    """Why a client could not produce an update for its round (reported with `Connection.report_failure`)."""

    DIVERGED = "diverged"  # training produced NaN or Inf
    COLLAPSED = "collapsed"  # finite but degenerate (e.g. one class predicted everywhere)
    OUT_OF_MEMORY = "out_of_memory"
    DATA_UNREADABLE = "data_unreadable"
    OTHER = "other"
    PEER_REFUSED = "peer_refused"  # secure aggregation: a peer's signature did not check here (detail: its id)


@dataclass(frozen=True)
class TrainSettings:
    """Hyper-parameters of one round of local training: the only place their defaults are written.

    Every field but `seed` is a command-line flag (`--local-epochs`, `--lr`, ...) whose help is the field's
    `help` metadata; the coordinator sends them with each task and a client may override them.
    """

    local_epochs: int = field(default=1, metadata={"help": "local epochs per round"})
    lr: float = field(default=0.1, metadata={"help": "SGD learning rate of the text prompts"})
    batch_size: int = field(default=32, metadata={"help": "training batch size"})
    seed: int = field(default=0, metadata={"flag": False})  # per round and client, derived by the coordinator
    lr_vision: float = field(default=3.33, metadata={"help": "SGD learning rate of the vision prompts and gates"})
    lr_fusion: float = field(default=0.02, metadata={"help": "SGD learning rate of the fusion modules"})
    clip_norm: float = field(default=1.0, metadata={
        "help": "clip each step's gradients to this global L2 norm; 0 turns clipping off"})
    warmup_steps: int = field(default=5, metadata={
        "help": "steps of linear learning-rate warm-up at the start of each round"})
    probe_steps: int = field(default=100, metadata={
        "help": "full-batch steps fitting the class embeddings alone (a linear probe on the cached image features) "
                "before each round's training; 0 turns the probe off"})

    @classmethod
    def flag_fields(cls) -> list[Field[object]]:
        return [f for f in fields(cls) if f.metadata.get("flag", True)]

    def __post_init__(self) -> None:
        checks = [
            (self.local_epochs >= 1, f"local_epochs must be >= 1, got {self.local_epochs}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.clip_norm >= 0 and math.isfinite(self.clip_norm), f"clip_norm must be >= 0, got {self.clip_norm}"),
            (self.warmup_steps >= 0, f"warmup_steps must be >= 0, got {self.warmup_steps}"),
            (self.probe_steps >= 0, f"probe_steps must be >= 0, got {self.probe_steps}"),
        ]
        for name in ("lr", "lr_vision", "lr_fusion"):
            value = getattr(self, name)
            checks.append((value > 0 and math.isfinite(value), f"{name} must be > 0, got {value}"))
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def with_overrides(self, **changes: Any) -> TrainSettings:
        """A copy with every change that is not None applied (client-side flag overrides)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


@dataclass(frozen=True)
class Task:
    """The coordinator's answer to "what should I do now?"."""

    action: Action
    round: int
    total_rounds: int
    payload: bytes = b""  # safetensors bytes of the global prompts (TRAIN and FINISHED)
    sha256: str = ""
    settings: TrainSettings | None = None  # TRAIN only
    retry_after_s: float = 0.0  # WAIT only
    deadline_s: float = 0.0  # TRAIN only: seconds left to submit
    secure: SecureSettings | None = None  # TRAIN in a secure federation: send the change through secure aggregation


@dataclass(frozen=True)
class FederationInfo:
    """What a client needs to build a compatible model before it joins."""

    federation_id: str
    total_rounds: int
    current_round: int
    model: str
    prompt_config: PromptConfig
    spec: list[TensorSpec] = field(default_factory=list)
    classes_pending: bool = False  # the coordinator still gathers its class list from the Joins


@dataclass(frozen=True)
class JoinResult:
    federation_id: str
    total_rounds: int
    current_round: int
    weight: int = 0  # the FedAvg weight the coordinator gives the client (its count, capped); 0: not told


@dataclass(frozen=True)
class SubmitResult:
    duplicate: bool  # this exact update (or failure report) had already been accepted (an idempotent retry)
    received: int
    expected: int  # updates the round still expects in all: sampled clients minus those that failed
    next_task: Task | None = None  # the next task, when the submit asked to wait for it (long-poll)


# ----- requests, one per Coordinator method (protos/pfeddc/v1/federation.proto); every one names its caller
@dataclass(frozen=True)
class FederationRequest:
    client_id: str


@dataclass(frozen=True)
class JoinRequest:
    client_id: str
    num_examples: int
    spec: list[TensorSpec] = field(default_factory=list)
    capabilities: frozenset[str] = frozenset()  # what the client supports beyond v1 (secure aggregation)
    class_names: tuple[str, ...] = ()  # its data's classes: a coordinator without a class list gathers them
    signing_key: bytes = b""  # its secure-aggregation signing key (no client certificate): bound at the first Join


@dataclass(frozen=True)
class TaskRequest:
    client_id: str
    max_wait_s: float = 0.0  # > 0: hold the call while the answer would be WAIT (at most MAX_HOLD_S)


@dataclass(frozen=True)
class UpdateRequest:
    client_id: str
    round: int
    payload: bytes  # safetensors bytes of the client's global prompts
    num_examples: int
    metrics: Metrics
    next_task_wait_s: float = 0.0  # > 0: also wait for the next task, as TaskRequest.max_wait_s


@dataclass(frozen=True)
class FailureReport:
    client_id: str
    round: int
    reason: FailureReason
    detail: str = ""
    attempt: int = 0  # PEER_REFUSED: the secure attempt the peer was refused in


@dataclass(frozen=True)
class HeartbeatRequest:
    client_id: str
    round: int = 0  # the round the client is training, 0 when none
