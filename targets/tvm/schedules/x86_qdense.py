"""x86 int8 matrix product (``lepton.QMatMul``) with its float epilogue, written directly as
TIR.

``a [rows, K]`` (uint8, or int8 flipped to uint8 by xor-ing 0x80 into each byte) times
constant int8 ``b [K, N]``: vectors run over 16 output columns. B is packed at compile time
(`pack_weights`) as ``[N / nb, K / 4, nb]`` int32 words, each holding four consecutive k of
one column (``nb = 16 nvec``; N and K zero-padded), so a reduction step of a register tile
(``mb`` rows x ``nvec`` vectors, all in zmm registers) broadcasts ``mb`` words of A (four
bytes of a row each, read in place: A needs no repacking), loads ``nvec`` vectors of B and
issues ``mb x nvec`` ``vpdpbusd``. K's last partial group of four is assembled byte by byte
(the missing bytes meet zero weights).

Tasks (parallel) are (column block, row block), column blocks outside, so a thread's
consecutive tiles share one weight panel. The store converts ``acc + bias - zp * sum(b)``
to float32, multiplies by ``float32(a_scale) * float32(b_scale[n])`` and runs the epilogue
(`x86_qconv.QEpilogue`) on whole vectors; rows past the last are computed from a clamped row
and not stored; the last column block stores only the columns that exist. Without VNNI,
`vnni.dot4_generic` replaces the instruction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from tvm import tirx
from tvm.script.ir_builder import IRBuilder
from tvm.script.ir_builder import tirx as T

from ..vnni import dot4_generic, vpdpbusd
from .x86_qconv import LANES, MAX_ACC, VECTOR_REGISTERS, QEpilogue, store_row

__all__ = ["QDenseTile", "QDenseWorkload", "choose_qdense_tile", "pack_weights", "qdense_func"]

Expr = Any


@dataclass(frozen=True)
class QDenseWorkload:
    """Everything that determines the integer part of a QMatMul kernel.

    Attributes:
        rows: A's rows (its leading dims flattened).
        k, n: reduction length and output columns.
        signed: A is int8.
        has_bias: an int32 bias input is present.
        per_channel: b's scale is ``[N]`` (else a scalar).
    """

    rows: int
    k: int
    n: int
    signed: bool
    has_bias: bool
    per_channel: bool

    @property
    def k4(self) -> int:
        """Groups of four k (the last one zero-padded)."""
        return -(-self.k // 4)

    @property
    def macs(self) -> int:
        """Multiply-adds of the product."""
        return self.rows * self.k * self.n


@dataclass(frozen=True)
class QDenseTile:
    """The register tile: ``mb`` rows x ``nvec`` vectors of 16 columns."""

    mb: int
    nvec: int

    @property
    def nb(self) -> int:
        """Columns per tile (and per packed weight panel)."""
        return LANES * self.nvec


def choose_qdense_tile(wl: QDenseWorkload, threads: int = 2) -> QDenseTile:
    """Pick ``(mb, nvec)``: least work on padded rows and columns, at least 12
    accumulators, at least 3 rows (each 64-byte weight load feeds ``mb`` instructions; Zen 4
    loads one zmm per cycle), enough tasks for the threads, then more accumulators. Tiles that
    would not fit `VECTOR_REGISTERS` are never considered."""
    best: tuple[float, QDenseTile] | None = None
    for nvec in (1, 2, 3, 4, 5, 6, 7):
        nb = LANES * nvec
        npad = -(-wl.n // nb) * nb
        if nvec > 1 and npad - wl.n >= LANES:
            break  # a whole padded vector: fewer vectors do the same with less waste
        for mb in range(1, min(wl.rows, 16) + 1):
            acc = mb * nvec
            if acc > MAX_ACC or acc + min(mb, nvec) + 1 > VECTOR_REGISTERS:
                break
            mpad = -(-wl.rows // mb) * mb
            useful = (wl.rows * wl.n) / (mpad * npad)
            tasks = (npad // nb) * (mpad // mb)
            score = (
                useful
                * min(1.0, acc / 12)
                * min(1.0, mb / 3, wl.rows / 3)
                * min(1.0, tasks / (4 * threads))
                * (1.0 + 0.004 * acc)
            )
            if best is None or score > best[0] + 1e-9:
                best = (score, QDenseTile(mb, nvec))
    assert best is not None
    return best[1]


def pack_weights(b: np.ndarray, wl: QDenseWorkload, nb: int) -> np.ndarray:
    """int8 ``[K, N]`` as ``[ceil(N / nb), K4, nb]`` int32 words (four consecutive k of one
    column, little-endian bytes), zero-padded in K and N."""
    npad = -(-wl.n // nb) * nb
    full = np.zeros((wl.k4 * 4, npad), np.int8)
    full[: wl.k, : wl.n] = np.asarray(b, np.int8).reshape(wl.k, wl.n)
    # [k4, 4, nblk, nb] -> [nblk, k4, nb, 4]
    t = full.reshape(wl.k4, 4, npad // nb, nb).transpose(2, 0, 3, 1)
    return np.ascontiguousarray(t).view(np.int32).reshape(npad // nb, wl.k4, nb)


def weight_sums(b: np.ndarray, wl: QDenseWorkload, nb: int) -> np.ndarray:
    """Per-column sums of ``b`` (int32, zero-padded to whole panels)."""
    npad = -(-wl.n // nb) * nb
    out = np.zeros(npad, np.int32)
    out[: wl.n] = np.asarray(b).reshape(wl.k, wl.n).astype(np.int64).sum(axis=0)
    return out


def _unravel(row: Expr, lead: tuple[int, ...]) -> list[Expr]:
    """The flat row index as an index into the output's leading dims."""
    if not lead:
        return []
    idx: list[Expr] = []
    for d in reversed(lead[1:]):
        idx.append(row % d)
        row = row // d
    idx.append(row)
    return idx[::-1]


