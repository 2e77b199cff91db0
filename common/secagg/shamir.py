"""Shamir secret sharing over the prime field of p = 2**127 - 1, for byte strings such as 32-byte seeds and keys.

A secret is cut into 15-byte chunks (each below p), and each chunk is the constant term of its own random
polynomial of degree t - 1; share x holds every polynomial's value at x. Any t shares give the secret by Lagrange
interpolation at 0; t - 1 shares are consistent with every secret, so they say nothing about it.

Each share carries a commitment to the secret, SHA-256 over a label and the secret (the secrets shared here are
uniformly random, 256 bits, so the hash reveals nothing usable). `reconstruct` checks that the shares agree on it,
that the interpolated secret matches it, and that every share beyond the first t lies on the same polynomials,
so a dealer who handed out inconsistent shares is caught rather than yielding a wrong secret.
The coefficients come from the operating system's entropy unless a generator is passed (tests only).
"""

from __future__ import annotations

import functools
import hashlib
import random
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

PRIME = 2**127 - 1
CHUNK_BYTES = 15  # 120 bits < 127: every chunk is a field element
_COMMIT_LABEL = b"pfeddc-secagg/v1/shamir-commitment"


class InconsistentSharesError(ValueError):
    """The shares do not determine one secret matching their commitment."""


@dataclass(frozen=True)
class Share:
    x: int  # 1..n, never 0 (the secret lives at 0)
    ys: tuple[int, ...]  # one value per 15-byte chunk
    length: int  # the secret's length in bytes
    commitment: bytes  # SHA-256 of the secret, as the dealer computed it


def commit(secret: bytes) -> bytes:
    return hashlib.sha256(_COMMIT_LABEL + secret).digest()


def _chunks(secret: bytes) -> list[int]:
    return [int.from_bytes(secret[i:i + CHUNK_BYTES], "big") for i in range(0, len(secret), CHUNK_BYTES)]


def _unchunk(values: Sequence[int], length: int) -> bytes:
    out = b""
    for i, v in enumerate(values):
        size = min(CHUNK_BYTES, length - i * CHUNK_BYTES)
        if not 0 <= v < 1 << (8 * size):
            raise InconsistentSharesError("the shares interpolate to no secret of the committed length")
        out += v.to_bytes(size, "big")
    return out


def share(secret: bytes, n: int, t: int, rng: random.Random | None = None) -> list[Share]:
    """n shares of `secret`, any t of which reconstruct it."""
    if not 1 <= t <= n:
        raise ValueError(f"need 1 <= threshold <= shares, got threshold {t} of {n}")
    if n >= PRIME or not secret:
        raise ValueError("the secret must be non-empty and n below the field's prime")
    draw = rng or secrets.SystemRandom()
    polys = [[c] + [draw.randrange(PRIME) for _ in range(t - 1)] for c in _chunks(secret)]
    commitment = commit(secret)
    out = []
    for x in range(1, n + 1):
        ys = []
        for coeffs in polys:
            y = 0
            for c in reversed(coeffs):  # Horner
                y = (y * x + c) % PRIME
            ys.append(y)
        out.append(Share(x, tuple(ys), len(secret), commitment))
    return out


@functools.lru_cache(maxsize=1024)  # a pure function: in one round every dealer's shares sit at the same xs
def _lagrange_at(xs: tuple[int, ...], at: int) -> tuple[int, ...]:
    """Weights w_i with f(at) = sum_i w_i f(x_i) for any polynomial of degree < len(xs)."""
    weights = []
    for i, xi in enumerate(xs):
        num = 1
        den = 1
        for j, xj in enumerate(xs):
            if j != i:
                num = num * (at - xj) % PRIME
                den = den * (xi - xj) % PRIME
        weights.append(num * pow(den, -1, PRIME) % PRIME)
    return tuple(weights)


def _check_alike(shares: Sequence[Share]) -> None:
    first = shares[0]
    if any((s.length, s.commitment, len(s.ys)) != (first.length, first.commitment, len(first.ys)) for s in shares):
        raise InconsistentSharesError("the shares disagree on the secret's length or commitment")
    if len({s.x for s in shares}) != len(shares) or any(not 0 < s.x < PRIME for s in shares):
        raise InconsistentSharesError("the shares' x coordinates must be distinct and non-zero")


def interpolate(shares: Sequence[Share]) -> bytes:
    """The value the shares' polynomials take at 0, unchecked: the secret only from t or more consistent shares."""
    if not shares:
        raise ValueError("no shares to interpolate")
    _check_alike(shares)
    weights = _lagrange_at(tuple(s.x for s in shares), 0)
    values = [sum(w * s.ys[k] for w, s in zip(weights, shares, strict=True)) % PRIME for k in range(len(shares[0].ys))]
    return _unchunk(values, shares[0].length)


def reconstruct(shares: Sequence[Share], threshold: int) -> bytes:
    """The secret from at least `threshold` shares, checked against its commitment and every extra share."""
    if len(shares) < threshold:
        raise ValueError(f"{len(shares)} shares cannot reveal a secret shared with threshold {threshold}")
    _check_alike(shares)
    basis = shares[:threshold]
    extra = shares[threshold:]
    secret = interpolate(basis)
    if commit(secret) != basis[0].commitment:
        raise InconsistentSharesError("the interpolated secret does not match the commitment carried with the shares")
    if extra and not _on_one_polynomial(shares, threshold):
        off = [s.x for s in extra if _off_polynomial(basis, s)]
        raise InconsistentSharesError(f"shares at x = {off} do not lie on the dealer's polynomials")
    return secret


@functools.lru_cache(maxsize=1024)
def _parity_weights(xs: tuple[int, ...], threshold: int) -> tuple[int, ...]:
    """A random w with sum_i w_i f(x_i) = 0 for every f of degree < threshold (a codeword of the dual code).

    w_i = g(x_i) / prod_{m != i}(x_i - x_m), g(x) = sum_{j < k - threshold} (r x)^j: x^j f has degree < k - 1,
    so its divided difference over the k points is 0. Values off any such f give a non-zero sum but with
    probability (k - threshold) / p over r, drawn once per set of points from the OS and unknown to dealers.
    """
    r = secrets.randbelow(PRIME)
    out = []
    for i, xi in enumerate(xs):
        den = 1
        for j, xj in enumerate(xs):
            if j != i:
                den = den * (xi - xj) % PRIME
        g = 0
        for _ in range(len(xs) - threshold):
            g = (g * r * xi + 1) % PRIME
        out.append(g * pow(den, -1, PRIME) % PRIME)
    return tuple(out)


def _on_one_polynomial(shares: Sequence[Share], threshold: int) -> bool:
    """All shares on polynomials of degree < threshold, in one pass: k multiplications per chunk."""
    w = _parity_weights(tuple(s.x for s in shares), threshold)
    return all(sum(wi * s.ys[k] for wi, s in zip(w, shares, strict=True)) % PRIME == 0
               for k in range(len(shares[0].ys)))


def _off_polynomial(basis: Sequence[Share], s: Share) -> bool:
    weights = _lagrange_at(tuple(b.x for b in basis), s.x)
    return any(sum(w * b.ys[k] for w, b in zip(weights, basis, strict=True)) % PRIME != s.ys[k]
               for k in range(len(s.ys)))
