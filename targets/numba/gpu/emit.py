"""Pieces of generated CUDA kernel source: the module frame and the block-wide reduction.

Every CUDA kernel module has the same frame as the CPU ones (`..emit`): a docstring saying
which group it computes and how it is launched, the imports, the named float32 constants,
and one ``@cuda.jit(cache=True)`` kernel taking the group's inputs, then its outputs, then
scratch buffers. The text is the cache key, so it depends only on what the code computes.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..emit import Constants, Lines

__all__ = ["Constants", "Lines", "block_reduce", "cuda_module_text", "pow2_block"]

_DECORATOR = "@cuda.jit(cache=True)"


def cuda_module_text(
    doc: Sequence[str], name: str, params: Sequence[str], body: Lines, consts: Constants
) -> str:
    """The full module source of one CUDA kernel.

    Args:
        doc: docstring lines (what the kernel computes, shapes, launch configuration).
        name: the kernel's name.
        params: parameter names (inputs, outputs, scratch).
        body: the kernel body (indented one level).
        consts: the constants the body names.
    """
    out = ['"""' + doc[0], *doc[1:], '"""', "", "import math  # noqa: F401", ""]
    out += ["import numpy as np  # noqa: F401", "from numba import cuda, float32  # noqa: F401", ""]
    out += consts.lines()
    out += ["", "", _DECORATOR, f"def {name}({', '.join(params)}):", *body.text]
    return "\n".join(out) + "\n"


def pow2_block(n: int, lo: int = 32, hi: int = 256) -> int:
    """The power-of-two thread count for a block that reduces `n` values: the smallest
    power of two >= n, clamped to [lo, hi] (a tree reduction halves it each level)."""
    b = lo
    while b < n and b < hi:
        b *= 2
    return b


def block_reduce(code: Lines, shared: str, value: str, threads: int, op: str, result: str) -> None:
    """Reduce `value` (one per thread) over the block into `result`, read by every thread.

    Writes each thread's value to the shared array `shared` (``threads`` floats), then
    log2(threads) halving steps, each followed by a barrier; `op` is ``"+"`` or ``"max"``.
    A last barrier lets the caller reuse `shared` afterwards. Must be reached by every
    thread of the block (uniform control flow).
    """
    code(f"{shared}[tid] = {value}", "cuda.syncthreads()")
    w = threads // 2
    while w >= 1:
        combine = (
            f"{shared}[tid] + {shared}[tid + {w}]"
            if op == "+"
            else f"max({shared}[tid], {shared}[tid + {w}])"
        )
        code(f"if tid < {w}:").indent()
        code(f"{shared}[tid] = {combine}").dedent()
        code("cuda.syncthreads()")
        w //= 2
    code(f"{result} = {shared}[0]", "cuda.syncthreads()")
