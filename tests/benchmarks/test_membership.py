"""The privacy audit's attack metrics (benchmarks/membership.py) against cases computed by hand."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "membership.py"
_SPEC = importlib.util.spec_from_file_location("membership", _PATH)
assert _SPEC is not None and _SPEC.loader is not None
membership = importlib.util.module_from_spec(_SPEC)
sys.modules.setdefault("membership", membership)  # its dataclasses look their module up
_SPEC.loader.exec_module(membership)

MEMBERS = np.array([0.9, 0.8, 0.4])
NONMEMBERS = np.array([0.7, 0.3, 0.2, 0.1])


def test_auc_counts_the_pairs_a_member_wins() -> None:
    # 0.9 and 0.8 beat all four non-members, 0.4 beats three: 11 of 12 pairs
    assert membership.auc(MEMBERS, NONMEMBERS) == pytest.approx(11 / 12)
    assert membership.auc(NONMEMBERS, MEMBERS) == pytest.approx(1 / 12)


def test_auc_counts_ties_as_one_half() -> None:
    # pairs: (0.5, 0.5) tie = 1/2, (0.5, 0.2) win, (0.1, 0.5) loss, (0.1, 0.2) loss -> 1.5 / 4
    assert membership.auc(np.array([0.5, 0.1]), np.array([0.5, 0.2])) == pytest.approx(0.375)
    assert membership.auc(np.ones(5), np.ones(7)) == pytest.approx(0.5)


def test_auc_matches_sklearn_on_random_scores_with_ties() -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    m, n = rng.integers(0, 20, 300).astype(float), rng.integers(0, 18, 250).astype(float)
    labels = np.r_[np.ones(len(m)), np.zeros(len(n))]
    assert membership.auc(m, n) == pytest.approx(metrics.roc_auc_score(labels, np.r_[m, n]))


def test_tpr_at_fpr_takes_the_roc_point_at_or_below_the_rate() -> None:
    # no non-member may pass at FPR < 1/4: the threshold must be above 0.7 -> 2 of 3 members
    assert membership.tpr_at_fpr(MEMBERS, NONMEMBERS, 0.01) == pytest.approx(2 / 3)
    # one non-member may pass (0.7): the threshold may go down to just above 0.3 -> all members
    assert membership.tpr_at_fpr(MEMBERS, NONMEMBERS, 0.25) == pytest.approx(1.0)
    assert membership.tpr_at_fpr(MEMBERS, NONMEMBERS, 1.0) == 1.0


def test_tpr_at_fpr_never_passes_a_member_tied_with_a_barred_non_member() -> None:
    # the member at 0.7 ties the highest non-member: any threshold admitting it admits that non-member too
    assert membership.tpr_at_fpr(np.array([0.9, 0.7]), np.array([0.7, 0.1]), 0.01) == pytest.approx(0.5)


def test_tpr_at_fpr_of_100_non_members_allows_exactly_one() -> None:
    nonmembers = np.arange(100, dtype=float)  # 0..99
    members = np.array([98.5, 99.5, 120.0, 50.0])
    # 1% of 100 = 1 non-member (99) may score >= t: t just above 98 passes 98.5, 99.5 and 120
    assert membership.tpr_at_fpr(members, nonmembers, 0.01) == pytest.approx(3 / 4)


def test_metrics_of_an_empty_side_are_nan_and_the_blind_band_shrinks_with_size() -> None:
    assert math.isnan(membership.auc(np.array([]), NONMEMBERS))
    assert math.isnan(membership.tpr_at_fpr(MEMBERS, np.array([])))
    # Mann-Whitney under the null: sqrt((n1 + n2 + 1) / (12 n1 n2))
    assert membership.null_auc_std(3, 4) == pytest.approx(math.sqrt(8 / 144))
    assert membership.null_auc_std(1000, 1000) < membership.null_auc_std(100, 100)
