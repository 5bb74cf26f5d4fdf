"""The allocator settings the risk processes run with keep freed memory for the next cycle."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import textwrap

import pytest

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# Allocates and frees 64 one-MiB arrays (what a cycle does at scale), then prints how many bytes the
# heap still holds free for reuse (glibc mallinfo2).
_PROBE = textwrap.dedent("""
    import ctypes, sys
    import numpy as np
    from risklib.allocator import tune_allocator

    class MallInfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in
                    ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
                     "fordblks", "keepcost")]

    if sys.argv[1] == "tuned":
        assert tune_allocator()
    arrays = [np.ones(1 << 17) for _ in range(64)]  # 64 x 1 MiB
    del arrays
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
    print(libc.mallinfo2().fordblks)
""")


def _free_heap_after_a_cycle(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


@pytest.mark.skipif(not GLIBC, reason="mallopt tuning applies to glibc's malloc only")
def test_tuned_process_keeps_freed_cycle_memory_for_reuse():
    # Act
    default = _free_heap_after_a_cycle("default")
    tuned = _free_heap_after_a_cycle("tuned")
    # Assert: by default each MiB array was its own mapping, returned on free; tuned, the heap keeps it
    assert default < 16 << 20
    assert tuned >= 60 << 20



# Allocates a 64 MiB array (its own mapping) and prints whether the kernel was asked for huge pages
# for it: the mapped range's VmFlags in /proc/self/smaps carry "hg" after madvise(MADV_HUGEPAGE).
_HUGE_PAGE_PROBE = textwrap.dedent("""
    import sys
    import numpy as np
    from risklib.allocator import tune_allocator

    if sys.argv[1] == "tuned":
        tune_allocator()
    a = np.ones(1 << 23)  # 64 MiB
    start = a.__array_interface__["data"][0]
    end = start + a.nbytes
    hinted, overlaps = False, False
    for line in open("/proc/self/smaps"):  # the hint splits the mapping: look at every part of it
        head = line.split()[0]
        if "-" in head and ":" not in head:
            lo, hi = (int(x, 16) for x in head.split("-"))
            overlaps = lo < end and start < hi
        elif overlaps and line.startswith("VmFlags:"):
            hinted = hinted or "hg" in line.split()[1:]
    print(hinted)
""")


def _huge_pages_hinted(mode: str) -> bool:
    out = subprocess.run([sys.executable, "-c", _HUGE_PAGE_PROBE, mode], capture_output=True, text=True, check=True)
    return out.stdout.strip() == "True"


@pytest.mark.skipif(not os.path.exists("/sys/kernel/mm/transparent_hugepage"),
                    reason="a kernel built without transparent huge pages refuses the hint, so there is none to turn off")
def test_tuned_process_does_not_ask_for_huge_pages():
    # Act
    default = _huge_pages_hinted("default")
    tuned = _huge_pages_hinted("tuned")
    # Assert: NumPy hints huge pages for a large array by default; the risk processes turn that off
    assert default
    assert not tuned
