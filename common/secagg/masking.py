"""Masks: a 32-byte seed expanded by AES-256-CTR into a vector uniform in the integers mod M = 2**bits.

Site u sends y_u = q_u + PRG(b_u) + sum_{v > u} PRG(s_uv) - sum_{v < u} PRG(s_uv)  (mod M, ids compared as
strings), where b_u is its self-mask seed and s_uv the seed it shares with v. Over the sites that sent, the
pairwise masks cancel in pairs, except those shared with a site that shared keys but sent nothing (dropped): the
coordinator removes those from the seeds it recomputes from the dropped site's reconstructed mask key, and the
self masks from the reconstructed b_u of the survivors. Because every element of PRG(b_u) is uniform mod M (M is
a power of two and each element takes whole bytes of keystream, then the low bits), y_u alone is uniform too.
Each seed keys AES once with a zero nonce: seeds are unique per round, attempt and pair (keys.py). Sums run in
uint64, wrapping mod 2**64 (a multiple of M), and are reduced once at the end.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from .field import FieldParams, reduce

_ZERO_NONCE = bytes(16)


def expand(seed: bytes, length: int, params: FieldParams) -> np.ndarray:
    """A pseudo-random vector of `length` elements uniform in [0, M), as uint64."""
    if len(seed) != 32:
        raise ValueError(f"a mask seed is 32 bytes, got {len(seed)}")
    width = params.element_bytes
    stream = Cipher(algorithms.AES(seed), modes.CTR(_ZERO_NONCE)).encryptor().update(bytes(length * width))
    words = np.frombuffer(stream, dtype="<u4" if width == 4 else "<u8").astype(np.uint64)
    return words & np.uint64(params.modulus - 1)


def sign(own_id: str, peer_id: str) -> int:
    """+1 if the site adds the pair's mask, -1 if it subtracts it: the two sides always disagree."""
    if own_id == peer_id:
        raise ValueError(f"a site has no pairwise mask with itself ({own_id!r})")
    return 1 if own_id < peer_id else -1


def mask(q: np.ndarray, own_id: str, self_seed: bytes, pair_seeds: Mapping[str, bytes],
         params: FieldParams) -> np.ndarray:
    """y = q + PRG(self_seed) +- PRG(s_peer) for every peer (mod M)."""
    y = q + expand(self_seed, q.size, params)
    for peer, seed in pair_seeds.items():
        if sign(own_id, peer) > 0:
            y += expand(seed, q.size, params)
        else:
            y -= expand(seed, q.size, params)
    return reduce(y, params)


def unmask(masked_sum: np.ndarray, self_seeds: Iterable[bytes],
           dangling: Iterable[tuple[str, str, bytes]], params: FieldParams) -> np.ndarray:
    """The sum of the survivors' q from the sum of their y.

    self_seeds: the reconstructed b_u of every survivor. dangling: (survivor, dropped, seed) for every pair of a
    survivor and a dropped site, whose mask the survivor added with sign(survivor, dropped) and nobody cancelled.
    """
    total = np.array(masked_sum, dtype=np.uint64)
    for seed in self_seeds:
        total -= expand(seed, total.size, params)
    for survivor, dropped, seed in dangling:
        if sign(survivor, dropped) > 0:
            total -= expand(seed, total.size, params)
        else:
            total += expand(seed, total.size, params)
    return reduce(total, params)
