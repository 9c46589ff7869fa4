"""Guarded memory: tensors placed against an inaccessible page, to catch kernels that read or
write outside their buffers.

With ``LEPTON_TVM_GUARD=after`` (or ``before``) in the environment, `StaticExecutor` gives
every kernel argument its own tensor that ends right before (or starts right after) a page
the process may not touch, and runs the steps from Python (not the Relax VM, which allocates
its own storage). A kernel that reads or writes past the end (or before the start) of any
of its buffers then faults at once, at the kernel that did it, instead of corrupting or
crashing something later depending on where the allocator happened to place a buffer.

The end of a buffer is rounded up to 64 bytes (TVM assumes 64-byte aligned data), so an
overrun shorter than that slack is not caught on buffers whose size is not a multiple of 64
bytes. It is a debugging and testing mode: every buffer takes at least two pages more.
"""

from __future__ import annotations

import ctypes
import mmap
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["guard_side", "guarded_empty", "guarded_tensor"]

_PAGE = mmap.PAGESIZE
_ALIGN = 64
_PROT_NONE = 0


def guard_side() -> str | None:
    """``"after"`` or ``"before"`` from ``LEPTON_TVM_GUARD``; None when unset or ``0``.

    Raises:
        ValueError: any other value.
    """
    side = os.environ.get("LEPTON_TVM_GUARD", "").strip().lower()
    if side in ("", "0"):
        return None
    if side not in ("after", "before"):
        raise ValueError(f"LEPTON_TVM_GUARD must be 'after' or 'before', got {side!r}")
    return side


def _mprotect() -> Any:
    libc = ctypes.CDLL(None, use_errno=True)
    fn = libc.mprotect
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


def guarded_array(shape: Sequence[int], dtype: str, side: str) -> np.ndarray:
    """A zero-filled C-contiguous array whose memory ends right before an inaccessible page
    (``side="after"``; the end rounded up to 64 bytes) or starts right after one
    (``"before"``). The mapping lives as long as the array."""
    dt = np.dtype(dtype)
    count = int(np.prod(shape, dtype=np.int64))
    span = max(_ALIGN, -(-count * dt.itemsize // _ALIGN) * _ALIGN)
    pages = -(-span // _PAGE)
    mm = mmap.mmap(-1, (pages + 2) * _PAGE)
    base = ctypes.addressof(ctypes.c_char.from_buffer(mm))
    protect = _mprotect()
    for page in (base, base + (pages + 1) * _PAGE):
        if protect(page, _PAGE, _PROT_NONE) != 0:
            raise OSError(ctypes.get_errno(), "mprotect failed")
    offset = (pages + 1) * _PAGE - span if side == "after" else _PAGE
    return np.frombuffer(mm, dtype=dt, count=count, offset=offset).reshape(tuple(shape))


def guarded_empty(shape: Sequence[int], dtype: str, side: str) -> Any:
    """A TVM CPU tensor over `guarded_array` memory (zero-copy)."""
    import tvm

    return tvm.runtime.from_dlpack(guarded_array(shape, dtype, side))


def guarded_tensor(value: np.ndarray, side: str) -> Any:
    """`guarded_empty` holding a copy of `value`."""
    arr = guarded_array(value.shape, str(value.dtype), side)
    arr[...] = value
    import tvm

    return tvm.runtime.from_dlpack(arr)
