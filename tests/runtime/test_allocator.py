"""The allocator settings the risk processes run with keep freed memory for the next cycle."""

from __future__ import annotations

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

