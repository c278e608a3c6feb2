"""Keep freed memory in the process instead of handing it back at once.

glibc gives the top of the heap back to the kernel whenever 128 KB lie free
there, and takes blocks of 128 KB or more straight from the kernel. A placement
over 10,000 hosts makes and frees arrays of 80 KB several times per decision,
so without this each decision gives pages back and faults them in again (about
half its time in bench/scheduler.py). The server and the benchmark call
``keep_freed_memory`` once at start; it costs some megabytes of resident memory.
"""

from __future__ import annotations

import ctypes
import ctypes.util

# mallopt(3) parameters
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3

MB = 1024 * 1024


def keep_freed_memory(trim: int = 64 * MB, pad: int = 16 * MB, mmap: int = 16 * MB) -> bool:
    """Set glibc's trim threshold, top pad and mmap threshold; False where the C
    library is not glibc (nothing changes there)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return all(
        mallopt(param, value) == 1
        for param, value in (
            (_M_TRIM_THRESHOLD, trim),
            (_M_TOP_PAD, pad),
            (_M_MMAP_THRESHOLD, mmap),
        )
    )
