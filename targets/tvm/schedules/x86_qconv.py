"""x86 int8 convolution (``lepton.QConv``) with its float epilogue, written directly as TIR.

Vectors run over output *positions*: an int32x16 accumulator holds 16 consecutive output
positions of one output channel, and one ``vpdpbusd`` adds, to each of them, the dot product
of four input channels (unsigned bytes, one int32 per position) with the four matching
weights of the channel (signed bytes, broadcast). The output is NCHW, so a vector of
positions is stored as it is, with the whole epilogue applied on the way.

Two parallel stages (after a serial one: per output channel, the float ``scale`` and
``shift`` of ``y = acc * scale + shift``, read by every tile's store):

1. *repack*: the input (uint8, or int8 shifted by 128 so it reads as uint8) becomes
   ``xr[n, c4, phase, r * Wq + q]`` — one int32 holding input channels ``4 c4 .. 4 c4 + 3``
   of the padded input at row ``r * sh + ph``, column ``q * sw + pw`` (the stride phases of
   the fp32 conv family, `te_ops.conv2d_nchw`). Padding and channels past C read the
   activations' zero point; the packed weights of those channels are 0, so the zero-point
   compensation stays exact. Every kernel tap then reads a contiguous run of ``xr``.
2. *conv*: a task is (image, block of ``R`` output channels, ``TR`` output rows); its output
   positions are flattened as ``p = row * Wq + column`` (the columns ``>= Wo`` are
   computed and dropped) and rounded up to ``V`` vectors: ``R x V`` accumulators stay in zmm
   registers through the reduction over ``(c4, kh, kw)``; each step loads ``V`` activation
   vectors, broadcasts ``R`` weight words and issues ``R x V`` ``vpdpbusd``. The store
   computes ``float32(acc) * scale + shift`` in one multiply-add, where ``scale =
   float32(x_scale) * float32(w_scale[m])`` (`lepton_compiler.ops.quant.combined_scale`)
   and ``shift = float32(bias - zp * sum(w)) * scale``, and runs the epilogue
   (`x86_qepilogue.QEpilogue`) per output row, in whole vectors plus a tail. Convs without dropped
   columns (``Wq == Wo``) use *flat* tiles instead: ``16 V`` consecutive output positions
   whatever rows they span, stored straight from the accumulators.

Direct convs (1x1, stride 1, unpadded; half of ResNet-50's work) with flat tiles *fuse* the
repack: a task is (image, position tile[, part of the channel blocks]); it repacks its
positions of every channel group into a local buffer, then runs its channel blocks on it, so
the repacked activations never travel through memory (measured 1.1-1.6x faster on
ResNet-50's 1x1 layers of 56x56-14x14). The channel blocks go in parts (`fused_splits`)
where the position tiles alone would leave a thread idle at the end (13 tiles on 2 threads).

Flat tiles of ``16 x 1`` on outputs whose position count is not a multiple of 16 (7x7 and
14x14 maps) run the last, partial position tile as a *channel-vector tail*
(`QConvTile.tail`): one accumulator per leftover position holds the block's 16 channels,
each step multiplies the block's weight vector of a tap (``R = 16`` packed words are one
vector) by the position's broadcast activation word, so no lane is wasted on positions past
the map (49 positions take 3 tiles and a tail instead of 4 tiles).

Weights are packed at compile time (`pack_weights`) as ``[M / R, C4 * KH * KW, R]`` int32
words (four int8 each), and their per-channel sums (`weight_sums`) are a second parameter
made from the same constant. On a target without VNNI, `vnni.dot4_generic` replaces the
instruction (plain int32 arithmetic: correct, several times slower).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from tvm import tirx
from tvm.script.ir_builder import IRBuilder
from tvm.script.ir_builder import tirx as T

from ..te_ops import WindowGeometry
from ..vnni import dot4_generic, vpdpbusd
from .x86_qepilogue import LANES, Operand, QEpilogue, fma, lrint, operand_offset, store_row

__all__ = [
    "LANES",
    "Operand",
    "QConvTile",
    "QConvWorkload",
    "QEpilogue",
    "choose_qconv_tile",
    "fma",
    "fused_splits",
    "lrint",
    "operand_offset",
    "pack_weights",
    "qconv_func",
    "store_row",
    "weight_sums",
]

#: zmm registers a tile may use: its accumulators, the operand vectors kept live across them
#: (``min(r, v)``) and one more must fit in 30 of the 32, or LLVM spills accumulators in the
#: reduction loop (measured: 3x3/2 512->512 on 14x14 with 14x2 accumulators, 31 registers,
#: ran 1.4x slower than 8x2 or 6x4).
VECTOR_REGISTERS = 30
#: Accumulators per register tile at most.
MAX_ACC = 28
#: Accumulators per flat tile of a direct (1x1, stride 1) conv at most: measured on 1x1
#: convs of 64-256 channels on 56x56, 13x2 accumulators ran 1.2-1.5x the time of 12x2,
#: 8x3, 6x4 or 16x1 (while on 3x3 convs 13x2 row tiles are as fast as any).
MAX_ACC_FUSED = 24

Expr = Any  # tirx.PrimExpr


# -- the workload and its tile ------------------------------------------------------------------


@dataclass(frozen=True)
class QConvWorkload(WindowGeometry):
    """Everything that determines the integer part of a QConv kernel.

    Attributes:
        n, c, h, w: input shape (NCHW).
        m, kh, kw: output channels and kernel size.
        strides, pads (top, left, bottom, right), dilations: Conv's attributes.
        signed: the activations are int8 (shifted by 128 into uint8 by the repack).
        has_bias: an int32 bias input is present.
        per_channel: the weight scale is ``[M]`` (else a scalar).
    """

    n: int
    c: int
    h: int
    w: int
    m: int
    kh: int
    kw: int
    strides: tuple[int, int]
    pads: tuple[int, int, int, int]
    dilations: tuple[int, int]
    signed: bool
    has_bias: bool
    per_channel: bool

    @property
    def c4(self) -> int:
        """Groups of four input channels (the last one zero-padded)."""
        return -(-self.c // 4)

    @property
    def phases(self) -> list[tuple[int, int]]:
        """The stride phases some tap reads, in slot order (one for a 1x1 strided conv)."""
        (sh, sw), (dh, dw) = self.strides, self.dilations
        need = {((i * dh) % sh, (j * dw) % sw) for i in range(self.kh) for j in range(self.kw)}
        return sorted(need)

    def tap(self, i: int, j: int) -> tuple[int, int]:
        """(phase slot, offset in the flattened phase) that kernel tap ``(i, j)`` reads for
        output position 0."""
        (sh, sw), (dh, dw) = self.strides, self.dilations
        slot = self.phases.index(((i * dh) % sh, (j * dw) % sw))
        return slot, (i * dh) // sh * self.phase_hw[1] + (j * dw) // sw

    @property
    def direct(self) -> bool:
        """A 1x1, stride-1, unpadded conv: output positions are input positions."""
        return (self.kh, self.kw, self.strides, self.pads) == (1, 1, (1, 1), (0, 0, 0, 0))

    @property
    def macs(self) -> int:
        """Multiply-adds of the convolution."""
        ho, wo = self.out_hw
        return self.n * self.m * ho * wo * self.c * self.kh * self.kw


@dataclass(frozen=True)
class QConvTile:
    """The register tile: ``r`` output channels x ``v`` vectors of 16 flattened positions,
    covering ``tr`` output rows (``tr * Wq <= 16 v``); ``tr = 0`` (*flat*, only for convs
    without dropped columns, ``Wq == Wo``) covers ``16 v`` consecutive output positions
    whatever rows they lie in, so no row pads a tile. ``chunks > 1`` (with ``tr = 1``)
    splits each output row into that many tiles of ``16 v`` columns (rows longer than the
    register tile: more channels per tile). ``fused`` (flat tiles of direct convs: 1x1,
    stride 1, unpadded) repacks each tile's activations inside its task instead of in a
    separate stage (see `qconv_func`); ``splits`` (fused tiles) divides each task's
    channel blocks into that many tasks. ``tail`` (flat ``16 x 1`` tiles) computes the
    last, partial position tile with vectors over channels instead of positions. ``cvec``
    (``tr = 1``, ``r`` a multiple of 16, ``16 v`` at least a chunk): a task is one chunk
    of an output row (``chunks`` of about equal length) of ``r`` channels, vectors over
    channels (one accumulator per position and 16 channels)."""

    r: int
    v: int
    tr: int
    fused: bool = False
    chunks: int = 1
    splits: int = 1
    tail: bool = False
    cvec: bool = False

    def tiles(self, wl: QConvWorkload) -> int:
        """Position tiles per image and channel block."""
        ho, wo = wl.out_hw
        if self.tr == 0:
            return -(-ho * wo // (LANES * self.v))
        return -(-ho // self.tr) * self.chunks

    def origin(self, wl: QConvWorkload, rb: Expr) -> Expr:
        """The flattened position (``row * Wq + column``) where tile `rb` starts."""
        wq = wl.phase_hw[1]
        if self.tr == 0:
            return rb * (LANES * self.v)
        if self.chunks > 1:
            return rb // self.chunks * wq + rb % self.chunks * (LANES * self.v)
        return rb * (self.tr * wq)


def choose_qconv_tile(wl: QConvWorkload, threads: int = 2) -> QConvTile:
    """Pick ``(r, v, tr)`` for the workload.

    Scored on: work wasted on dropped columns, rows past the output and channels past M;
    at least 12 accumulators (``vpdpbusd``'s latency times its throughput); more channels
    (each activation vector, a 64-byte load, feeds ``r`` instructions: Zen 4 loads one zmm
    per cycle, as many as it issues ``vpdpbusd``); flat tiles over row tiles (no staging
    copy, whole-vector stores); enough tasks for the threads; then more accumulators. Tiles
    whose accumulators plus live operands exceed `VECTOR_REGISTERS` are never considered
    (measured: they spill and run 2-4x slower), nor flat tiles of direct convs with more
    than `MAX_ACC_FUSED` accumulators. A flat ``16 x 1`` tile on a map whose position count
    is not a multiple of 16 gets a channel-vector tail (`QConvTile.tail`), counted as half
    a tile (its few accumulators make it latency-bound): measured on 1x1 512->2048 and
    2048->512 on 7x7, 16 x 1 with the tail 0.88x the time of 12 x 2 (49 positions in 64
    lanes).

    Measured (2 threads, Zen 4 under other load, median of per-round time ratios): 1x1
    128->512 on 28x28, flat 12x2 or 8x3 0.55x the time of rows 3x7; 1x1 512->2048 on 7x7,
    flat 16x1 or 12x2 0.83x rows 14x2; 3x3 64->64 on 56x56, rows 4x4, 6x4 and 3x8 equal;
    3x3 256->256 on 14x14, rows 8x2, 13x2 and 16x1 equal.
    """
    ho, wo = wl.out_hw
    wq = wl.phase_hw[1]
    shapes: list[tuple[int, int]] = []  # (tr, v)
    for tr in range(1, ho + 1):
        v = -(-tr * wq // LANES)
        if v > MAX_ACC:
            break
        shapes.append((tr, v))
    if wq == wo:
        shapes += [(0, v) for v in range(1, MAX_ACC + 1)]
    # rows of more than two vectors may also be split into chunks of v >= 2 vectors (-v
    # below; measured on the 7x7/2 stem: chunks of 2 vectors x 8 channels 0.9x the time of
    # whole rows of 8 vectors x 3 channels, chunks of 1 vector x 16 channels 1.35x)
    shapes += [(1, -v) for v in range(2, -(-wo // LANES))]
    # row tiles go through a staging copy and store each row as whole vectors plus a tail
    store_eff = 1.0 - 0.3 * (1.0 - wo / (LANES * -(-wo // LANES)))
    # Kernels of many taps (the 7x7 stem) need more registers around the tile: measured
    # there, 12x2 accumulators ran 1.9x slower than 10x2 or 8x2.
    budget = VECTOR_REGISTERS - (6 if wl.kh * wl.kw > 9 else 0)
    best: tuple[float, QConvTile] | None = None
    for tr, sv in shapes:
        v, chunks = abs(sv), (-(-wo // (LANES * -sv)) if sv < 0 else 1)
        for r in range(1, 17):
            if r * v > MAX_ACC or r * v + min(r, v) + 1 > budget:
                break
            if tr == 0 and wl.direct and r * v > MAX_ACC_FUSED:
                break
            tail = tr == 0 and (r, v) == (LANES, 1) and (ho * wo) % LANES != 0
            tile = QConvTile(r, v, tr, chunks=chunks, tail=tail)
            mpad = -(-wl.m // r) * r
            tiles = tile.tiles(wl)
            # a channel-vector tail costs about half a tile (few accumulators: latency)
            useful = (ho * wo * wl.m) / ((tiles - 0.5 * tail) * LANES * v * mpad)
            acc = r * v
            tasks = wl.n * (mpad // r) * tiles
            score = (
                useful
                * min(1.0, acc / 12)
                * min(1.0, r / 3)
                * (1.0 - 0.5 / r)
                * (store_eff if tr and chunks == 1 else 1.0)
                * min(1.0, tasks / (4 * threads))
                * (1.0 + 0.004 * acc)
            )
            if best is None or score > best[0] + 1e-9:
                best = (score, tile)
    # channel-vector rows (`QConvTile.cvec`) on narrow maps: no lane wasted on dropped
    # columns or positions past the map; at most 16 accumulators (measured: 3x3 256->256
    # on 14x14 with 14 accumulators 0.86x the time of rows 13x2, with 28 1.5x; 3x3
    # 512->512 on 7x7, 14 accumulators 0.77x rows 6x4, 21 0.83x; 1x1 on 7x7 outputs 0.95x
    # 16 x 1 with a tail for a requantized output but 1.14x with a residual and a float
    # output, 1x1 direct on 14x14 1.12x: so only maps with dropped columns; rows in chunks
    # of at most 16: 3x3 128->128 on 28x28 0.89x rows 13x2, 64->64 on 56x56 0.94x; not
    # for short reductions, whose scattered stores weigh: the 7x7/2 stem on 3 channels
    # 1.6x)
    if wq != wo and wl.c4 * wl.kh * wl.kw >= 64:
        ch = -(-wo // LANES)  # row chunks of at most 16 positions
        seg = -(-wo // ch)
        for cv in range(1, LANES // seg + 1):
            r = cv * LANES
            acc = seg * cv
            if acc + cv + 1 > budget:
                break
            tile = QConvTile(r, 1, 1, cvec=True, chunks=ch)
            mpad = -(-wl.m // r) * r
            tasks = wl.n * (mpad // r) * ho * ch
            score = (
                (wl.m / mpad)
                * min(1.0, acc / 12)
                * 0.97  # a broadcast per position and step
                * min(1.0, tasks / (4 * threads))
                * (1.0 + 0.004 * acc)
            )
            if best is None or score > best[0] + 1e-9:
                best = (score, tile)
    assert best is not None
    tile = best[1]
    local_bytes = wl.c4 * LANES * tile.v * 4  # a task's repacked activations (on its stack)
    if tile.tr == 0 and wl.direct and local_bytes <= 1 << 17:
        splits = fused_splits(wl, tile, threads)
        if splits:
            tile = QConvTile(tile.r, tile.v, 0, fused=True, splits=splits, tail=tile.tail)
    return tile


def fused_splits(wl: QConvWorkload, tile: QConvTile, threads: int) -> int:
    """How many parts a fused task's channel blocks go in (each part repacks the task's
    positions again), or 0 when fusing does not pay: fewer than ``4 threads`` position
    tiles (measured on 1x1 512->2048 and 2048->512 on 7x7, 4 tiles of 16 x 1: the
    separate repack stage 0.88x the time of fused tasks in 2 or 4 parts).

    Picks the split (1 to 4, at least 4 channel blocks a part) whose tasks fill the
    threads best: ``n * tiles * splits`` tasks of ``ceil(blocks / splits)`` blocks each, on
    `threads` threads in rounds. Measured: 1x1 256->1024 on 14x14 (13 position tiles of
    16), 2 parts 0.94x the time of 1.
    """
    mb = -(-wl.m // tile.r)
    if wl.n * tile.tiles(wl) < 4 * threads:
        return 0
    best: tuple[float, int] | None = None
    for s in range(1, 5):
        if s > 1 and mb < 4 * s:
            break
        tasks = wl.n * tile.tiles(wl) * s
        per = -(-mb // s)
        eff = tasks / (threads * -(-tasks // threads)) * mb / (s * per) / (1 + 0.02 * (s - 1))
        if best is None or eff > best[0] + 1e-9:
            best = (eff, s)
    return 0 if best is None else best[1]


# -- packing (NumPy, at compile time) -------------------------------------------------------------


def pack_weights(w: np.ndarray, wl: QConvWorkload, r: int) -> np.ndarray:
    """OIHW int8 weights as ``[ceil(M / r), C4 * KH * KW, r]`` int32 words, each holding
    the weights of four consecutive input channels (little-endian bytes); channels past C
    and M are 0."""
    m, c, kh, kw = wl.m, wl.c, wl.kh, wl.kw
    mb = -(-m // r)
    full = np.zeros((mb * r, wl.c4 * 4, kh, kw), np.int8)
    full[:m, :c] = np.asarray(w, np.int8).reshape(m, c, kh, kw)
    # [mb, r, c4, 4, kh, kw] -> [mb, c4, kh, kw, r, 4]
    t = full.reshape(mb, r, wl.c4, 4, kh, kw).transpose(0, 2, 4, 5, 1, 3)
    return np.ascontiguousarray(t).view(np.int32).reshape(mb, wl.c4 * kh * kw, r)


def weight_sums(w: np.ndarray, channels: int) -> np.ndarray:
    """Per-output-channel sums of the int8 weights (the zero-point compensation's factor),
    int32, zero-padded to `channels`."""
    w = np.asarray(w)
    s = w.reshape(w.shape[0], -1).astype(np.int64).sum(axis=1)
    out = np.zeros(channels, np.int32)
    out[: s.size] = s.astype(np.int32)
    return out


# -- the kernel ---------------------------------------------------------------------------------


def _rows_needed(wl: QConvWorkload, tile: QConvTile) -> int:
    """Rows of each repacked phase: enough for the last tile's reads past the output."""
    hq, wq = wl.phase_hw
    max_off = max(wl.tap(i, j)[1] for i in range(wl.kh) for j in range(wl.kw))
    last = tile.origin(wl, tile.tiles(wl) - 1) + LANES * tile.v + max_off
    return max(hq, -(-last // wq))


def qconv_func(
    wl: QConvWorkload,
    tile: QConvTile,
    epi: QEpilogue,
    vnni: bool,
    x_dtype: str,
) -> tirx.PrimFunc:
    """The kernel ``main(x, x_scale, x_zp, wp, wsum, w_scale[, bias], operands..., outputs...)``
    on flat buffers (see the module docstring)."""
    if tile.fused and not (wl.direct and tile.tr == 0):
        raise ValueError(f"{tile}: a fused repack needs flat tiles of a direct conv")
    if tile.splits > 1 and not tile.fused:
        raise ValueError(f"{tile}: only fused tiles split their channel blocks")
    if tile.tail and not (tile.tr == 0 and (tile.r, tile.v) == (LANES, 1)):
        raise ValueError(f"{tile}: a channel-vector tail needs flat tiles of 16 x 1")
    if tile.tail and not (wl.out_hw[0] * wl.out_hw[1]) % LANES:
        raise ValueError(f"{tile}: no partial position tile to run as a tail")
    if tile.cvec and (
        tile.r % LANES or tile.tr != 1 or tile.fused or tile.tail
        or LANES * tile.v < -(-wl.out_hw[1] // tile.chunks)
        or (tile.chunks - 1) * -(-wl.out_hw[1] // tile.chunks) >= wl.out_hw[1]
    ):  # fmt: skip
        raise ValueError(f"{tile}: channel-vector tiles are 16 k channels x a row chunk")
    n_, c, h, w, m = wl.n, wl.c, wl.h, wl.w, wl.m
    sh, sw = wl.strides
    pt, pl = wl.pads[0], wl.pads[1]
    ho, wo = wl.out_hw
    wq = wl.phase_hw[1]
    c4, taps = wl.c4, wl.kh * wl.kw
    phases = wl.phases
    ns = len(phases)
    rows = _rows_needed(wl, tile)
    lq = rows * wq
    R, V, TR = tile.r, tile.v, tile.tr
    mb = -(-m // R)
    rt = tile.tiles(wl)
    dot = vpdpbusd if vnni else dot4_generic
    i32 = "int32"

    with IRBuilder() as ib, T.prim_func():
        T.func_name("main")
        T.func_attr({"global_symbol": "main", "tirx.noalias": True})
        x = T.arg("x", T.buffer((n_ * c * h * w,), x_dtype))
        xs = T.arg("x_scale", T.buffer((1,), "float32"))
        xz = T.arg("x_zp", T.buffer((1,), x_dtype))
        wp = T.arg("wp", T.buffer((mb * c4 * taps * R,), i32))
        wsum = T.arg("wsum", T.buffer((mb * R,), i32))
        ws = T.arg("w_scale", T.buffer((m if wl.per_channel else 1,), "float32"))
        bias = T.arg("bias", T.buffer((m,), i32)) if wl.has_bias else None
        opers = [
            T.arg(f"e{i}", T.buffer((op.size,), op.dtype)) for i, op in enumerate(epi.operands)
        ]
        outs = [
            T.arg(f"out{i}", T.buffer((n_ * m * ho * wo,), dt))
            for i, dt in enumerate(epi.output_dtypes)
        ]
        shift = 128 if wl.signed else 0
        zp = tirx.Cast(i32, xz[0]) + shift

        zword = tirx.bitwise_or(  # the zero point in all four bytes
            tirx.bitwise_or(zp, tirx.shift_left(zp, tirx.const(8, i32))),
            tirx.bitwise_or(tirx.shift_left(zp, tirx.const(16, i32)),
                            tirx.shift_left(zp, tirx.const(24, i32))),
        )  # fmt: skip

        def byte(v: Expr) -> Expr:
            b = tirx.Cast(i32, v)
            return b + shift if wl.signed else b

        def pack_word(n: Expr, g: Expr, pos: Expr) -> Expr:
            """Input channels ``4 g .. 4 g + 3`` of image `n` at spatial offset `pos`
            (``row * W + col``) as one int32, the zero point past C."""
            word: Expr = None
            for i in range(4):
                ch = g * 4 + i
                if c % 4 and i >= c % 4:  # past C in the last group: the zero point
                    src = x[(n * c + tirx.min(ch, c - 1)) * (h * w) + pos]
                    ok = tirx.Cast(i32, ch < c)  # a mask, not a Select (see docs)
                    b = byte(src) * ok + zp * (1 - ok)
                else:
                    b = byte(x[(n * c + ch) * (h * w) + pos])
                b = b if i == 0 else tirx.shift_left(b, tirx.const(8 * i, i32))
                word = b if word is None else tirx.bitwise_or(word, b)
            return word

        xr = None if tile.fused else T.decl_buffer((n_ * c4 * ns * lq,), i32)
        if not tile.fused:
            # 1. repack: one task per (image, channel group, row of every phase)
            with T.parallel(0, n_ * c4 * rows) as t:
                r_ = t % rows
                g = (t // rows) % c4
                n = t // (rows * c4)
                for si, (ph, pw) in enumerate(phases):
                    base = ((n * c4 + g) * ns + si) * lq + r_ * wq
                    ih = r_ * sh + ph - pt
                    # the columns q whose input column q * sw + pw - pl lies in [0, w)
                    q_lo = min(wq, max(0, -(-(pl - pw) // sw)))
                    q_hi = max(q_lo, min(wq, -(-(w + pl - pw) // sw)))

                    def word(
                        q: Expr, g: Expr = g, n: Expr = n, ih: Expr = ih, pw: int = pw
                    ) -> Expr:
                        return pack_word(n, g, ih * w + q * sw + pw - pl)

                    def fill(lo: int, hi: int, base: Expr = base) -> None:
                        if hi > lo:
                            with T.vectorized(0, hi - lo) as q:
                                T.buffer_store(xr, zword, [base + lo + q])

                    with T.If(tirx.all(ih >= 0, ih < h)):
                        with T.Then():
                            fill(0, q_lo)
                            store_row(
                                q_hi - q_lo,
                                lambda col, lo=q_lo, word=word: word(col + lo),
                                lambda col, val, lo=q_lo, base=base: T.buffer_store(
                                    xr, val, [base + lo + col]
                                ),
                            )
                            fill(q_hi, wq)
                        with T.Else():
                            fill(0, wq)

        npos = ho * wo

        # 0. per output channel, once per call: the float scale and the shift (bias and
        # zero-point compensation, scaled) of ``y = acc * scale + shift``, so each tile's
        # store reads two floats per channel instead of recomputing them
        tsc = T.decl_buffer((m,), "float32")
        tsh = T.decl_buffer((m,), "float32")

        def channel_consts(mm: Expr) -> None:
            comp = zp * wsum[mm]
            comp = bias[mm] - comp if bias is not None else -comp
            scale = xs[0] * (ws[mm] if wl.per_channel else ws[0])
            shift = tirx.Cast("float32", comp) * scale
            if epi.affine is not None:
                a, b = (tirx.const(float(v), "float32") for v in epi.affine)
                scale, shift = scale * a, fma(shift, a, b)
            T.buffer_store(tsc, scale, [mm])
            T.buffer_store(tsh, shift, [mm])

        if m // LANES:
            with T.serial(0, m // LANES) as j, T.vectorized(0, LANES) as lane:
                channel_consts(j * LANES + lane)
        if m % LANES:
            with T.vectorized(0, m % LANES) as lane:
                channel_consts(m // LANES * LANES + lane)

        def conv_tile(n: Expr, cb: Expr, rb: Expr, load: Callable[..., Expr]) -> None:
            """Accumulate the tile of channel block `cb`, position tile `rb` (activations
            read from ``buf[at:]`` where ``buf, at = load(g, slot, off)``) and store it
            through the epilogue."""
            acc = T.decl_buffer((R * V * LANES,), i32, scope="local")
            rows_tile = TR and tile.chunks == 1  # whole rows: stored through a staging copy
            stage = T.decl_buffer((R * V * LANES,), i32, scope="local") if rows_tile else None
            p0 = tile.origin(wl, rb)

            def step(g: Expr, wbase: Expr, tap: Expr, avec: list[Expr]) -> None:
                """One reduction step: ``R x V`` vpdpbusd on the activation vectors `avec`
                and the channel block's weight words of tap `tap`."""
                bvec = [tirx.Broadcast(wp[wbase + tap * R + ri], LANES) for ri in range(R)]
                # the operand kind with fewer vectors is the one kept live (the other is the
                # outer loop: each of its vectors is used, then dead)
                order = [(ri, vi) for ri in range(R) for vi in range(V)]
                if R < V:
                    order = [(ri, vi) for vi in range(V) for ri in range(R)]
                for ri, vi in order:
                    idx = tirx.Ramp((ri * V + vi) * LANES, 1, LANES)
                    T.buffer_store(acc, dot(acc[idx], avec[vi], bvec[ri]), [idx])

            for k in range(R * V):
                T.buffer_store(acc, tirx.Broadcast(tirx.const(0, i32), LANES),
                               [tirx.Ramp(k * LANES, 1, LANES)])  # fmt: skip
            with T.serial(0, c4) as g:
                wbase = (cb * c4 + g) * (taps * R)
                for i in range(wl.kh):
                    for j in range(wl.kw):
                        slot, off = wl.tap(i, j)
                        buf, at = load(g, slot, p0 + off)
                        step(g, wbase, i * wl.kw + j, [buf[tirx.Ramp(at + vi * LANES, 1, LANES)]
                                                      for vi in range(V)])  # fmt: skip
            if stage is not None:
                for k in range(R * V):
                    idx = tirx.Ramp(k * LANES, 1, LANES)
                    T.buffer_store(stage, acc[idx], [idx])
            # store: per channel, per output row of the tile (flat: the tile's positions)
            for ri in range(R):
                mm = cb * R + ri
                scale, shift_f = tsc[tirx.min(mm, m - 1)], tsh[tirx.min(mm, m - 1)]

                def emit(
                    width: int,
                    src: Any,
                    off: Expr,
                    obase: Expr,
                    where: Callable[[Expr], tuple[Expr, Expr]],
                    shift_f: Expr = shift_f,
                    scale: Expr = scale,
                    mm: Expr = mm,
                ) -> None:
                    def value(col: Expr) -> Expr:
                        return fma(tirx.Cast("float32", src[off + col]), scale, shift_f)

                    def store(col: Expr, y: Expr) -> None:
                        oh, ow = where(col)
                        for o, e in zip(outs, epi.exprs(y, (n, mm, oh, ow), opers), strict=True):
                            T.buffer_store(o, e, [obase + col])

                    store_row(width, value, store)

                if stage is not None:
                    with T.serial(0, TR) as tt:
                        oh = rb * TR + tt
                        with T.If(tirx.all(mm < m, oh < ho)), T.Then():
                            emit(wo, stage, ri * V * LANES + tt * wq,
                                 ((n * m + mm) * ho + oh) * wo,
                                 lambda col, oh=oh: (oh, col))  # fmt: skip
                    continue
                if TR:  # a chunk of a row: columns k * 16 v ...
                    ch = tile.chunks
                    row, k = rb // ch, rb % ch
                    last = wo - (ch - 1) * V * LANES
                    is_last = k == ch - 1

                    def flat(
                        width: int, ri: int = ri, mm: Expr = mm, row: Expr = row, k: Expr = k
                    ) -> None:
                        c0 = k * (V * LANES)
                        emit(width, acc, ri * V * LANES, ((n * m + mm) * ho + row) * wo + c0,
                             lambda col: (row, c0 + col))  # fmt: skip

                else:
                    last = npos - (rt - 1) * V * LANES
                    is_last = rb == rt - 1

                    def flat(width: int, ri: int = ri, mm: Expr = mm, p0: Expr = p0) -> None:
                        emit(width, acc, ri * V * LANES, (n * m + mm) * npos + p0,
                             lambda col: ((p0 + col) // wo, (p0 + col) % wo))  # fmt: skip

                with T.If(mm < m), T.Then():
                    if last == V * LANES:
                        flat(V * LANES)
                    else:
                        with T.If(is_last):
                            with T.Then():
                                flat(last)
                            with T.Else():
                                flat(V * LANES)

        tail = npos % LANES

        def conv_cvec(
            n: Expr,
            cb: Expr,
            count: int,
            p_in: Expr,
            where: Callable[[int], tuple[Expr, Expr]],
            load: Callable[..., tuple[Any, Expr]],
        ) -> None:
            """`count` output positions of channel block `cb` with vectors over channels:
            one accumulator per position and 16 channels (``R / 16`` vectors a position),
            each step ``R / 16`` weight vectors of a tap times the broadcast activation word
            of every position (consecutive words from flattened position `p_in` of the
            repacked input); stored through the epilogue per position, 16 channels at a
            time. `where(q)` is position ``q``'s output ``(row, column)``."""
            cv = R // LANES
            # few accumulators (a tail of 1-4 positions) would chain every vpdpbusd on the
            # previous one: channel groups then go round-robin to `copies` sets, summed
            # at the end (measured: 1x1 512->2048 on 7x7, a 1-position tail, 0.97x)
            copies = max(1, min(4, c4, -(-8 // (count * cv))))
            size = count * cv * LANES
            acc = T.decl_buffer((copies * size,), i32, scope="local")
            for k in range(copies * count * cv):
                T.buffer_store(acc, tirx.Broadcast(tirx.const(0, i32), LANES),
                               [tirx.Ramp(k * LANES, 1, LANES)])  # fmt: skip

            def group(g: Expr, base: int) -> None:
                wbase = (cb * c4 + g) * (taps * R)
                for i in range(wl.kh):
                    for j in range(wl.kw):
                        slot, off = wl.tap(i, j)
                        tap = i * wl.kw + j
                        wvec = [wp[tirx.Ramp(wbase + tap * R + c * LANES, 1, LANES)]
                                for c in range(cv)]  # fmt: skip
                        buf, at = load(g, slot, p_in + off)
                        for q in range(count):
                            word = tirx.Broadcast(buf[at + q], LANES)
                            for c in range(cv):
                                idx = tirx.Ramp(base + (q * cv + c) * LANES, 1, LANES)
                                T.buffer_store(acc, dot(acc[idx], word, wvec[c]), [idx])

            with T.serial(0, c4 // copies) as gg:
                for k in range(copies):
                    group(gg * copies + k, k * size)
            if c4 % copies:
                with T.serial(c4 // copies * copies, c4) as g:
                    group(g, 0)
            for k in range(1, copies):
                for v in range(count * cv):
                    idx = tirx.Ramp(v * LANES, 1, LANES)
                    src = tirx.Ramp(k * size + v * LANES, 1, LANES)
                    T.buffer_store(acc, acc[idx] + acc[src], [idx])
            for q in range(count):
                oh, ow = where(q)
                for c in range(cv):

                    def lane_store(lane: Expr, q: int = q, c: int = c, oh: Expr = oh,
                                   ow: Expr = ow) -> None:  # fmt: skip
                        mm = cb * R + c * LANES + lane
                        a = acc[(q * cv + c) * LANES + lane]
                        y = fma(tirx.Cast("float32", a), tsc[mm], tsh[mm])
                        for o, e in zip(outs, epi.exprs(y, (n, mm, oh, ow), opers), strict=True):
                            T.buffer_store(o, e, [((n * m + mm) * ho + oh) * wo + ow])

                    if m % R == 0:
                        with T.vectorized(0, LANES) as lane:
                            lane_store(lane)
                    else:
                        with T.serial(0, LANES) as lane:
                            with T.If(cb * R + c * LANES + lane < m), T.Then():
                                lane_store(lane)

        def conv_tail(n: Expr, cb: Expr, load: Callable[..., tuple[Any, Expr]]) -> None:
            """The last ``npos % 16`` positions of channel block `cb` (`QConvTile.tail`)."""
            p0 = npos - tail

            def where(q: int) -> tuple[Expr, Expr]:
                return tirx.const((p0 + q) // wo, i32), tirx.const((p0 + q) % wo, i32)

            conv_cvec(n, cb, tail, tirx.const(p0, i32), where, load)

        def conv_or_tail(n: Expr, cb: Expr, rb: Expr, load: Callable[..., Any]) -> None:
            """`conv_tile`, or `conv_tail` for the last position tile of a tail tile, or
            `conv_cvec` on output row `rb` for channel-vector tiles."""
            if tile.cvec:
                ch = tile.chunks
                seg = -(-wo // ch)  # positions of a chunk (the last may have fewer)
                row, k = rb // ch, rb % ch

                def chunk(count: int) -> None:
                    conv_cvec(n, cb, count, row * wq + k * seg,
                              lambda q: (row, k * seg + q), load)  # fmt: skip

                if seg * ch == wo:
                    chunk(seg)
                else:
                    with T.If(k < ch - 1):
                        with T.Then():
                            chunk(seg)
                        with T.Else():
                            chunk(wo - (ch - 1) * seg)
                return
            if not tile.tail:
                conv_tile(n, cb, rb, load)
                return
            with T.If(rb < rt - 1):
                with T.Then():
                    conv_tile(n, cb, rb, load)
                with T.Else():
                    conv_tail(n, cb, load)

        if not tile.fused:
            assert xr is not None
            # 2. conv: one task per (image, channel block, row tile)
            with T.parallel(0, n_ * mb * rt) as t:
                n = t // (rt * mb)

                def from_xr(g: Expr, slot: int, off: Expr, n: Expr = n) -> tuple[Any, Expr]:
                    return xr, (n * c4 + g) * (ns * lq) + slot * lq + off

                conv_or_tail(n, (t // rt) % mb, t % rt, from_xr)
        else:
            # 2'. direct conv, repack fused: one task per (image, position tile) repacks
            # its positions of every channel group into a local buffer (no trip through
            # memory), then runs every channel block on it
            tl = V * LANES
            S = tile.splits
            per = -(-mb // S)  # channel blocks per task
            with T.parallel(0, n_ * rt * S) as t:
                part = t % S
                rb = (t // S) % rt
                n = t // (S * rt)
                p0 = rb * tl
                xl = T.decl_buffer((c4 * tl,), i32, scope="local")

                def word(g: Expr, p: Expr, n: Expr = n) -> Expr:
                    return pack_word(n, g, p)

                def fill(width: int, p0: Expr = p0, word: Any = word) -> None:
                    with T.serial(0, c4) as g:
                        store_row(
                            width,
                            lambda col, g=g: word(g, p0 + col),
                            lambda col, val, g=g: T.buffer_store(xl, val, [g * tl + col]),
                        )
                        if width < tl:
                            with T.vectorized(0, tl - width) as q:
                                T.buffer_store(xl, zword, [g * tl + width + q])

                last = npos - (rt - 1) * tl
                if last == tl:
                    fill(tl)
                else:
                    with T.If(rb < rt - 1):
                        with T.Then():
                            fill(tl)
                        with T.Else():
                            fill(last)

                def from_xl(g: Expr, slot: int, off: Expr, p0: Expr = p0) -> tuple[Any, Expr]:
                    return xl, g * tl + (off - p0)

                with T.serial(0, per) as k:
                    cb = part * per + k
                    if per * S == mb:
                        conv_or_tail(n, cb, rb, from_xl)
                    else:
                        with T.If(cb < mb), T.Then():
                            conv_or_tail(n, cb, rb, from_xl)
    func = ib.get()
    return func.with_attr("global_symbol", "main")
