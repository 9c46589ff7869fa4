"""x86 kernels for 2-D pooling (MaxPool, AveragePool) and global pooling, written directly as
TIR (like `x86_attention`).

Windowed pools run one task per (batch, channel) plane (parallel unless the tensor is small):

1. the plane is copied into a task-local buffer, padded on every side so each window of each
   output lies inside it (padding holds ``-inf`` for a maximum, the dtype's minimum for an
   8-bit maximum, 0 for a sum), and split into the ``stride_w`` column phases:
   ``xph[ph, r, q] = xpad[r, q * stride_w + ph]``. A strided window then reads *contiguous*
   columns for every tap, and the output loop has no branch. Each input row is read with
   contiguous masked vector loads of ``split_lanes * stride_w`` columns, the columns outside
   the row masked off (never read) and replaced by the padding, and each phase is taken from
   the loaded vector with a constant-index shuffle. Strided, clamped per-element loads are
   scalarized by the code generator instead: with them the float ResNet-50 MaxPool
   (1x64x112x112, 3x3 stride 2, pad 1) took 0.49 ms on one Zen 4 core, with masked loads
   0.16 ms (its uint8 form: 0.10 ms through a row buffer, 0.04 ms). Without 512-bit vectors
   a masked byte load is split into scalar loads, so there an 8-bit row is copied into a
   padded row buffer and the phases are shuffled out of that;
2. each output row is one vector loop over its columns, the kernel taps unrolled; an average
   is multiplied by ``1 / count``, the count per position computed from the window's overlap
   with the counted range (the input, or the input plus its explicit padding with
   ``count_include_pad``; the ceil-mode overhang never counts), as in the reference.

Global pools reduce each contiguous plane with vector partial sums (or maxima) and a tree
reduction across lanes.

A maximum also runs on uint8/int8 data (``dtype``): the maximum of quantized values is
exact, and the data is a quarter of float32's. It stores that dtype, or float32 through an
epilogue that dequantizes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from tvm import tirx
from tvm.script import tirx as T

from .x86_attention import (
    Epilogue,
    drop_params,
    epilogue_expr,
    epilogue_sizes,
    operand_flags,
    tree_reduce,
)

__all__ = ["PoolShape", "global_pool_func", "lowest", "pool_func"]

#: Output lanes of each phase-splitting shuffle of an 8-bit row (a 256-bit vector of bytes).
SPLIT_LANES = 32

#: Output lanes of each phase-splitting shuffle of a float32 row (one 512-bit vector).
FLOAT_SPLIT_LANES = 16


@dataclass(frozen=True)
class PoolShape:
    """Everything that determines a windowed pooling kernel (2-D, NCHW).

    Attributes:
        planes: batch times channels.
        h, w: input height and width.
        ho, wo: output height and width.
        kernel, strides, dilations: per axis (h, w).
        begin: padding before the input per axis (top, left).
        end: explicit padding after it (bottom, right), for ``count_include_pad``.
        is_max: MaxPool (else AveragePool).
        include_pad: AveragePool's ``count_include_pad``.
        lanes: fp32 vector lanes.
        parallel: run the planes in parallel (else on the calling thread).
    """

    planes: int
    h: int
    w: int
    ho: int
    wo: int
    kernel: tuple[int, int]
    strides: tuple[int, int]
    dilations: tuple[int, int]
    begin: tuple[int, int]
    end: tuple[int, int]
    is_max: bool
    include_pad: bool
    lanes: int
    parallel: bool = True


def _count(o: Any, s: int, d: int, k: int, pb: int, lo: int, hi: int) -> Any:
    """Taps ``t < k`` of the window at output ``o`` whose position ``o*s + t*d - pb`` lies
    in ``[lo, hi)`` (an int32 PrimExpr)."""
    base = o * s - pb
    first = tirx.max(tirx.floordiv(lo - base + (d - 1), d), 0)
    last = tirx.min(tirx.floordiv(hi - base + (d - 1), d), k)
    return tirx.max(last - first, 1)


def lowest(dtype: str) -> tirx.PrimExpr:
    """The identity of a maximum in `dtype`: ``-inf`` for float32, the minimum of an
    integer dtype (what an 8-bit MaxPool pads with, as ``-inf`` quantizes to it)."""
    if dtype == "float32":
        return tirx.const(-math.inf, "float32")
    info = np.iinfo(np.dtype(dtype))
    return tirx.const(int(info.min), dtype)


def split_lanes(dtype: str) -> int:
    """Output lanes of each shuffle that takes a stride phase out of a row of
    `dtype`: `FLOAT_SPLIT_LANES` for float32, `SPLIT_LANES` for 8-bit data."""
    return FLOAT_SPLIT_LANES if dtype == "float32" else SPLIT_LANES


def masked_loads(dtype: str, lanes: int) -> bool:
    """Whether a row is read with masked vector loads: always for float32, for 8-bit data
    only with 512-bit vectors (a masked byte load without AVX-512 is split into scalar
    loads, slower than a copy through a padded row buffer)."""
    return dtype == "float32" or lanes >= 16


def _check_eight_bit(dtype: str, is_max: bool, epi: Epilogue | None, out_dtype: str) -> None:
    """An 8-bit pool must be a maximum storing its dtype, or float32 through an epilogue.

    Raises:
        ValueError: it is not.
    """
    if dtype == "float32":
        return
    if not is_max or out_dtype != (dtype if epi is None else "float32"):
        raise ValueError(f"a {dtype} pool must be a maximum storing {dtype} (or float32 "
                         f"through an epilogue), not {out_dtype}")  # fmt: skip


def pool_func(
    a: PoolShape, epi: Epilogue | None = None, out_dtype: str = "float32", dtype: str = "float32"
) -> tirx.PrimFunc:
    """The pooling kernel ``main(x[, e0, e1], out)`` on flat buffers (see the module
    docstring); `epi` is applied to each output element as it is stored (an epilogue ending
    in QuantizeLinear stores `out_dtype` uint8/int8). `dtype` is the input's: a uint8/int8
    MaxPool stores it, or float32 through an epilogue that takes the 8-bit maximum."""
    _check_eight_bit(dtype, a.is_max, epi, out_dtype)
    KH, KW = a.kernel
    SH, SW = a.strides
    DH, DW = a.dilations
    PT, PL = a.begin
    H, W, HO, WO = a.h, a.w, a.ho, a.wo
    HP = (HO - 1) * SH + (KH - 1) * DH + 1
    WP = max((WO - 1) * SW + (KW - 1) * DW + 1, PL + W)
    HP = max(HP, PT + H)
    WQ = -(-WP // SW)
    pad = lowest(dtype) if a.is_max else tirx.const(0.0, "float32")
    x_n = a.planes * H * W
    o_n = a.planes * HO * WO
    e0_n, e1_n = epilogue_sizes(epi)
    lo_h, hi_h = (-PT, H + a.end[0]) if a.include_pad else (0, H)
    lo_w, hi_w = (-PL, W + a.end[1]) if a.include_pad else (0, W)
    taps = [(kh, kw) for kh in range(KH) for kw in range(KW)]
    loop = T.parallel if a.parallel else T.serial
    VL = min(split_lanes(dtype), WQ)  # lanes per phase vector
    NV = -(-WQ // VL)  # phase vectors per row; the last one overlaps the one before
    n = VL * SW  # input columns each load covers
    vec = f"{dtype}x{n}"
    masked = masked_loads(dtype, a.lanes)
    RW = WQ * SW + SW  # row buffer: a phase's last vector reads up to WQ * SW + SW - 2

    def first(qo: Any) -> Any:
        """The first phase column of the ``qo``-th phase vector of a row."""
        return T.min(qo * VL, WQ - VL)

    def phase_row(ph: Any, r: Any) -> Any:
        """Where row ``r`` of phase ``ph`` starts in the phase-split buffer."""
        return ph * (HP * WQ) + r * WQ

    def start(qo: Any) -> Any:
        """The input column of the first lane of the ``qo``-th load of a row."""
        return first(qo) * SW - PL

    def inside(c0: Any) -> Any:
        """Which of the input columns ``c0 .. c0 + n - 1`` lie inside a row (an n-lane mask)."""
        col = T.Ramp(c0, 1, n)
        return tirx.And(col >= T.Broadcast(0, n), col < T.Broadcast(W, n))

    def padded(cols: Any, c0: Any) -> Any:
        """The loaded columns ``c0 .. c0 + n - 1`` with those outside the row set to ``pad``."""
        return T.Select(inside(c0), cols[T.Ramp(0, 1, n)], T.Broadcast(pad, n))

    def window(xph: Any, oh: Any, ow: Any) -> Any:
        """Max or sum over the window at (oh, ow) (taps unrolled in the expression)."""
        vals = [
            xph[((kw * DW) % SW) * (HP * WQ) + (oh * SH + kh * DH) * WQ + ow + (kw * DW) // SW]
            for kh, kw in taps
        ]
        return tree_reduce(vals, len(vals), tirx.max if a.is_max else tirx.Add)

    def result(xph: Any, oh: Any, ow: Any) -> Any:
        v = window(xph, oh, ow)
        if a.is_max:
            return v
        cnt = _count(oh, SH, DH, KH, PT, lo_h, hi_h) * _count(ow, SW, DW, KW, PL, lo_w, hi_w)
        return v / tirx.Cast("float32", cnt)

    @T.prim_func
    def main_fn(
        x: T.Buffer((x_n,), dtype),
        e0: T.Buffer((e0_n,), "float32"),
        e1: T.Buffer((e1_n,), "float32"),
        out: T.Buffer((o_n,), out_dtype),
    ) -> None:
        T.func_attr({"global_symbol": "main", "tirx.noalias": True})
        for p in loop(a.planes):
            xph = T.decl_buffer((SW * HP * WQ,), dtype, scope="local")
            for r, ph in T.grid(PT, SW):
                for q in T.vectorized(WQ):
                    xph[phase_row(ph, r) + q] = pad
            for r, ph in T.grid(HP - PT - H, SW):
                for q in T.vectorized(WQ):
                    xph[phase_row(ph, PT + H + r) + q] = pad
            if masked:
                cols = T.decl_buffer((n,), dtype, scope="local")
                for r in range(H):
                    for qo in T.unroll(NV):
                        # Loaded apart from its use: under ``Select(inside, ...)`` the
                        # simplifier would take the load's mask for all true and drop it.
                        cols[T.Ramp(0, 1, n)] = T.masked_load(
                            vec, x, T.Ramp(p * (H * W) + r * W + start(qo), 1, n), inside(start(qo))
                        )
                        for ph in T.unroll(SW):
                            xph[T.Ramp(phase_row(ph, PT + r) + first(qo), 1, VL)] = T.Shuffle(
                                [padded(cols, start(qo))], [SW * i + ph for i in range(VL)]
                            )
            else:
                row = T.decl_buffer((RW,), dtype, scope="local")
                for c in T.vectorized(RW):
                    row[c] = pad
                for r in range(H):
                    for c in T.vectorized(W):
                        row[PL + c] = x[p * (H * W) + r * W + c]
                    for ph, qo in T.grid(SW, NV):
                        xph[T.Ramp(phase_row(ph, PT + r) + first(qo), 1, VL)] = T.Shuffle(
                            [row[T.Ramp(first(qo) * SW + ph, 1, n)]], [SW * i for i in range(VL)]
                        )
            for oh in range(HO):
                for ow in T.vectorized(WO):
                    out[p * (HO * WO) + oh * WO + ow] = epilogue_expr(
                        epi, result(xph, oh, ow), p * (HO * WO) + oh * WO + ow, [e0, e1]
                    )

    return drop_params(main_fn, [True, *operand_flags(epi), True])


def global_pool_func(
    planes: int,
    size: int,
    is_max: bool,
    lanes: int,
    tasks: int,
    epi: Epilogue | None = None,
    dtype: str = "float32",
) -> tirx.PrimFunc:
    """Mean (or maximum) of each contiguous plane of ``size`` elements:
    ``main(x[, e0, e1], out)``, the planes split into ``tasks`` parallel tasks (1: no
    thread-pool launch at all); `epi` is applied to each result as it is stored. `dtype` is
    the input's: a uint8/int8 maximum stores it, or float32 through an epilogue that takes
    the 8-bit maximum."""
    out_dtype = dtype if epi is None else "float32"
    _check_eight_bit(dtype, is_max, epi, out_dtype)
    L = lanes
    NV, TAIL = size // L, size % L
    PPT = -(-planes // max(1, min(tasks, planes)))  # planes per task
    NT = -(-planes // PPT)
    init = lowest(dtype) if is_max else tirx.const(0.0, "float32")
    op = tirx.max if is_max else tirx.Add
    inv = tirx.const(1.0 / size, "float32")
    e0_n, e1_n = epilogue_sizes(epi)

    def finish(v: Any) -> Any:
        return v if is_max else v * inv

    @T.prim_func
    def main_fn(
        x: T.Buffer((planes * size,), dtype),
        e0: T.Buffer((e0_n,), "float32"),
        e1: T.Buffer((e1_n,), "float32"),
        out: T.Buffer((planes,), out_dtype),
    ) -> None:
        T.func_attr({"global_symbol": "main", "tirx.noalias": True})
        for t in T.parallel(NT):
            red = T.decl_buffer((L,), dtype, scope="local")
            acc = T.decl_buffer((1,), dtype, scope="local")
            for pp in range(PPT):
                if t * PPT + pp < planes:
                    for ll in T.vectorized(L):
                        red[ll] = init
                    for jo in range(NV):
                        for ll in T.vectorized(L):
                            red[ll] = op(red[ll], x[(t * PPT + pp) * size + jo * L + ll])
                    acc[0] = tree_reduce(red, L, op)
                    for ll in range(TAIL):
                        acc[0] = op(acc[0], x[(t * PPT + pp) * size + NV * L + ll])
                    out[t * PPT + pp] = epilogue_expr(epi, finish(acc[0]), t * PPT + pp, [e0, e1])

    return drop_params(main_fn, [True, *operand_flags(epi), True])
