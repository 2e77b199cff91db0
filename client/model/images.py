"""Labelled images for training and evaluation, a batch at a time: in memory, or decoded from disk.

`batches()` is the one way training and evaluation read images: in order, readable samples only; images left
on disk are decoded by worker processes while the previous batch trains, so memory stays flat.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import torch
from PIL import UnidentifiedImageError

from ...common.logs import Event, get_logger
from .backbone import preprocess

log = get_logger("client")
DECODE_WORKERS = min(4, max(1, (os.cpu_count() or 2) - 1))  # processes decoding images streamed from disk


_Set = TypeVar("_Set", bound="Images")


class Images:
    """Labelled images for training and evaluation: uint8 pixels [B, 3, S, S] by index, a batch at a time."""

    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixels and labels of the samples `idx`; a sample that cannot be read has label -1 (and zeros)."""
        raise NotImplementedError

    def relabelled(self: _Set, mapping: torch.Tensor) -> _Set:
        """A copy whose label y is `mapping[y]` (the same pixels or files; this set is left as it is)."""
        other = copy.copy(self)
        other.labels = mapping[self.labels]
        return other


class ImageSet(Images):
    """Images decoded once, held in memory as uint8."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images = images
        self.labels = labels

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[idx], self.labels[idx]


class FileImageSet(Images, torch.utils.data.Dataset[tuple[torch.Tensor, int]]):
    """Images left on disk and decoded when a batch needs them: memory stays flat however many there are."""

    def __init__(self, paths: list[Path], labels: torch.Tensor, size: int) -> None:
        self.paths = paths
        self.labels = labels
        self.size = size

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        try:
            return torch.from_numpy(preprocess(self.paths[i], self.size)), int(self.labels[i])
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            log.warning(Event.IMAGE_SKIPPED, path=str(self.paths[i]), error=str(exc))
            return torch.zeros((3, self.size, self.size), dtype=torch.uint8), -1

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return _stack([self[int(i)] for i in idx])


def _stack(items: list[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items], dtype=torch.long)


def batches(data: Images, order: torch.Tensor, batch_size: int, workers: int = DECODE_WORKERS
            ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(indices, pixels, labels) in `order`, readable samples only; images on disk are decoded by `workers`
    processes while the previous batch trains."""
    chunks = [order[s:s + batch_size] for s in range(0, len(order), batch_size)]
    if isinstance(data, FileImageSet) and workers > 0:
        loader = torch.utils.data.DataLoader(data, batch_sampler=[c.tolist() for c in chunks], num_workers=workers,
                                             collate_fn=_stack)
        pairs: Iterator[tuple[torch.Tensor, torch.Tensor]] = iter(loader)
    else:
        pairs = (data.batch(idx) for idx in chunks)
    for idx, (x, y) in zip(chunks, pairs, strict=True):
        ok = y >= 0
        if bool(ok.all()):
            yield idx, x, y
        elif bool(ok.any()):
            yield idx[ok], x[ok], y[ok]