def qdense_func(
    wl: QDenseWorkload, tile: QDenseTile, epi: QEpilogue, vnni: bool, a_dtype: str
) -> tirx.PrimFunc:
    """The kernel ``main(a, a_scale, a_zp, bp, bsum, b_scale[, bias], operands...,
    outputs...)`` on flat buffers (see the module docstring)."""
    M, K, N = wl.rows, wl.k, wl.n
    MB, NV, nb = tile.mb, tile.nvec, tile.nb
    k4_full, k_tail = K // 4, K % 4
    nblk = -(-N // nb)
    mblk = -(-M // MB)
    lead = epi.out_shape[:-1]
    dot = vpdpbusd if vnni else dot4_generic
    i32 = "int32"

    with IRBuilder() as ib, T.prim_func():
        T.func_name("main")
        T.func_attr({"global_symbol": "main", "tirx.noalias": True})
        a = T.arg("a", T.buffer((M * K,), a_dtype))
        a_s = T.arg("a_scale", T.buffer((1,), "float32"))
        a_z = T.arg("a_zp", T.buffer((1,), a_dtype))
        bp = T.arg("bp", T.buffer((nblk * wl.k4 * nb,), i32))
        bsum = T.arg("bsum", T.buffer((nblk * nb,), i32))
        b_s = T.arg("b_scale", T.buffer((N if wl.per_channel else 1,), "float32"))
        bias = T.arg("bias", T.buffer((N,), i32)) if wl.has_bias else None
        opers = [
            T.arg(f"e{i}", T.buffer((op.size,), op.dtype)) for i, op in enumerate(epi.operands)
        ]
        outs = [T.arg(f"out{i}", T.buffer((M * N,), dt)) for i, dt in enumerate(epi.output_dtypes)]
        zp = tirx.Cast(i32, a_z[0]) + (128 if wl.signed else 0)
        flip = tirx.const(-0x7F7F7F80, i32)  # 0x80808080: int8 -> uint8 in every byte

        def word(row: Expr, g: Expr) -> Expr:
            w = tirx.reinterpret(i32, a[tirx.Ramp(row * K + g * 4, 1, 4)])
            return tirx.bitwise_xor(w, flip) if wl.signed else w

        def tail_word(row: Expr) -> Expr:
            acc: Expr = None
            for t in range(k_tail):
                b = tirx.Cast(i32, a[row * K + k4_full * 4 + t])
                b = tirx.bitwise_and(b + 128, tirx.const(255, i32)) if wl.signed else b
                b = b if t == 0 else tirx.shift_left(b, tirx.const(8 * t, i32))
                acc = b if acc is None else tirx.bitwise_or(acc, b)
            return acc

        with T.parallel(0, nblk * mblk) as t:
            jb = t // mblk
            ib_ = t % mblk
            acc = T.decl_buffer((MB * NV * LANES,), i32, scope="local")
            rows = [tirx.min(ib_ * MB + r, M - 1) for r in range(MB)]
            for k in range(MB * NV):
                T.buffer_store(acc, tirx.Broadcast(tirx.const(0, i32), LANES),
                               [tirx.Ramp(k * LANES, 1, LANES)])  # fmt: skip

            def step(g: Expr, words: list[Expr]) -> None:
                bvec = [bp[tirx.Ramp((jb * wl.k4 + g) * nb + vi * LANES, 1, LANES)]
                        for vi in range(NV)]  # fmt: skip
                avec = [tirx.Broadcast(w, LANES) for w in words]
                order = [(r, vi) for r in range(MB) for vi in range(NV)]
                if MB < NV:  # keep the fewer operand vectors live
                    order = [(r, vi) for vi in range(NV) for r in range(MB)]
                for r, vi in order:
                    idx = tirx.Ramp((r * NV + vi) * LANES, 1, LANES)
                    T.buffer_store(acc, dot(acc[idx], avec[r], bvec[vi]), [idx])

            if k4_full:
                with T.serial(0, k4_full) as g:
                    step(g, [word(rw, g) for rw in rows])
            if k_tail:
                step(tirx.const(k4_full, i32), [tail_word(rw) for rw in rows])

            def emit_store(width: int) -> None:
                for r in range(MB):
                    row = ib_ * MB + r
                    with T.If(row < M), T.Then():
                        idx0 = _unravel(row, lead)

                        def value(col: Expr, r: int = r) -> Expr:
                            cc = jb * nb + col
                            comp = zp * bsum[cc]
                            comp = bias[cc] - comp if bias is not None else -comp
                            sc = a_s[0] * b_s[cc if wl.per_channel else 0]
                            return tirx.Cast("float32", acc[r * NV * LANES + col] + comp) * sc

                        def store(col: Expr, y: Expr, row: Expr = row, idx0: list = idx0) -> None:
                            cc = jb * nb + col
                            for o, e in zip(outs, epi.exprs(y, (*idx0, cc), opers), strict=True):
                                T.buffer_store(o, e, [row * N + cc])

                        store_row(width, value, store)

            last = N - (nblk - 1) * nb
            if last == nb:
                emit_store(nb)
            else:
                with T.If(jb < nblk - 1):
                    with T.Then():
                        emit_store(nb)
                    with T.Else():
                        emit_store(last)
    func = ib.get()
    return func.with_attr("global_symbol", "main")
