"""The layout of a client's ImageFolder: class folders, class names, image files, the held-out split.

Torch-free, so the command line can check a data folder (and fail with a clear message) before any model
or tensor library is imported. Layouts: `root/train/<class>/*` + `root/test/<class>/*` used as given, or
`root/<class>/*` with a seeded held-out test fraction chosen once and recorded by the caller so it survives
restarts. Class names come from `classnames.json` ({folder: name}) or `classnames.txt` (one per line, in
sorted folder order), else from folder names with '_' and '-' read as spaces.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .partition import train_test_split

# Held out per class for testing when a folder has no train/test split (pfeddc-partition writes one with it too).
DEFAULT_TEST_FRACTION = 0.2
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


class DataError(ValueError):
    pass


def class_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def classnames_for(root: Path, folders: list[str]) -> list[str]:
    mapping_file = root / "classnames.json"
    list_file = root / "classnames.txt"
    if mapping_file.is_file():
        mapping = json.loads(mapping_file.read_text())
        missing = [f for f in folders if f not in mapping]
        if missing:
            raise DataError(f"{mapping_file} has no name for class folder(s) {missing}")
        return [str(mapping[f]) for f in folders]
    if list_file.is_file():
        names = [line.strip() for line in list_file.read_text().splitlines() if line.strip()]
        if len(names) != len(folders):
            raise DataError(f"{list_file} lists {len(names)} names for {len(folders)} class folders")
        return names
    return [f.replace("_", " ").replace("-", " ").strip() for f in folders]


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def scan(root: Path) -> tuple[list[str], dict[str, list[tuple[Path, int]]] | list[tuple[Path, int]]]:
    """Class folder names and samples: {'train': [...], 'test': [...]} for a split layout, else one list."""
    if not root.is_dir():
        raise DataError(f"--data {root} is not a directory")
    split = (root / "train").is_dir() and (root / "test").is_dir()
    base = root / "train" if split else root
    folders = [p.name for p in class_folders(base)]
    if not folders:
        raise DataError(f"no class folders in {base}: expected one sub-folder of images per class")

    def samples(parent: Path) -> list[tuple[Path, int]]:
        out = []
        for label, name in enumerate(folders):
            out += [(p, label) for p in list_images(parent / name)] if (parent / name).is_dir() else []
        return out

    if split:
        extra = sorted({p.name for p in class_folders(root / "test")} - set(folders))
        if extra:
            raise DataError(f"{root / 'test'} has class folders missing from train/: {extra}")
        found: dict[str, list[tuple[Path, int]]] | list[tuple[Path, int]] = {
            "train": samples(root / "train"), "test": samples(root / "test")}
    else:
        found = samples(root)
    empty = [f for i, f in enumerate(folders)
             if not any(label == i for _, label in (found["train"] if isinstance(found, dict) else found))]
    if len(empty) == len(folders):
        raise DataError(f"no images in any of the {len(folders)} folders of {base} ({_some(empty)}): is --data "
                        "the folder that holds one folder of images per class?")
    if empty:
        raise DataError(f"class folder(s) without images in {base}: {_some(empty)}")
    return folders, found


def _some(names: list[str], most: int = 8) -> str:
    """The first few names, and how many more (an error message stays readable for any folder)."""
    shown = ", ".join(repr(n) for n in names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


def choose_test_split(samples: list[tuple[Path, int]], root: Path, fraction: float, seed: int) -> list[str]:
    """A seeded, per-class held-out fraction (client/partition.py's rule), as paths relative to `root`."""
    labels = np.array([label for _, label in samples], dtype=np.int64)
    split = train_test_split(list(range(len(samples))), labels, fraction, seed)
    return sorted(str(samples[i][0].relative_to(root)) for i in split.test)
