"""safetensors <-> bytes for the global prompts, their validation, and atomic file writes.

Everything that crosses the wire or lands on disk goes through here: safetensors only, never pickle.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from .spec import TensorSpec, spec_difference

_DTYPES: dict[np.dtype[Any], str] = {np.dtype("float32"): "F32", np.dtype("float16"): "F16",
                                     np.dtype("float64"): "F64"}
_NP_DTYPES: dict[str, np.dtype[Any]] = {name: dtype for dtype, name in _DTYPES.items()}
# Header bytes an update may carry beyond what its spec needs (metadata, other key orders or number formats).
HEADER_SLACK = 4096


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


@dataclass(frozen=True)
class Encoded:
    """Tensors with their safetensors bytes and digest: encoded once, then reused by whoever needs the bytes."""

    tensors: dict[str, np.ndarray]  # the very dict encoded (not a copy): its identity says the bytes are current
    payload: bytes
    sha256: str

    @classmethod
    def of(cls, tensors: dict[str, np.ndarray]) -> Encoded:
        payload = encode(tensors)
        return cls(tensors, payload, sha256(payload))


def with_metadata(payload: bytes, metadata: dict[str, str]) -> bytes:
    """`payload` (from `encode`, no metadata) with `metadata` added to its header; the tensor bytes are reused."""
    size = int.from_bytes(payload[:8], "little")
    header = json.loads(payload[8:8 + size])
    header["__metadata__"] = metadata
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # safetensors aligns the data on 8 bytes
    return len(text).to_bytes(8, "little") + text + payload[8 + size:]


def decode(payload: bytes) -> dict[str, np.ndarray]:
    """Parse safetensors bytes; anything else (an unsupported dtype too) raises InvalidTensors."""
    if not payload:
        return {}
    for name, entry in read_header(payload).items():
        if entry.get("dtype") not in _DTYPES.values():
            raise InvalidTensors(f"tensor {name!r} has dtype {entry.get('dtype')!r}; supported: "
                                 f"{', '.join(_DTYPES.values())}")
    try:
        return dict(st_load(payload))
    except (SafetensorError, ValueError, OverflowError, KeyError) as exc:
        raise InvalidTensors(f"payload is not valid safetensors: {exc!r}") from exc


def read_header(payload: bytes, max_header_bytes: int | None = None) -> dict[str, dict[str, object]]:
    """The tensor entries of a safetensors header, refused before parsing when larger than `max_header_bytes`."""
    if len(payload) < 8:
        raise InvalidTensors(f"payload is not valid safetensors: {len(payload)} bytes is shorter than its header")
    size = int.from_bytes(payload[:8], "little")
    if size > len(payload) - 8:
        raise InvalidTensors(f"payload is not valid safetensors: its header claims {size} bytes of "
                             f"{len(payload) - 8}")
    if max_header_bytes is not None and size > max_header_bytes:
        raise InvalidTensors(f"safetensors header of {size} bytes is larger than the {max_header_bytes} bytes "
                             "the federation's spec needs")
    try:
        header = json.loads(payload[8:8 + size])
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidTensors(f"payload is not valid safetensors: header is not JSON ({exc})") from None
    if not isinstance(header, dict) or not all(isinstance(v, dict) for v in header.values()):
        raise InvalidTensors("payload is not valid safetensors: header is not an object of tensor entries")
    return {name: entry for name, entry in header.items() if name != "__metadata__"}


def spec_header_bytes(spec: list[TensorSpec]) -> int:
    """Size of the safetensors header that `spec`'s tensors need (without metadata)."""
    return _header_bytes(tuple(spec))


@functools.lru_cache(maxsize=16)
def _header_bytes(spec: tuple[TensorSpec, ...]) -> int:
    zeros = {s.name: np.zeros(s.shape, dtype=_NP_DTYPES[s.dtype]) for s in spec if s.dtype in _NP_DTYPES}
    return int.from_bytes(encode(zeros)[:8], "little") if zeros else 0


def max_payload_bytes(spec: list[TensorSpec], header_slack: int = HEADER_SLACK) -> int:
    """The largest safetensors payload `decode_as` can accept for `spec`: length prefix, header, data."""
    data = sum(int(np.prod(s.shape, dtype=np.int64)) * _NP_DTYPES[s.dtype].itemsize for s in spec
               if s.dtype in _NP_DTYPES)
    return 8 + spec_header_bytes(spec) + header_slack + data


