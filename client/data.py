"""Private data as training sets: decoded once into memory when small, streamed from disk when not.

A set that fits in `IN_MEMORY_BYTES` (uint8 pixels at the backbone's size) is decoded once; a larger one
stays on disk and is decoded batch by batch (client/model/train.py's FileImageSet), so memory does not grow
with the number of images. Unreadable images are skipped with a warning each.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import UnidentifiedImageError

from ..common.logs import Event, get_logger
from ..common.spec import class_key
from .folders import DEFAULT_TEST_FRACTION, DataError, choose_test_split, classnames_for, scan
from .model.backbone import preprocess
from .model.images import FileImageSet, Images, ImageSet

log = get_logger("client")
IN_MEMORY_BYTES = 512 * 1024 * 1024


@dataclass
class ClientData:
    classnames: list[str]
    train: Images
    test: Images
    skipped: int  # unreadable images found while loading (streamed sets find theirs as they are read)


def load_images(samples: list[tuple[Path, int]], size: int, progress: bool = False,
                in_memory_bytes: int = IN_MEMORY_BYTES) -> tuple[Images, int]:
    """Decode into memory when the pixels fit in `in_memory_bytes`, else stream them from disk."""
    from tqdm import tqdm

    if len(samples) * 3 * size * size > in_memory_bytes:
        log.info(Event.IMAGES_STREAMED, images=len(samples), size=size, limit_mib=in_memory_bytes // 2**20)
        return FileImageSet([p for p, _ in samples], torch.tensor([y for _, y in samples], dtype=torch.long),
                            size), 0

    arrays = []
    labels = []
    skipped = 0
    for path, label in tqdm(samples, desc="loading images", disable=not progress, leave=False):
        try:
            arrays.append(preprocess(path, size))
            labels.append(label)
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            skipped += 1
            log.warning(Event.IMAGE_SKIPPED, path=str(path), error=str(exc))
    images = torch.from_numpy(np.stack(arrays)) if arrays else torch.zeros((0, 3, size, size), dtype=torch.uint8)
    return ImageSet(images, torch.tensor(labels, dtype=torch.long)), skipped


def load_client_data(root: Path, image_size: int, test_paths: list[str] | None,
                     test_fraction: float = DEFAULT_TEST_FRACTION, seed: int = 0, progress: bool = False,
                     in_memory_bytes: int = IN_MEMORY_BYTES) -> tuple[ClientData, list[str]]:
    """Load and preprocess; returns the data and the test split used (to record for the next start)."""
    root = Path(root)
    folders, found = scan(root)
    classnames = classnames_for(root, folders)
    if isinstance(found, dict):
        train_samples = found["train"]
        test_samples = found["test"]
        test_paths = []
    else:
        if test_paths is None:
            test_paths = choose_test_split(found, root, test_fraction, seed)
        held_out = set(test_paths)
        train_samples = [s for s in found if str(s[0].relative_to(root)) not in held_out]
        test_samples = [s for s in found if str(s[0].relative_to(root)) in held_out]
    train, skipped_train = load_images(train_samples, image_size, progress, in_memory_bytes)
    test, skipped_test = load_images(test_samples, image_size, progress, in_memory_bytes)
    skipped = skipped_train + skipped_test
    if skipped:
        log.warning(Event.IMAGES_SKIPPED, count=skipped, root=str(root))
    if len(train) == 0:
        raise DataError(f"no readable training images under {root} ({skipped} unreadable)")
    return ClientData(classnames, train, test, skipped), test_paths


def align_to(data: ClientData, classes: Sequence[str]) -> ClientData:
    """The site's images labelled by the federation's class list (names matched ignoring case, '_' and '-'),
    so that every site's row c of the shared class embeddings is the same class."""
    index = {class_key(c): i for i, c in enumerate(classes)}
    unknown = [c for c in data.classnames if class_key(c) not in index]
    if unknown:
        raise DataError(f"class folder(s) {unknown} are not among the federation's classes ({', '.join(classes)}): "
                        "rename the folders (or name them in classnames.txt), or ask the coordinator's operator to "
                        "add them to --classes")
    mapping = torch.tensor([index[class_key(c)] for c in data.classnames], dtype=torch.long)
    return ClientData(list(classes), data.train.relabelled(mapping), data.test.relabelled(mapping), data.skipped)
