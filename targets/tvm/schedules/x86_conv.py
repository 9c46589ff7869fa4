"""x86 schedule for a fused conv group (Conv NCHW fp32 + bias + ReLU/Clip + residual Add).

Three forms vectorized over output positions, picked by `kernels.conv.lower_conv` (all keep
the kernel interface NCHW). Small outputs (14x14 and below) and strided convs run instead in
the channel-vector form of `x86_conv1x1` (`kernels.conv.use_cvec`).

- **flattened** (general; `te_ops.conv2d_nchw`): ``xph`` -> ``conv_flat`` -> ``conv_crop``
  -> epilogue.

  - ``xph`` (padding + stride phases) is its own stage, parallel over (batch, channel), its
    flattened position split back into (row, column) so no division is left in the loop;
  - ``conv_flat`` is register-blocked: ``ocb`` output channels x ``nvec`` vectors of
    ``lanes`` flattened positions accumulate in a local tile that LLVM keeps in zmm
    registers (checked in the assembly: 24 accumulators, ``vbroadcastss`` + ``vfmadd231ps``
    only); loop order ``(n, m_outer, p_outer) [parallel] / rc, kh, kw / m_inner [unroll] /
    p_vec [unroll] / lane [vectorize]`` (position tiles outside channel blocks while the
    weights fit in L2), so each
    reduction step does ``nvec`` contiguous vector loads, ``ocb`` weight broadcasts and
    ``ocb * nvec`` FMAs;
  - the epilogue (crop to NCHW, bias, activations, residual) is inlined into one output loop
    nest, parallel over (batch, channel): one extra pass over the output.

- **by rows** (output width a whole number of vectors, or rounded up with at most 13 %
  garbage columns and less waste than the flattened form: the stem, 14x14 layers):
  ``conv_flat`` is indexed like the output, the tile is ``ocb x hb rows x nvec vectors``, and
  the epilogue is computed right from the tile (no extra pass over memory).

- **flat direct** (1x1, stride 1, unpadded, ``H*W`` whole vectors): no ``xph`` copy at all;
  the kernel declares NCHW tensors as ``[N, C, H*W]`` and the epilogue runs in the tile.
  Narrow ones with big outputs (`STORE_BOUND_MAX_CHANNELS`, store-bound) sweep channel
  blocks outside position tiles.

`vectorize`/`parallel` are applied before `decompose_reduction` (the other order is a
ScheduleError in TVM 0.27).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import tvm
from tvm import s_tir

from ..te_ops import CONV_FLAT, XPH, ConvWorkload, LoweredGroup

__all__ = [
    "ConvConfig",
    "choose_config",
    "flat_config_possible",
    "row_width",
    "rows_config_possible",
    "schedule_conv_group",
    "vector_lanes",
]


@dataclass(frozen=True)
class ConvConfig:
    """Tile sizes of the conv schedule.

    Attributes:
        lanes: fp32 lanes per vector (16 with AVX-512, 8 with AVX2).
        ocb: output channels per register tile (unrolled).
        nvec: vectors of flattened output positions per register tile (unrolled).
        spatial_outer: loop over position tiles outside channel blocks (each input tile is
            read once while all weights stay in cache), instead of channel blocks outside
            (each weight block read once while the whole input stays in cache).
        unroll_taps: unroll the kernel-tap loops (kh, kw), folding the stride-phase address
            arithmetic into constants.
        rows: the conv is lowered by output rows (`te_ops.conv2d_nchw`'s ``rows``); the
            register tile is ``ocb`` channels x ``hb`` rows x ``nvec`` vectors and the
            epilogue runs inside it.
        hb: output rows per register tile (``rows`` only).
        taps_outer: reduction order (kh, kw, c) instead of (c, kh, kw): a long inner
            reduction loop instead of a 3-trip one (measured 15-50 % slower on the ResNet-50
            3x3 layers; kept as a knob, off by default).
    """

    lanes: int
    ocb: int
    nvec: int
    spatial_outer: bool = False
    unroll_taps: bool = False
    rows: bool = False
    hb: int = 1
    taps_outer: bool = False

    @property
    def p_align(self) -> int:
        """Alignment of the flattened output length (`te_ops.conv2d_nchw`'s ``p_align``)."""
        return self.lanes * self.nvec


def vector_lanes(target: tvm.target.Target) -> int:
    """fp32 lanes of the widest vector the target has (16, 8 or 4)."""
    has = tvm.target.codegen.llvm_cpu_has_features
    if has(["avx512f"], target):
        return 16
    if has(["avx2"], target) or has(["avx"], target):
        return 8
    return 4


def choose_config(
    wl: ConvWorkload, lanes: int, max_acc: int = 24, flat: bool = False, rows: bool = False
) -> ConvConfig:
    """Pick the register tile: little padding waste first, then the largest tile that fits.

    ``ocb`` must divide the output channels (no tail in the unrolled loop); ``ocb * nvec``
    accumulators stay within `max_acc` of the 32 zmm registers. Loop order and tap
    unrolling: see `_with_loop_order`.
    With ``flat`` (a direct conv lowered in flat layout; callers check
    `flat_config_possible` first) ``H * W`` is whole vectors and the last tile may be
    partial. With ``rows`` (by-rows lowering, `rows_config_possible`) ``nvec`` divides the
    rounded-up row width in vectors and ``hb`` the output height.
    """
    if flat:
        return _flat_config(wl, lanes, max_acc)
    if rows:
        return _rows_config(wl, lanes, max_acc)
    flat_len = wl.flat_len
    best: tuple[float, ConvConfig] | None = None
    for ocb in (8, 6, 4, 3, 2, 1):
        if wl.m % ocb:
            continue
        for nvec in (4, 3, 2, 1):
            acc = ocb * nvec
            if acc > max_acc:
                continue
            padded = -(-flat_len // (lanes * nvec)) * lanes * nvec
            useful = flat_len / padded
            # loads per FMA: nvec vector loads + ocb broadcasts for ocb*nvec FMAs.
            intensity = acc / (ocb + nvec)
            score = useful * min(1.0, acc / 16) * min(1.0, intensity / 2.4)
            if best is None or score > best[0] + 1e-9:
                best = (score, ConvConfig(lanes, ocb, nvec))
    assert best is not None
    tiles = -(-flat_len // (lanes * best[1].nvec))
    return _with_loop_order(wl, best[1], tiles)


#: Weights up to this size stay in L2 (2 MiB per core here) while position tiles sweep
#: every channel block; bigger weights are swept once, channel block by channel block.
WEIGHTS_IN_L2 = 1 << 20


def _with_loop_order(wl: ConvWorkload, cfg: ConvConfig, position_tiles: int) -> ConvConfig:
    """Loop order and tap unrolling, as measured on the ResNet-50 layers (2 cores, AVX-512).

    Position tiles go outside channel blocks while the weights fit `WEIGHTS_IN_L2`
    (128->128 3x3 on 28x28: 0.80 ms vs 0.89 ms channel blocks outside; a bytes-re-streamed
    model picked the slower order there); with more weights channel blocks go outside
    (1024->256 1x1 on 14x14: 0.50 vs 0.52 ms). Taps are unrolled for kernels of at most 9
    taps (0.70 vs 0.74 ms on the 28x28 layer; neutral elsewhere). ``position_tiles`` is
    accepted for a future cost model.
    """
    del position_tiles
    weight_bytes = 4 * wl.m * wl.c * wl.kh * wl.kw
    return replace(
        cfg,
        spatial_outer=weight_bytes <= WEIGHTS_IN_L2,
        unroll_taps=wl.kh * wl.kw <= 9,
    )


#: Largest fraction of garbage columns the by-rows lowering may compute (``Wo`` rounded up
#: to whole vectors): 14 -> 16, 28 -> 32, 56 -> 64 qualify, 7 -> 16 does not.
ROWS_MAX_WASTE = 0.13


def row_width(wl: ConvWorkload, lanes: int) -> int:
    """The output width rounded up to whole vectors."""
    return -(-wl.out_hw[1] // lanes) * lanes


def rows_config_possible(wl: ConvWorkload, lanes: int) -> bool:
    """True when the by-rows lowering wastes at most `ROWS_MAX_WASTE` of its columns and no
    more than the flattened form does (measured: with equal waste the flattened form's
    longer vectors runs win, e.g. 64->64 3x3 on 56x56 0.71 ms vs 0.83 ms by rows)."""
    wt = row_width(wl, lanes)
    rows_waste = (wt - wl.out_hw[1]) / wt
    cfg = choose_config(wl, lanes)
    padded = -(-wl.flat_len // cfg.p_align) * cfg.p_align
    flat_waste = 1 - wl.out_hw[0] * wl.out_hw[1] / padded
    return rows_waste <= ROWS_MAX_WASTE and rows_waste <= flat_waste


def _rows_config(wl: ConvWorkload, lanes: int, max_acc: int) -> ConvConfig:
    ho, wo = wl.out_hw[0], row_width(wl, lanes)
    best: tuple[float, ConvConfig] | None = None
    for ocb in (8, 6, 4, 3, 2, 1):
        if wl.m % ocb:
            continue
        for hb in (1, 2, 3, 4, 6, 7, 8):
            if ho % hb:
                continue
            for nvec in (1, 2, 3, 4, 5, 6, 7, 8):
                acc = ocb * hb * nvec
                if (wo // lanes) % nvec or acc > max_acc:
                    continue
                intensity = acc / (ocb + hb * nvec)
                score = min(1.0, acc / 16) * min(1.0, intensity / 2.4) + 1e-3 * acc
                if best is None or score > best[0] + 1e-9:
                    best = (score, ConvConfig(lanes, ocb, nvec, rows=True, hb=hb))
    assert best is not None
    tiles = (ho // best[1].hb) * (wo // (lanes * best[1].nvec))
    return _with_loop_order(wl, best[1], tiles)


def flat_config_possible(wl: ConvWorkload, lanes: int) -> bool:
    """True when a direct conv's positions split into whole vectors (flat lowering)."""
    return wl.direct and (wl.h * wl.w) % lanes == 0


def _flat_config(wl: ConvWorkload, lanes: int, max_acc: int) -> ConvConfig:
    # ``nvec`` need not divide the vectors: the last position tile is predicated per vector
    # (measured: 128->512 1x1 on 28x28, 49 vectors, 0.25 ms with ocb=8 nvec=3 vs 0.45 ms
    # with the dividing ocb=2 nvec=7).
    nv = (wl.h * wl.w) // lanes
    best: tuple[float, ConvConfig] | None = None
    for ocb in (8, 6, 4, 3, 2, 1):
        if wl.m % ocb:
            continue
        for nvec in (4, 3, 2, 1):
            acc = ocb * nvec
            if acc > max_acc:
                continue
            intensity = acc / (ocb + nvec)
            score = min(1.0, acc / 16) * min(1.0, intensity / 2.4) + 1e-3 * acc
            if best is None or score > best[0] + 1e-9:
                best = (score, ConvConfig(lanes, ocb, nvec))
    assert best is not None
    cfg = _with_loop_order(wl, best[1], -(-nv // best[1].nvec))
    out_bytes = 4 * wl.n * wl.m * wl.h * wl.w
    if wl.c <= STORE_BOUND_MAX_CHANNELS and out_bytes > STORE_BOUND_MIN_OUTPUT_BYTES:
        cfg = replace(cfg, spatial_outer=False)
    return cfg


#: Direct (flat) 1x1 convs with at most this many input channels and an output above
#: `STORE_BOUND_MIN_OUTPUT_BYTES` put channel blocks outside position tiles. Such a conv is
#: bound by its output stores (16->96 on 112x112 writes 4.8 MB from 0.8 MB of input), and
#: its output does not stay in a core's L2: position tiles outside meant ``M`` interleaved
#: write streams per thread, channel blocks outside write ``ocb`` whole planes in turn, and
#: each thread writes the channels the next layer's thread reads (the depthwise kernels
#: split channels between threads the same way). Measured (2 threads, Zen 4; per-step
#: minima in the model, interleaved A/B, 30x10 runs): MobileNetV2's 16->96 on 112x112 +
#: Clip 0.54 -> 0.45 ms quiet (1.02 -> 0.90 ms loaded); in a tight loop with the caches
#: swept before each call 0.73 -> 0.49 ms (noisy: 0.72 -> 0.70 in another run), hot in L2
#: about equal (0.32-0.36 ms either way; ONNX Runtime 0.41 ms). Smaller outputs lose a
#: little in the model (24->144 on 56x56, 1.8 MB: 0.136 -> 0.150 ms; 32->192 on 28x28:
#: 0.064 -> 0.076 ms; 32->16 on 112x112: 0.084 -> 0.092 ms), hence the size bound.
#: ResNet-50 has no flat conv this narrow.
STORE_BOUND_MAX_CHANNELS = 32
#: See `STORE_BOUND_MAX_CHANNELS`: the per-core L2 here (2 MiB).
STORE_BOUND_MIN_OUTPUT_BYTES = 2 << 20


def schedule_conv_group(
    lg: LoweredGroup, cfg: ConvConfig, func: tvm.tirx.PrimFunc | None = None
) -> s_tir.Schedule:
    """Apply the x86 conv schedule to a lowered conv group.

    Args:
        lg: the lowered group (its anchor must be a Conv).
        cfg: tile sizes; its ``p_align`` must be the one `lg` was lowered with.
        func: the PrimFunc to schedule (default: ``lg.prim_func()``).

    Returns:
        The schedule; build ``sch.mod``.
    """
    assert lg.conv is not None, "not a conv group"
    if lg.flat:
        return _schedule_flat(lg, cfg, func)
    if lg.rows:
        return _schedule_rows(lg, cfg, func)
    sch = s_tir.Schedule(func if func is not None else lg.prim_func())
    out_names = {t.op.name for t in lg.outputs}
    # 1. The whole epilogue becomes one loop nest: inline every stage that is not an output.
    for name in lg.stage_names:
        if name not in out_names:
            sch.compute_inline(sch.get_sblock(name))
    final_names = [n for n in lg.stage_names if n in out_names]

    # 2. Register-blocked conv.
    blk = sch.get_sblock(CONV_FLAT)
    n, m, p, rc, rkh, rkw = sch.get_loops(blk)
    mo, mi = sch.split(m, [None, cfg.ocb])
    po, pt, pv = sch.split(p, [None, cfg.nvec, cfg.lanes])
    first, second = (po, mo) if cfg.spatial_outer else (mo, po)
    red = (rkh, rkw, rc) if cfg.taps_outer else (rc, rkh, rkw)
    sch.reorder(n, first, second, *red, mi, pt, pv)
    copy = sch.cache_write(blk, 0, "local")
    sch.reverse_compute_at(copy, second)
    outer = sch.fuse(n, first, second)

    # 3. Output stages: one parallel loop nest over (batch, channel) each; conv_flat is
    # still in L2 (reverse_compute_at under the channel block cannot invert ``h * Wq + w``).
    for name in final_names:
        fin = sch.get_sblock(name)
        loops = sch.get_loops(fin)
        if len(loops) >= 2:
            sch.parallel(sch.fuse(loops[0], loops[1]))
        last = sch.get_loops(fin)[-1]
        extent = _extent(sch, last)
        if extent is not None and extent % cfg.lanes == 0:
            _, lv = sch.split(last, [None, cfg.lanes])
            sch.vectorize(lv)
    sch.parallel(outer)
    sch.unroll(mi)
    sch.unroll(pt)
    if cfg.unroll_taps:
        sch.unroll(rkw)
        sch.unroll(rkh)
    sch.vectorize(pv)
    cl = sch.get_loops(copy)
    _, cv = sch.split(cl[-1], [None, cfg.lanes])
    sch.vectorize(cv)
    sch.decompose_reduction(blk, red[0])

    # 4. Padding/phase stage: its own parallel loop, no division in the inner loop.
    xb = sch.get_sblock(XPH)
    xn, xc, _xph, _xpw, xq = sch.get_loops(xb)
    wq = lg.conv.phase_hw[1]
    sch.split(xq, [None, wq])
    sch.parallel(sch.fuse(xn, xc))
    return sch


def _schedule_flat(
    lg: LoweredGroup, cfg: ConvConfig, func: tvm.tirx.PrimFunc | None
) -> s_tir.Schedule:
    """Direct conv in flat layout: the epilogue is computed from the register tile itself
    (``conv_flat`` lives in a local buffer the size of one tile), no padding stage."""
    sch = s_tir.Schedule(func if func is not None else lg.prim_func())
    out_names = {t.op.name for t in lg.outputs}
    for name in lg.stage_names:
        if name not in out_names:
            sch.compute_inline(sch.get_sblock(name))
    blk = sch.get_sblock(CONV_FLAT)
    n, m, p, rc = sch.get_loops(blk)
    mo, mi = sch.split(m, [None, cfg.ocb])
    po, pt, pv = sch.split(p, [None, cfg.nvec, cfg.lanes])
    first, second = (po, mo) if cfg.spatial_outer else (mo, po)
    sch.reorder(n, first, second, rc, mi, pt, pv)
    sch.set_scope(blk, 0, "local")
    for name in lg.stage_names:
        if name in out_names:
            fin = sch.get_sblock(name)
            sch.reverse_compute_at(fin, second)
            _, lv = sch.split(sch.get_loops(fin)[-1], [None, cfg.lanes])
            sch.vectorize(lv)
    outer = sch.fuse(n, first, second)
    sch.parallel(outer)
    sch.unroll(mi)
    sch.unroll(pt)
    sch.vectorize(pv)
    sch.decompose_reduction(blk, rc)
    return sch


def _schedule_rows(
    lg: LoweredGroup, cfg: ConvConfig, func: tvm.tirx.PrimFunc | None
) -> s_tir.Schedule:
    """Conv by output rows: tile ``ocb x hb x nvec*lanes`` in registers, epilogue in the
    tile, padding/phase stage as in the general schedule."""
    assert lg.conv is not None
    sch = s_tir.Schedule(func if func is not None else lg.prim_func())
    out_names = {t.op.name for t in lg.outputs}
    for name in lg.stage_names:
        if name not in out_names:
            sch.compute_inline(sch.get_sblock(name))
    blk = sch.get_sblock(CONV_FLAT)
    n, m, h, w, rc, rkh, rkw = sch.get_loops(blk)
    mo, mi = sch.split(m, [None, cfg.ocb])
    ho, hi = sch.split(h, [None, cfg.hb])
    wo, wi, wv = sch.split(w, [None, cfg.nvec, cfg.lanes])
    red = (rkh, rkw, rc) if cfg.taps_outer else (rc, rkh, rkw)
    tiles = (n, ho, wo, mo) if cfg.spatial_outer else (n, mo, ho, wo)
    sch.reorder(*tiles, *red, mi, hi, wi, wv)
    tile = tiles[-1]
    sch.set_scope(blk, 0, "local")
    for name in lg.stage_names:
        if name in out_names:
            fin = sch.get_sblock(name)
            sch.reverse_compute_at(fin, tile)
            last = sch.get_loops(fin)[-1]
            extent = _extent(sch, last)
            if extent is not None and extent % cfg.lanes == 0:
                _, lv = sch.split(last, [None, cfg.lanes])
                sch.vectorize(lv)
    sch.parallel(sch.fuse(*tiles))
    sch.unroll(mi)
    sch.unroll(hi)
    sch.unroll(wi)
    if cfg.unroll_taps:
        sch.unroll(rkw)
        sch.unroll(rkh)
    sch.vectorize(wv)
    sch.decompose_reduction(blk, red[0])
    xb = sch.get_sblock(XPH)
    xn, xc, _xph, _xpw, xq = sch.get_loops(xb)
    sch.split(xq, [None, lg.conv.phase_hw[1]])
    sch.parallel(sch.fuse(xn, xc))
    return sch


def _extent(sch: s_tir.Schedule, loop: s_tir.schedule.LoopRV) -> int | None:
    ext = sch.get(loop).extent
    return int(ext) if isinstance(ext, tvm.tirx.IntImm) else None
