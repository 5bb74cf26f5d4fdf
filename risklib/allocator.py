"""Process memory allocator settings for the long-running risk processes.

A cycle allocates and frees tens of megabytes of arrays (numpy uses the C
library's ``malloc``). With glibc's defaults, freed memory at the top of the
heap and every array over 128 KiB go back to the operating system at once, so
the next cycle page-faults the same memory in again: measured here, that is a
third of a 10,000-account policy evaluation (~8 ms of ~23 ms), spent zeroing
pages rather than evaluating. Keeping freed memory for reuse costs up to
``trim_threshold`` of resident memory that the process would soon ask for again.

NumPy asks the kernel for transparent huge pages (``madvise(MADV_HUGEPAGE)``) for every
array of 4 MiB or more. Where the kernel then compacts memory to find a free 2 MiB
page (``defrag`` = ``madvise``, the common default), that fault stalls the thread
that touched the page: measured here, a 10,000-account cycle's sizing stage took
86-146 ms at p90/max instead of 39-42 ms, all of it system time in page faults.
Small pages cost a few more faults and never a compaction, so the risk processes
turn the hint off.

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
                   top_pad: int = 64 * MIB, huge_pages: bool = False) -> bool:
    """Keep freed heap memory for reuse instead of returning it to the OS after every cycle.

    Arrays below ``mmap_threshold`` come from the heap (an ``mmap`` per array is unmapped on free);
    the heap is trimmed only when more than ``trim_threshold`` is free at its top; it grows
    ``top_pad`` at a time. NumPy's huge-page hint is set to ``huge_pages``. Returns False where
    the C library is not glibc (its malloc is left as it is).
    """
    set_numpy_huge_pages(huge_pages)
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


def set_numpy_huge_pages(enabled: bool) -> bool | None:
    """Whether NumPy hints huge pages for its large arrays from now on; returns the previous
    setting (None where this NumPy has no such switch)."""
    try:
        from numpy._core.multiarray import _set_madvise_hugepage
    except ImportError:
        return None
    return bool(_set_madvise_hugepage(enabled))
