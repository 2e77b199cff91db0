"""safetensors <-> bytes for the global prompts, their validation, and atomic file writes.

Everything that crosses the wire or lands on disk goes through here: safetensors only, never pickle.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from .spec import TensorSpec, spec_difference

_DTYPES = {np.dtype("float32"): "F32", np.dtype("float16"): "F16", np.dtype("float64"): "F64"}


class InvalidTensors(ValueError):
    """A payload that must not touch any state: its message names the problem."""


def dtype_name(array: np.ndarray) -> str:
    try:
        return _DTYPES[array.dtype]
    except KeyError:
        raise InvalidTensors(f"unsupported dtype {array.dtype}; use float32, float16 or float64") from None


def spec_of(tensors: Mapping[str, np.ndarray]) -> list[TensorSpec]:
    return sorted(
        (TensorSpec(name, tuple(int(d) for d in a.shape), dtype_name(a)) for name, a in tensors.items()),
        key=lambda s: s.name,
    )


def encode(tensors: Mapping[str, np.ndarray], metadata: dict[str, str] | None = None) -> bytes:
    """safetensors bytes of `tensors` (sorted by name, so equal tensors give equal bytes)."""
    return st_save({k: np.ascontiguousarray(tensors[k]) for k in sorted(tensors)}, metadata=metadata)


def decode(payload: bytes) -> dict[str, np.ndarray]:
    """Parse safetensors bytes; anything else raises InvalidTensors."""
    if not payload:
        return {}
    try:
        return dict(st_load(payload))
    except (SafetensorError, ValueError, OverflowError) as exc:
        raise InvalidTensors(f"payload is not valid safetensors: {exc}") from exc


def validate(tensors: Mapping[str, np.ndarray], expected: list[TensorSpec]) -> None:
    """Raise InvalidTensors unless names, shapes and dtypes match `expected` and all values are finite."""
    diff = spec_difference(expected, spec_of(tensors))
    if diff:
        raise InvalidTensors(diff)
    for name in sorted(tensors):
        bad = int(np.count_nonzero(~np.isfinite(tensors[name])))
        if bad:
            raise InvalidTensors(f"tensor {name!r} holds {bad} NaN or Inf values")


def sha256(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


def atomic_write(path: Path, data: bytes) -> None:
    """Write via a temp file in the same directory, fsync, rename: readers see the old or the new file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def save_file(path: Path, tensors: Mapping[str, np.ndarray], metadata: dict[str, str] | None = None) -> None:
    atomic_write(path, encode(tensors, metadata))


def load_file(path: Path) -> dict[str, np.ndarray]:
    return decode(Path(path).read_bytes())
