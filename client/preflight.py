"""Checks of the client's flags that take milliseconds, run before anything slow (model, data, network).

Each names the mistake and the fix: a URL where HOST:PORT belongs, a --data folder that holds one folder per
site instead of one per class, and files the client's user cannot read (the real PermissionError, not a
"model not found" that hides it).
"""

from __future__ import annotations

import os
from pathlib import Path

from ..common.transport import split_target
from .folders import IMAGE_SUFFIXES, DataError, scan

_PERMISSION_HINT = ("the client runs as uid {uid}: make the files readable to it (on Kubernetes: the volume's "
                    "fsGroup or permissions)")


def check_server(target: str) -> None:
    split_target(target)  # raises ValueError naming URLs and other malformed addresses


def check_data(root: Path) -> None:
    """Refuse a folder of site folders and unreadable folders, before the images are read."""
    try:
        _check_data(root)
        scan(root)  # no folder, no class folders, empty classes: all named before the model loads
    except PermissionError as exc:
        raise _denied("--data", root, exc) from None


def _check_data(root: Path) -> None:
    _walk_readable(root, "--data")
    base = root / "train" if (root / "train").is_dir() and (root / "test").is_dir() else root
    if not base.is_dir():
        return  # scan() names this, next
    tops = _subdirs(base)
    nested: dict[str, set[str]] = {}
    for top in tops:
        if any(_is_image(p) for p in top.iterdir()):
            return  # images directly in a class folder: an ordinary layout
        nested[top.name] = {p.name for p in _subdirs(top)}
    shared = set.intersection(*nested.values()) if len(nested) >= 2 else set()
    if len(shared) >= 2:
        example = sorted(nested)[0]
        raise DataError(
            f"--data {root} looks like a folder of site folders ({', '.join(sorted(nested)[:4])}"
            f"{', ...' if len(nested) > 4 else ''} each hold {', '.join(sorted(shared)[:4])}): they would be taken "
            f"as classes. Point --data at one site's folder, e.g. {base / example} (class folders with the same "
            "sub-folders in each are refused too: put their images directly in the class folders)")


def check_model(model: str | None) -> None:
    """A local model directory must be readable by this user; hub names are resolved later."""
    if not model:
        return
    try:
        _check_model(model)
    except PermissionError as exc:
        raise _denied("--model", Path(model), exc) from None


def _check_model(model: str) -> None:
    path = Path(model).expanduser()
    if not (path.exists() or model.startswith(("/", "./", "../", "~"))):
        return  # a hub name
    if not path.exists():
        raise DataError(f"--model {model}: no such directory")
    _walk_readable(path, "--model")
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        try:
            with open(file, "rb") as fh:
                fh.read(1)
        except PermissionError as exc:
            raise _denied("--model", Path(model), exc) from None


def _denied(flag: str, root: Path, exc: PermissionError) -> DataError:
    return DataError(f"{flag} {root}: cannot read {exc.filename}: {exc.strerror} ("
                     + _PERMISSION_HINT.format(uid=os.getuid()) + ")")


def _walk_readable(root: Path, flag: str) -> None:
    def fail(exc: OSError) -> None:
        if isinstance(exc, PermissionError):
            raise _denied(flag, root, exc)

    if root.is_dir():
        for _ in os.walk(root, onerror=fail):
            pass


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()
