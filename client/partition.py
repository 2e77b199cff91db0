"""Split a labeled dataset among clients: IID, Dirichlet label shift, pathological, domain shift.

Pure functions over label (and domain) arrays returning index lists: seeded, every sample used at most
once, each client's indices then split per class into train and test.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SCHEMES = ("dirichlet", "pathological", "domain", "iid")


@dataclass(frozen=True)
class ClientSplit:
    train: list[int]
    test: list[int]


def partition(labels: np.ndarray, clients: int, scheme: str, seed: int, alpha: float = 0.5,
              classes_per_client: int = 2, domains: np.ndarray | None = None, min_size: int = 10
              ) -> list[list[int]]:
    """Indices of `labels` for each client."""
    if clients < 1:
        raise ValueError(f"clients must be >= 1, got {clients}")
    if clients > len(labels):
        raise ValueError(f"cannot give {clients} clients a sample each from {len(labels)} samples")
    rng = np.random.default_rng(seed)
    if scheme == "iid":
        return [sorted(part.tolist()) for part in np.array_split(rng.permutation(len(labels)), clients)]
    if scheme == "dirichlet":
        return _dirichlet(labels, clients, alpha, rng, min(min_size, len(labels) // clients))
    if scheme == "pathological":
        return _pathological(labels, clients, classes_per_client, rng)
    if scheme == "domain":
        if domains is None:
            raise ValueError("the domain scheme needs a source with domains (e.g. digits-domains)")
        return _by_domain(domains, clients, rng)
    raise ValueError(f"unknown scheme {scheme!r}; choose one of {', '.join(SCHEMES)}")


def _dirichlet(labels: np.ndarray, clients: int, alpha: float, rng: np.random.Generator, min_size: int
               ) -> list[list[int]]:
    """Per class, proportions ~ Dir(alpha); redrawn until every client holds at least `min_size` samples."""
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    for _ in range(1000):
        parts: list[list[int]] = [[] for _ in range(clients)]
        for c in np.unique(labels):
            idx = rng.permutation(np.flatnonzero(labels == c))
            cuts = (np.cumsum(rng.dirichlet(np.full(clients, alpha))) * len(idx)).astype(int)[:-1]
            for client, chunk in enumerate(np.split(idx, cuts)):
                parts[client] += chunk.tolist()
        if min(len(p) for p in parts) >= min_size:
            return [sorted(p) for p in parts]
    raise ValueError(f"no Dirichlet({alpha}) split gives each of {clients} clients {min_size} samples; "
                     "use fewer clients or a larger alpha")


def _pathological(labels: np.ndarray, clients: int, k: int, rng: np.random.Generator) -> list[list[int]]:
    """Each client holds k classes; classes are dealt round-robin so all are covered, then shared evenly."""
    classes = rng.permutation(np.unique(labels))
    if k < 1 or k > len(classes):
        raise ValueError(f"classes per client must be in [1, {len(classes)}], got {k}")
    owned = [[int(classes[(i * k + j) % len(classes)]) for j in range(k)] for i in range(clients)]
    parts: list[list[int]] = [[] for _ in range(clients)]
    for c in classes:
        holders = [i for i in range(clients) if int(c) in owned[i]]
        idx = rng.permutation(np.flatnonzero(labels == c))
        for holder, chunk in zip(holders, np.array_split(idx, len(holders)), strict=True):
            parts[holder] += chunk.tolist()
    return [sorted(p) for p in parts]


def _by_domain(domains: np.ndarray, clients: int, rng: np.random.Generator) -> list[list[int]]:
    """Client i draws only from domain i mod D; a domain's samples are shared evenly by its clients."""
    names = np.unique(domains)
    parts: list[list[int]] = [[] for _ in range(clients)]
    for d, name in enumerate(names):
        holders = [i for i in range(clients) if i % len(names) == d]
        if not holders:
            continue
        idx = rng.permutation(np.flatnonzero(domains == name))
        for holder, chunk in zip(holders, np.array_split(idx, len(holders)), strict=True):
            parts[holder] += chunk.tolist()
    return [sorted(p) for p in parts]


def train_test_split(indices: list[int], labels: np.ndarray, test_fraction: float, seed: int) -> ClientSplit:
    """Per class: round(fraction * n) test samples, at least one when the class has two or more samples,
    never all of them, so every test class is also a training class."""
    rng = np.random.default_rng(seed)
    train = []
    test = []
    arr = np.asarray(indices, dtype=np.int64)
    for c in np.unique(labels[arr]) if len(arr) else []:
        idx = rng.permutation(arr[labels[arr] == c])
        k = 0 if len(idx) < 2 else min(len(idx) - 1, max(1, round(test_fraction * len(idx))))
        test += idx[:k].tolist()
        train += idx[k:].tolist()
    return ClientSplit(sorted(train), sorted(test))


def counts(labels: np.ndarray, parts: list[list[int]], num_classes: int) -> np.ndarray:
    """[clients, classes] sample counts."""
    out = np.zeros((len(parts), num_classes), dtype=np.int64)
    for i, part in enumerate(parts):
        if part:
            out[i] = np.bincount(labels[np.asarray(part)], minlength=num_classes)
    return out
