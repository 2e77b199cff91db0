"""What a site and the coordinator say to each other in a secure round, as plain values (common/wire.py converts).

`SecureSettings` travels in the TRAIN task; a `SecureStep` is one SecureAggregate call (a stage's message, or
none: "has my stage closed?"); a `SecureAnswer` is what the coordinator replies. The protocol messages inside
are those of `protocol`. `flatten`/`unflatten` fix how the global tensors become one vector: the tensors ordered by
name, row-major, float64, on both sides.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from dataclasses import field as default
from enum import StrEnum

import numpy as np

from ..metrics import Metrics
from ..spec import TensorSpec
from .field import FieldParams, from_bytes, to_bytes
from .keys import RoundId
from .protocol import (
    AdvertiseKeys,
    ChecksPassed,
    KeysAnnounced,
    MaskedInput,
    RoundConfig,
    ShareKeys,
    SharesChecked,
    SharesDelivered,
    UnmaskRequest,
    UnmaskResponse,
)

# What a client announces at Join when it follows TaskReply.secure (JoinRequest.capabilities).
# v2: complaints carry evidence and are judged before any input is sent; v3: per-tensor bounds (change_norms); v4:
# signed without client certificates too (JoinRequest.signing_key, SecureSettings.signed). A secure coordinator
# requires CAPABILITY; a client announces every version it follows (SPOKEN): a v4 site follows a v2 or v3
# coordinator too (it asks for no norm, or says the round is not signed), so sites can be upgraded before their
# coordinator.
CAPABILITY = "secure-aggregation/v4"
SPOKEN = frozenset({"secure-aggregation/v2", "secure-aggregation/v3", CAPABILITY})


@dataclass(frozen=True)
class SecureSettings:
    """A secure round's settings for one site, fixed when the attempt opens."""

    run_id: str  # drawn afresh per attempt: with round and attempt, binds every key and seed of the run
    attempt: int
    sampled: tuple[str, ...]
    threshold: int
    length: int
    field: FieldParams
    weight: float  # (0, 1]
    clip_norm: float  # the site clips its change to this L2 norm before weighting
    noise_std: float = 0.0  # its share of the DP noise (0: no DP)
    # tensors bounded one by one: the site reports its change norm of each with its keys and clips each to the
    # bound announced with them (`SecureAnswer.tensor_clips`); empty: none (DP, or --adaptive-clip 0)
    clipped_tensors: tuple[str, ...] = ()
    signed: bool = False  # every sampled site signs this attempt: a site refuses any peer's unsigned advert

    def round_config(self, round_: int) -> RoundConfig:
        return RoundConfig(RoundId(self.run_id, round_, self.attempt), tuple(sorted(self.sampled)), self.threshold,
                           self.length, self.field)


@dataclass(frozen=True)
class Contribution:
    """Stage 4: the masked input (`field.to_bytes`; read with the round's field), and what plain mode sends beside
    an update."""

    masked: bytes
    num_examples: int
    metrics: Metrics

    @staticmethod
    def of(masked: MaskedInput, field: FieldParams, num_examples: int, metrics: Metrics) -> Contribution:
        return Contribution(to_bytes(masked.masked, field), num_examples, metrics)

    def read(self, site_id: str, field: FieldParams, length: int) -> MaskedInput:
        """The masked input; ValueError when the bytes are not `length` elements of `field`."""
        return MaskedInput(site_id, from_bytes(self.masked, field, length))


StageMessage = AdvertiseKeys | ShareKeys | SharesChecked | Contribution | UnmaskResponse


@dataclass(frozen=True)
class SecureStep:
    client_id: str
    round: int
    attempt: int
    message: StageMessage | None = None  # None: a poll for the stage this site last sent
    max_wait_s: float = 0.0  # the coordinator holds the call up to this long while the answer is PENDING
    run_id: str = ""  # the run the site is in (SecureSettings.run_id)
    # with AdvertiseKeys: the L2 norm of its change of each of SecureSettings.clipped_tensors
    change_norms: Mapping[str, float] = default(default_factory=dict)
    next_task_wait_s: float = 0.0  # with UnmaskResponse (or a poll after it): once DONE, hold for the next task


class Status(StrEnum):
    PENDING = "pending"  # the stage has not closed: poll again
    NEXT = "next"  # the stage closed: `next` holds the next stage's input
    DONE = "done"  # the round's sum was committed
    ABANDONED = "abandoned"  # the attempt ended without this site: `reason`; ask for a new task


NextInput = KeysAnnounced | SharesDelivered | ChecksPassed | UnmaskRequest


@dataclass(frozen=True)
class SecureAnswer:
    status: Status
    next: NextInput | None = None
    reason: str = ""
    tensor_clips: Mapping[str, float] = default(default_factory=dict)  # with KeysAnnounced: each clipped tensor's bound


def vector_length(spec: Sequence[TensorSpec]) -> int:
    return sum(math.prod(s.shape) for s in spec)


def flatten(tensors: Mapping[str, np.ndarray], spec: Sequence[TensorSpec]) -> np.ndarray:
    """The tensors of `spec`, ordered by name, as one float64 vector."""
    return np.concatenate([np.asarray(tensors[s.name], np.float64).reshape(-1) for s in _ordered(spec)]) if spec \
        else np.zeros(0)


def segments(spec: Sequence[TensorSpec]) -> dict[str, slice]:
    """Each tensor's slice of the `flatten`ed vector."""
    out = {}
    at = 0
    for s in _ordered(spec):
        size = math.prod(s.shape)
        out[s.name] = slice(at, at + size)
        at += size
    return out


def unflatten(vector: np.ndarray, spec: Sequence[TensorSpec]) -> dict[str, np.ndarray]:
    """Inverse of `flatten` (float64 tensors of the spec's shapes)."""
    if vector.size != vector_length(spec):
        raise ValueError(f"a vector of {vector.size} elements does not fill the spec's {vector_length(spec)}")
    shapes = {s.name: s.shape for s in spec}
    return {name: np.asarray(vector[part], np.float64).reshape(shapes[name]) for name, part in segments(spec).items()}


def _ordered(spec: Sequence[TensorSpec]) -> list[TensorSpec]:
    return sorted(spec, key=lambda s: s.name)  # both sides agree whatever order their specs list
