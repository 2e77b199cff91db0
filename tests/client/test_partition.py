"""Partitioners: exact counts, determinism, disjointness, the IID limit, non-empty test splits."""

from __future__ import annotations

import numpy as np
import pytest

from pfeddc.client.partition import counts, partition, train_test_split

LABELS = np.repeat(np.arange(10), 100)


@pytest.mark.parametrize("scheme", ["iid", "dirichlet", "pathological"])
def test_every_sample_used_at_most_once_and_counts_add_up(scheme: str) -> None:
    parts = partition(LABELS, 7, scheme, seed=0, alpha=0.3, classes_per_client=3)
    flat = [i for p in parts for i in p]
    assert len(flat) == len(set(flat))
    if scheme != "pathological":
        assert sorted(flat) == list(range(len(LABELS)))
    assert counts(LABELS, parts, 10).sum() == len(flat)


def test_same_seed_same_split_other_seed_other_split() -> None:
    a = partition(LABELS, 5, "dirichlet", seed=3, alpha=0.5)
    assert a == partition(LABELS, 5, "dirichlet", seed=3, alpha=0.5)
    assert a != partition(LABELS, 5, "dirichlet", seed=4, alpha=0.5)


def test_large_alpha_is_close_to_iid_and_small_alpha_is_skewed() -> None:
    def max_share(alpha: float) -> float:
        grid = counts(LABELS, partition(LABELS, 5, "dirichlet", seed=0, alpha=alpha), 10)
        return float((grid / grid.sum(1, keepdims=True)).max())

    assert max_share(1e4) < 0.15  # uniform would be 0.10 per class
    assert max_share(0.05) > 0.5


def test_pathological_gives_each_client_k_classes() -> None:
    grid = counts(LABELS, partition(LABELS, 5, "pathological", seed=0, classes_per_client=2), 10)
    assert ((grid > 0).sum(1) == 2).all()


def test_domain_scheme_keeps_each_client_in_one_domain() -> None:
    domains = np.array(["a", "b", "c"] * 100)
    parts = partition(np.zeros(300, dtype=int), 6, "domain", seed=0, domains=domains)
    assert all(len({domains[i] for i in p}) == 1 for p in parts)
    assert sum(len(p) for p in parts) == 300
    with pytest.raises(ValueError, match="needs a source with domains"):
        partition(LABELS, 2, "domain", seed=0)


def test_train_test_split_is_per_class_and_never_empty() -> None:
    for part in partition(LABELS, 10, "dirichlet", seed=1, alpha=0.1):
        split = train_test_split(part, LABELS, 0.2, seed=0)
        assert split.test and set(split.train).isdisjoint(split.test)
        assert sorted(split.train + split.test) == part
        assert set(LABELS[split.test]) <= set(LABELS[split.train])


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="alpha"):
        partition(LABELS, 3, "dirichlet", seed=0, alpha=0)
    with pytest.raises(ValueError, match="unknown scheme"):
        partition(LABELS, 3, "zipf", seed=0)
