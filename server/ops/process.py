"""The coordinator process's own settings, applied once by `pfeddc-server` (server/app.py `main`), never on import:
BLAS on one thread, one malloc arena that keeps a round's freed memory for the next round, and what exists once
it serves frozen out of the cycle collector. Each was measured alone (benchmarks/results/coordinator_cost.md)."""

from __future__ import annotations

import ctypes
import gc
import os

from threadpoolctl import threadpool_limits

# glibc's mallopt options (malloc.h) and the values the coordinator sets, each with the environment variable an
# operator may set instead (it wins). One arena: the event loop's thread, gRPC's and the workers' share the main
# heap instead of one heap each (peak RSS at N=500: 430 MiB without). A trim threshold and top pad above a round's
# churn (500 82-KB updates, decoded and clipped: about 120 MB): its freed memory is reused by the next round rather
# than returned to the kernel and faulted in again (-3 to -7% of a plain round's CPU). The ticker still hands
# freed memory back every TRIM_INTERVAL_S (server/ops/runner.py), so a burst of callers does not keep it. Set from
# `main`, threads started on import (numpy's OpenBLAS) already have an arena of their own (360 MiB, not 313): the
# coordinator image sets the same in its environment (deploy/coordinator.Dockerfile), from the first allocation.
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_ARENA_MAX = -8
ALLOCATOR = {"MALLOC_ARENA_MAX": (M_ARENA_MAX, 1), "MALLOC_TRIM_THRESHOLD_": (M_TRIM_THRESHOLD, 256 << 20),
             "MALLOC_TOP_PAD_": (M_TOP_PAD, 64 << 20)}


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(None)
    except OSError:
        return None


def single_threaded_blas() -> None:
    """The coordinator's arrays are small (a round's norms and sums); a BLAS call large enough for OpenBLAS to
    hand to its threads (a norm of a 20,000-value sum) left them spinning after it: 11% of a secure round's
    coordinator CPU at N=100 on 2 cores, more with more cores."""
    threadpool_limits(1, user_api="blas")


def tune_allocator() -> list[str]:
    """Set ALLOCATOR's options where the C library has mallopt (glibc; elsewhere nothing), except those the
    environment sets; returns the names of those set. Before any thread of the server starts."""
    libc = _libc()
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return []
    return [name for name, (option, value) in ALLOCATOR.items() if name not in os.environ and mallopt(option, value)]


def return_freed_memory() -> None:
    """malloc_trim(0) where the C library has it (glibc); elsewhere nothing."""
    trim = getattr(_libc(), "malloc_trim", None)
    if trim is not None:
        trim(0)


def freeze_startup() -> None:
    """What exists once the coordinator serves lives as long as the process (modules, the loaded federation, the
    servers): out of the cycle collector's full passes, which traversed all of it several times a secure round
    (-7% of its coordinator CPU at N=100). A higher collection threshold read -2% more and was not taken: cyclic
    garbage (a refused call's traceback holding its request) would live longer."""
    gc.collect()  # what startup left as cyclic garbage is not frozen with it
    gc.freeze()
