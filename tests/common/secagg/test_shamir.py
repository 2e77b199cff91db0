from __future__ import annotations

import contextlib
import itertools
import os
import random
from dataclasses import replace

import pytest

from pfeddc.common.secagg import shamir


@pytest.mark.parametrize(("n", "t"), [(3, 2), (5, 3), (6, 6), (7, 4)])
def test_shamir_any_t_of_n_reconstruct_the_secret(n: int, t: int) -> None:
    secret = os.urandom(32)
    shares = shamir.share(secret, n, t, random.Random(n * 10 + t))
    for subset in itertools.combinations(shares, t):
        assert shamir.reconstruct(list(subset), t) == secret
    assert shamir.reconstruct(shares, t) == secret  # the extras are checked, and agree


@pytest.mark.parametrize("length", [1, 15, 16, 31, 32, 64])
def test_shamir_secrets_of_any_length_round_trip(length: int) -> None:
    secret = bytes(range(length))[::-1] if length < 256 else os.urandom(length)
    assert shamir.reconstruct(shamir.share(secret, 4, 3), 3) == secret


def test_shamir_fewer_than_t_shares_reveal_nothing() -> None:
    secret = os.urandom(32)
    shares = shamir.share(secret, 5, 3)
    with pytest.raises(ValueError, match="cannot reveal"):
        shamir.reconstruct(shares[:2], 3)
    for pair in itertools.combinations(shares, 2):  # interpolated at 0, t - 1 shares give some other value
        with contextlib.suppress(shamir.InconsistentSharesError):  # most often not even a secret's length
            assert shamir.interpolate(list(pair)) != secret


def test_shamir_inconsistent_shares_are_detected() -> None:
    secret = os.urandom(32)
    shares = shamir.share(secret, 5, 3)
    bad = replace(shares[4], ys=(shares[4].ys[0] ^ 1, *shares[4].ys[1:]))
    with pytest.raises(shamir.InconsistentSharesError, match=r"x = \[5\]"):
        shamir.reconstruct([*shares[:4], bad], 3)
    with pytest.raises(shamir.InconsistentSharesError, match="commit"):
        shamir.reconstruct([bad, *shares[:2]], 3)
    with pytest.raises(shamir.InconsistentSharesError, match="disagree"):
        shamir.reconstruct([replace(shares[0], commitment=bytes(32)), *shares[1:3]], 3)
    with pytest.raises(shamir.InconsistentSharesError, match="distinct"):
        shamir.reconstruct([shares[0], shares[0], shares[1]], 3)


def test_shamir_refuses_a_threshold_above_the_share_count() -> None:
    with pytest.raises(ValueError, match="threshold"):
        shamir.share(b"x", 3, 4)
