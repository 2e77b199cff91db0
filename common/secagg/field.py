"""Fixed-point encoding of clipped float vectors as integers mod M = 2**modulus_bits, where masks add and cancel.

A site's vector x (its change from the global, already clipped by L2 norm and multiplied by its weight <= 1) is
clipped per coordinate to [-clip_range, clip_range], scaled by `scale` and rounded stochastically to an integer q
with |q| <= levels, then stored mod M (a negative q as M - |q|). With

    levels = floor((M/2 - 1) / max_sites)        scale = levels / clip_range

a sum of at most `max_sites` encoded vectors lies in [-max_sites * levels, max_sites * levels], strictly inside
(-M/2, M/2), so the sum mod M decodes without wrap-around: a value >= M/2 is read as negative.

Error: stochastic rounding (q = floor(v) + [u < v - floor(v)], u uniform) is unbiased and moves each coordinate by
less than one step 1/scale, so a decoded sum of n vectors is within n / scale of the float sum, per coordinate
(`sum_error_bound`), plus whatever the per-coordinate clip removed (nothing when |x_j| <= clip_range, which an
L2 bound <= clip_range guarantees). With the defaults (32 bits, clip 10, 100 sites) a step is 4.7e-7.

The rounding randomness needs no secrecy (it hides nothing; the masks do), so a seeded numpy generator is fine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

DEFAULT_MODULUS_BITS = 32
# Equal to the coordinator's default --update-clip-norm: a change within that L2 bound, times a weight <= 1,
# has every coordinate within this range, so the per-coordinate clip never binds for it.
DEFAULT_CLIP_RANGE = 10.0
DEFAULT_MAX_SITES = 100


@dataclass(frozen=True)
class FieldParams:
    """How floats become field elements; both sides must hold the same (the coordinator announces it)."""

    clip_range: float = DEFAULT_CLIP_RANGE
    max_sites: int = DEFAULT_MAX_SITES
    modulus_bits: int = DEFAULT_MODULUS_BITS

    def __post_init__(self) -> None:
        # <= 62 bits: the decoded sum is read back through int64.
        if not 16 <= self.modulus_bits <= 62:
            raise ValueError(f"modulus_bits must be in [16, 62], got {self.modulus_bits}")
        if not (self.clip_range > 0 and math.isfinite(self.clip_range)):
            raise ValueError(f"clip_range must be a finite number > 0, got {self.clip_range}")
        if self.max_sites < 1 or self.levels < 1:
            raise ValueError(f"max_sites must be in [1, {(self.modulus // 2 - 1)}], got {self.max_sites}")

    @property
    def modulus(self) -> int:
        return 1 << self.modulus_bits

    @property
    def levels(self) -> int:
        """The largest |q| one site may send: max_sites of them still sum inside (-M/2, M/2)."""
        return (self.modulus // 2 - 1) // self.max_sites

    @property
    def scale(self) -> float:
        return self.levels / self.clip_range

    @property
    def element_bytes(self) -> int:
        """Bytes per element on the wire."""
        return 4 if self.modulus_bits <= 32 else 8


def sum_error_bound(params: FieldParams, n: int) -> float:
    """Per-coordinate bound on |decoded sum of n encoded vectors - their float sum| (inputs within the clip)."""
    return n / params.scale


def quantise(x: np.ndarray, params: FieldParams, rng: np.random.Generator) -> np.ndarray:
    """A float vector -> uint64 elements in [0, M): clipped, scaled, stochastically rounded, reduced mod M."""
    v = np.asarray(x, dtype=np.float64).ravel()
    if not np.all(np.isfinite(v)):
        raise ValueError("cannot quantise a vector holding NaN or infinity")
    v = np.clip(v, -params.clip_range, params.clip_range) * params.scale
    low = np.floor(v)
    q = low.astype(np.int64) + (rng.random(v.shape) < (v - low))
    np.clip(q, -params.levels, params.levels, out=q)  # float rounding of clip_range * scale must not exceed levels
    return (q % params.modulus).astype(np.uint64)


def reduce(a: np.ndarray, params: FieldParams) -> np.ndarray:
    """uint64 arithmetic wraps mod 2**64, a multiple of M: sums and differences may wrap freely, then reduce once."""
    return a & np.uint64(params.modulus - 1)


def add(a: np.ndarray, b: np.ndarray, params: FieldParams) -> np.ndarray:
    return reduce(a + b, params)


def subtract(a: np.ndarray, b: np.ndarray, params: FieldParams) -> np.ndarray:
    return reduce(a - b, params)


def dequantise_sum(total: np.ndarray, params: FieldParams, n: int) -> np.ndarray:
    """The float sum of n encoded vectors from their sum mod M; refuses more than max_sites of them."""
    if not 1 <= n <= params.max_sites:
        raise ValueError(f"a sum of {n} vectors cannot be decoded without wrap-around (max_sites {params.max_sites})")
    t = np.asarray(total, dtype=np.uint64).astype(np.int64)
    signed = np.where(t >= params.modulus // 2, t - params.modulus, t)
    return signed.astype(np.float64) / params.scale


def to_bytes(elements: np.ndarray, params: FieldParams) -> bytes:
    """Little-endian, element_bytes each: what a masked input weighs on the wire."""
    dtype = "<u4" if params.element_bytes == 4 else "<u8"
    return np.asarray(elements).astype(dtype).tobytes()


def from_bytes(data: bytes, params: FieldParams, length: int) -> np.ndarray:
    """Inverse of `to_bytes`; checks the length and that every element is below M."""
    if len(data) != length * params.element_bytes:
        raise ValueError(f"expected {length} elements ({length * params.element_bytes} bytes), got {len(data)} bytes")
    out = np.frombuffer(data, dtype="<u4" if params.element_bytes == 4 else "<u8").astype(np.uint64)
    if out.size and int(out.max()) >= params.modulus:
        raise ValueError(f"an element is not below the modulus 2**{params.modulus_bits}")
    return out
