"""x86 kernel for a transpose that keeps the trailing axes in place, written as TIR (like
`x86_attention`): one loop over output runs (parallel for large tensors), each run of ``R``
contiguous elements copied by a vector loop (chunks of at most 64 lanes, the last chunk
overlapping the previous one so there is no scalar tail), its source offset computed from the
run's output index."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from tvm import tirx
from tvm.script import tirx as T

__all__ = ["TransposeShape", "transpose_func"]


@dataclass(frozen=True)
class TransposeShape:
    """Everything that determines a transpose kernel.

    Attributes:
        out_lead: the output's leading dims (those the permutation moves).
        src_strides: the input element stride of each of those dims.
        run: elements per contiguous run (the product of the trailing dims kept in place).
        parallel: split the runs over the thread pool (else the calling thread only).
    """

    out_lead: tuple[int, ...]
    src_strides: tuple[int, ...]
    run: int
    parallel: bool


def _src_offset(m: Any, a: TransposeShape) -> Any:
    """Input offset of output run ``m`` (flat over ``out_lead``)."""
    off: Any = tirx.const(0, "int32")
    inner = 1
    for k in reversed(range(len(a.out_lead))):
        idx = m // inner if k == 0 else (m // inner) % a.out_lead[k]
        off = off + idx * a.src_strides[k]
        inner *= a.out_lead[k]
    return off


def transpose_func(a: TransposeShape) -> tirx.PrimFunc:
    """The kernel ``main(x, out)`` on flat buffers."""
    runs = math.prod(a.out_lead)
    R = a.run
    n = runs * R
    CW = min(R, 64)
    NC = -(-R // CW)
    loop = T.parallel if a.parallel else T.serial

    @T.prim_func
    def main_fn(x: T.Buffer((n,), "float32"), out: T.Buffer((n,), "float32")) -> None:
        T.func_attr({"global_symbol": "main", "tirx.noalias": True})
        for m in loop(runs):
            for c in range(NC):
                for ll in T.vectorized(CW):
                    out[m * R + T.min(c * CW, R - CW) + ll] = x[
                        _src_offset(m, a) + T.min(c * CW, R - CW) + ll
                    ]

    return main_fn
