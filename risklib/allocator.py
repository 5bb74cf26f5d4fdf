"""Process memory allocator settings for the long-running risk processes.

A cycle allocates and frees tens of megabytes of arrays (numpy uses the C
library's ``malloc``). With glibc's defaults, freed memory at the top of the
heap and every array over 128 KiB go back to the operating system at once, so
the next cycle page-faults the same memory in again: measured here, that is a
third of a 10,000-account policy evaluation (~8 ms of ~23 ms), spent zeroing
pages rather than evaluating. Keeping freed memory for reuse costs up to
``trim_threshold`` of resident memory that the process would soon ask for again.

``riskctl`` applies this when it starts (the monitor, ``serve``, the API); the
benchmarks apply it as the product runs, and report the untuned figure beside it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

# mallopt(3) parameters (glibc malloc.h)
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3

MIB = 1 << 20


def tune_allocator(*, mmap_threshold: int = 32 * MIB, trim_threshold: int = 512 * MIB,
                   top_pad: int = 64 * MIB) -> bool:
    """Keep freed heap memory for reuse instead of returning it to the OS after every cycle.

    Arrays below ``mmap_threshold`` come from the heap (an ``mmap`` per array is unmapped on free);
    the heap is trimmed only when more than ``trim_threshold`` is free at its top; it grows
    ``top_pad`` at a time. Returns False where the C library is not glibc (nothing is changed).
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return all(mallopt(param, value) == 1 for param, value in (
        (_M_MMAP_THRESHOLD, mmap_threshold), (_M_TRIM_THRESHOLD, trim_threshold), (_M_TOP_PAD, top_pad)))
