"""The float epilogue of the int8 kernels (`x86_qconv`, `x86_qdense`): what the integer
op's float32 value goes through on its way to memory (`QEpilogue`, built from the group's
element-wise ops by `kernels.qconv.lower_epilogue`), how its side tensors are indexed
(`operand_offset`), the store of a row in whole vectors plus a tail (`store_row`), and the
two LLVM intrinsics the stores use (`fma`, `lrint`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tvm import tirx
from tvm.script.ir_builder import tirx as T

__all__ = [
    "LANES",
    "Loader",
    "Operand",
    "QEpilogue",
    "fma",
    "lrint",
    "operand_offset",
    "store_row",
]

#: int32 lanes of a zmm accumulator (16 output positions).
LANES = 16

Expr = Any  # tirx.PrimExpr


@dataclass(frozen=True)
class Operand:
    """A tensor the epilogue reads: its shape right-aligned to the output's logical shape
    (every dim 1 or the output's) and its dtype."""

    shape: tuple[int, ...]
    dtype: str

    @property
    def size(self) -> int:
        """Elements of the flat buffer the kernel declares."""
        return math.prod(self.shape)


def operand_offset(shape: Sequence[int], out_shape: Sequence[int], idx: Sequence[Expr]) -> Expr:
    """Flat offset, in a row-major tensor of `shape` broadcast to `out_shape` (right-aligned,
    size-1 dims read at 0), of the element at the logical output index `idx`."""
    full = (1,) * (len(out_shape) - len(shape)) + tuple(shape)
    terms: list[Expr] = []
    stride = 1
    for d in range(len(out_shape) - 1, -1, -1):
        if full[d] != 1:
            terms.append(idx[d] * stride if stride != 1 else idx[d])
            stride *= full[d]
    if not terms:
        return tirx.const(0, "int32")
    off = terms[0]
    for t in terms[1:]:
        off = off + t
    return off


def fma(a: Expr, b: Expr, c: Expr) -> Expr:
    """``a * b + c`` (float32) rounded once: ``vfmadd`` (LLVM does not contract a separate
    multiply and add on its own)."""
    return tirx.call_llvm_pure_intrin("float32", "llvm.fma", a, b, c)


def lrint(x: Expr) -> Expr:
    """float32 -> int32, rounding half to even (``vcvtps2dq``, one instruction where
    ``nearbyint`` then a cast takes two)."""
    return tirx.call_llvm_pure_intrin("int32", "llvm.lrint", x)


Loader = Callable[[tuple[Expr, ...]], Expr]


@dataclass(frozen=True)
class QEpilogue:
    """The float epilogue of an integer group.

    Attributes:
        out_shape: the logical output shape that indices refer to (``[N, M, Ho, Wo]`` for a
            conv, ``[rows, N]`` for a matrix product).
        operands: the side tensors read, in kernel-parameter order.
        output_dtypes: one dtype per group output (float32, uint8 or int8).
        fn: ``(y, idx, loads) -> [expr per output]``: ``y`` is the integer op's float32
            value at ``idx``; ``loads[i](idx)`` reads operand ``i``.
        key: what determines the generated code (part of the kernel cache key).
        affine: ``(a, b)``: ``fn`` receives ``y * a + b`` instead of ``y``, folded into the
            per-channel scale and shift of the conv's store (`qconv_func` only: a
            requantization by ``1 / scale`` and ``+ zp``, see
            `kernels.qconv.folded_requantize`).
    """

    out_shape: tuple[int, ...]
    operands: tuple[Operand, ...]
    output_dtypes: tuple[str, ...]
    fn: Callable[[Expr, tuple[Expr, ...], list[Loader]], list[Expr]]
    key: tuple[Any, ...]
    affine: tuple[float, float] | None = None

    def exprs(self, y: Expr, idx: tuple[Expr, ...], bufs: Sequence[Any]) -> list[Expr]:
        """Every output's expression at `idx`, operand ``i`` read from ``bufs[i]``."""
        loads: list[Loader] = [
            (lambda ix, b=b, op=op: b[operand_offset(op.shape, self.out_shape, ix)])
            for b, op in zip(bufs, self.operands, strict=True)
        ]
        return self.fn(y, idx, loads)


def store_row(
    width: int,
    value: Callable[[Expr], Expr],
    store: Callable[[Expr, Expr], None],
) -> None:
    """Emit ``store(col, value(col))`` for ``col`` in ``[0, width)``: whole vectors of
    `LANES` (unrolled when few), then one vectorized tail."""
    full = width // LANES
    if full:
        loop = T.unroll if full <= 8 else T.serial
        with loop(0, full) as j, T.vectorized(0, LANES) as lane:
            col = j * LANES + lane
            store(col, value(col))
    tail = width % LANES
    if tail:
        with T.vectorized(0, tail) as lane:
            col = full * LANES + lane
            store(col, value(col))