def decode_as(payload: bytes, spec: list[TensorSpec], header_slack: int = HEADER_SLACK) -> dict[str, np.ndarray]:
    """Parse an update for `spec` in bounded work: header size, tensor count, names, shapes and dtypes are
    checked on the header before any tensor is built (the one spec check), then every value must be finite."""
    entries = read_header(payload, spec_header_bytes(spec) + header_slack)
    if len(entries) > len(spec):
        raise InvalidTensors(f"payload holds {len(entries)} tensors; the federation's spec has {len(spec)}")
    got = []
    for name, entry in sorted(entries.items()):
        shape = entry.get("shape")
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise InvalidTensors(f"tensor {name!r} has an invalid shape {shape!r}")
        got.append(TensorSpec(name, tuple(shape), str(entry.get("dtype"))))
    diff = spec_difference(spec, got)
    if diff:
        raise InvalidTensors(diff)
    try:  # the header was checked above (names, shapes, dtypes of the spec): parse the data
        tensors = dict(st_load(payload))
    except (SafetensorError, ValueError, OverflowError, KeyError) as exc:
        raise InvalidTensors(f"payload is not valid safetensors: {exc!r}") from exc
    check_finite(tensors)
    return tensors


def validate(tensors: Mapping[str, np.ndarray], expected: list[TensorSpec]) -> None:
    """Raise InvalidTensors unless names, shapes and dtypes match `expected` and all values are finite."""
    diff = spec_difference(expected, spec_of(tensors))
    if diff:
        raise InvalidTensors(diff)
    check_finite(tensors)


def check_finite(tensors: Mapping[str, np.ndarray]) -> None:
    """Raise InvalidTensors naming the first tensor (by name) that holds NaN or Inf."""
    for name in sorted(tensors):
        if np.isfinite(tensors[name]).all():
            continue
        bad = int(np.count_nonzero(~np.isfinite(tensors[name])))
        if bad:
            raise InvalidTensors(f"tensor {name!r} holds {bad} NaN or Inf values")


def decode_verified(payload: bytes, digest: str, what: str) -> dict[str, np.ndarray]:
    """The tensors of `payload`, after checking they are the bytes whose SHA-256 their sender sent (`digest`)."""
    if sha256(payload) != digest:
        raise InvalidTensors(f"{what} failed their SHA-256 check")
    return decode(payload)


def sha256(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


def resubmit_digest(payload: bytes) -> str:
    """What tells an update resubmitted by its own client from a different one: CRC-32 and length, a third of
    SHA-256's CPU (it runs for every update). Not collision-resistant, and it need not be: a collision can only
    make the coordinator answer "duplicate" to a different update from the same client id, which it refuses to
    take either way; the first update stays."""
    return f"{zlib.crc32(payload):08x}:{len(payload)}"


def atomic_write(path: Path, data: bytes, replace: bool = True) -> None:
    """Write via a temp file in the same directory, fsync, rename: readers see the old or the new file.
    `replace=False`: link instead of rename, so an existing file stays (of two writers racing, the first wins)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            _link_once(Path(tmp), path, data)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _link_once(tmp: Path, path: Path, data: bytes) -> None:
    """`path` from `tmp` unless it exists; where the file system has no hard links, an exclusive create."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    except OSError:  # no hard links here (some network or FAT mounts)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # as private as mkstemp's file
        except FileExistsError:
            fd = -1
        if fd >= 0:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
    tmp.unlink()


def remove_stale_temps(directory: Path) -> list[Path]:
    """Delete the temp files `atomic_write` leaves when a crash interrupts it (".<name>.<random>.tmp");
    call it on start, before anything in `directory` is written. Returns what it removed."""
    removed = []
    for path in sorted(Path(directory).glob(".*.tmp")) if Path(directory).is_dir() else []:
        if path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def save_file(path: Path, tensors: Mapping[str, np.ndarray] | Encoded, metadata: dict[str, str] | None = None) -> None:
    """Write tensors atomically; `Encoded` ones from their bytes (with `metadata` added), not encoded again."""
    if isinstance(tensors, Encoded):
        atomic_write(path, with_metadata(tensors.payload, metadata or {}))
    else:
        atomic_write(path, encode(tensors, metadata))


def load_file(path: Path) -> dict[str, np.ndarray]:
    return decode(Path(path).read_bytes())
