"""orchestrator/heap.py: the server keeps freed memory instead of giving it back
to the kernel per placement (glibc's mallopt)."""

from __future__ import annotations

import subprocess
import sys

from orchestrator.heap import keep_freed_memory


def test_keep_freed_memory_sets_glibc_in_a_fresh_process():
    """In a fresh process (this one's settings untouched): mallopt accepts every
    value, and freeing 80 KB arrays then no longer gives the heap's top back
    (the program break stays where it is; before, it moved back)."""
    code = """
import ctypes, ctypes.util, sys
import numpy as np
from orchestrator.heap import keep_freed_memory
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.sbrk.restype = ctypes.c_void_p
libc.sbrk.argtypes = (ctypes.c_ssize_t,)
def gives_back():
    # the program break with 8 x 80 KB arrays alive, then once they are freed
    a = [np.ones(10_000) for _ in range(8)]
    held = libc.sbrk(0)
    del a
    return held != libc.sbrk(0)
before = gives_back()
assert keep_freed_memory() is True
gives_back()  # the heap grows to its new padding once
print(before, gives_back())
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="."
    ).stdout.split()
    assert out == ["True", "False"]


def test_keep_freed_memory_is_true_here():
    assert keep_freed_memory() is True
