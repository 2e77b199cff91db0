"""Private data: an ImageFolder on the client's disk, preprocessed once into a compact uint8 tensor.

Layouts: `root/train/<class>/*` + `root/test/<class>/*` used as given, or `root/<class>/*` with a seeded
held-out test fraction chosen once and recorded by the caller so it survives restarts. Class names come
from `classnames.json` ({folder: name}) or `classnames.txt` (one per line, in sorted folder order), else
from folder names with '_' and '-' read as spaces.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import UnidentifiedImageError

from ..common.logs import Event, get_logger
from ..common.partition import train_test_split
from .model.backbone import preprocess
from .model.train import ImageSet

log = get_logger("client")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


class DataError(ValueError):
    pass


@dataclass
class ClientData:
    classnames: list[str]
    train: ImageSet
    test: ImageSet
    skipped: int


def class_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def classnames_for(root: Path, folders: list[str]) -> list[str]:
    mapping_file, list_file = root / "classnames.json", root / "classnames.txt"
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
    if empty:
        raise DataError(f"class folder(s) without images in {base}: {empty}")
    return folders, found


def choose_test_split(samples: list[tuple[Path, int]], root: Path, fraction: float, seed: int) -> list[str]:
    """A seeded, per-class held-out fraction (common.partition's rule), as paths relative to `root`."""
    labels = np.array([label for _, label in samples], dtype=np.int64)
    split = train_test_split(list(range(len(samples))), labels, fraction, seed)
    return sorted(str(samples[i][0].relative_to(root)) for i in split.test)


def load_images(samples: list[tuple[Path, int]], size: int, progress: bool = False) -> tuple[ImageSet, int]:
    from tqdm import tqdm

    arrays, labels, skipped = [], [], 0
    for path, label in tqdm(samples, desc="loading images", disable=not progress, leave=False):
        try:
            arrays.append(preprocess(path, size))
            labels.append(label)
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            skipped += 1
            log.warning(Event.IMAGE_SKIPPED, path=str(path), error=str(exc))
    images = torch.from_numpy(np.stack(arrays)) if arrays else torch.zeros((0, 3, size, size), dtype=torch.uint8)
    return ImageSet(images, torch.tensor(labels, dtype=torch.long)), skipped


def load_client_data(root: Path, image_size: int, test_paths: list[str] | None, test_fraction: float = 0.2,
                     seed: int = 0, progress: bool = False) -> tuple[ClientData, list[str]]:
    """Load and preprocess; returns the data and the test split used (to record for the next start)."""
    root = Path(root)
    folders, found = scan(root)
    classnames = classnames_for(root, folders)
    if isinstance(found, dict):
        train_samples, test_samples, test_paths = found["train"], found["test"], []
    else:
        if test_paths is None:
            test_paths = choose_test_split(found, root, test_fraction, seed)
        held_out = set(test_paths)
        train_samples = [s for s in found if str(s[0].relative_to(root)) not in held_out]
        test_samples = [s for s in found if str(s[0].relative_to(root)) in held_out]
    train, skipped_train = load_images(train_samples, image_size, progress)
    test, skipped_test = load_images(test_samples, image_size, progress)
    skipped = skipped_train + skipped_test
    if skipped:
        log.warning(Event.IMAGES_SKIPPED, count=skipped, root=str(root))
    if len(train) == 0:
        raise DataError(f"no readable training images under {root} ({skipped} unreadable)")
    return ClientData(classnames, train, test, skipped), test_paths
