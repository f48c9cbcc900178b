"""A process-wide memory setting that lets torch's CPU kernels run at the hardware's pace.

`keep_freed_memory()` is called wherever a team module is built (the learner, every EnvRunner,
evaluation), so that every process that runs the networks has it. It changes no value that
is computed: runs stay deterministic per seed and bit-identical (docs/benchmarks.md, issue #24,
has the measurements).
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
"""glibc's mallopt parameters (malloc.h)."""
MMAP_THRESHOLD = 32 * 2**20
"""Allocations below this come from the heap (glibc's largest allowed value on 64-bit)."""
TRIM_THRESHOLD = 1 * 2**30
"""Free memory at the top of the heap kept for reuse, up to this, rather than given back."""


def keep_freed_memory() -> None:
    """glibc gives a freed block of 128 KiB or more back to the OS and maps it anew on the
    next allocation (its threshold then adapts, up to 32 MiB, and trims the heap's top), so an
    update's views-as-float and activations (25 MB at N = 100) could be page-faulted in again
    on every update. Blocks under 32 MiB now come from the heap, which keeps up to 1 GiB of
    freed memory for reuse. Without glibc (macOS), nothing changes."""
    set_malloc_thresholds(MMAP_THRESHOLD, TRIM_THRESHOLD)


def set_malloc_thresholds(mmap_threshold: int, trim_threshold: int) -> bool:
    """glibc's M_MMAP_THRESHOLD and M_TRIM_THRESHOLD (fixed from then on: glibc stops adjusting
    them itself); False where there is no glibc."""
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c")).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, mmap_threshold)) and \
        bool(mallopt(M_TRIM_THRESHOLD, trim_threshold))
