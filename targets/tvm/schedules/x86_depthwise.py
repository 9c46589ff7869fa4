"""x86 schedule for grouped / depthwise conv groups (`kernels.depthwise`), AVX-512 or AVX2.

The TE (see `kernels.depthwise.grouped_conv`) has, per group: one ``dw_pad_<ph>_<pw>`` stage
per stride phase a tap reads (the zero-padded input plane of that phase, ``[N, C, rows,
Wq]``), ``dw_flat`` (the convolution over flattened output positions ``p = h * Wq + w`` of
one output channel, ``[N, M, tiles, nvec, lanes]``, taps written out, a reduction only over
the input channels of a group) and the epilogue, whose output stage reads
``dw_flat`` at ``p = h * Wq + w``.

The schedule works one output channel (one plane) at a time, everything in L1/L2:

1. a parallel loop over (batch, output channel) of the output stage; the epilogue (crop,
   bias, activations, residual) is inlined into it and vectorized along the output width;
2. under it, the phase planes that channel reads, in local buffers: a zero fill and a
   branch-free copy of the in-bound part (``decompose_padding``), declared flat
   (``transform_layout`` to ``[.., rows * Wq]``) so every tap reads a contiguous run;
3. then ``dw_flat`` for the whole plane in a local buffer, declared flat too: register
   tiles of ``nvec`` vectors, each tap one contiguous vector load and one FMA with the
   broadcast weight.

A stride-2 layer reads its input with stride 2 once (into the phase planes; that copy is
left to LLVM's loop vectorizer, which deinterleaves whole vectors with permutes: 20-25 %
faster than TVM's lane-by-lane strided loads on 112 -> 56 and 56 -> 28), then runs as a
stride-1 conv over the phases. Columns ``w >= Wo`` of each flattened row are computed and
dropped (``Wq - Wo`` of ``Wq``: 2 of 16 on 14x14, 1 of 57 on 112 -> 56).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import tvm
from tvm import s_tir

if TYPE_CHECKING:
    from ..kernels.depthwise import GroupedWorkload, LoweredGrouped

__all__ = ["DW_FLAT", "DW_PAD", "DepthwiseConfig", "choose_config", "schedule_grouped", "tile_for"]

#: Names of the grouped-conv stages (the schedule finds its blocks by them).
DW_PAD, DW_FLAT = "dw_pad", "dw_flat"


@dataclass(frozen=True)
class DepthwiseConfig:
    """Tile sizes of the grouped-conv schedule.

    Attributes:
        lanes: fp32 lanes per vector (16 with AVX-512, 8 with AVX2).
        nvec: vectors of flattened positions per register tile (unrolled).
        col_phases: a column stride is split into phases when the input is copied (see
            `kernels.depthwise.grouped_conv`); else every column is computed and the
            epilogue reads every ``stride``-th.
    """

    lanes: int
    nvec: int
    col_phases: bool = True

    @property
    def p_align(self) -> int:
        """Alignment of the flattened output length."""
        return self.lanes * self.nvec


def choose_config(wl: GroupedWorkload, lanes: int, max_nvec: int = 8) -> DepthwiseConfig:
    """Column phases (measured faster than full-resolution columns on every MobileNetV2
    stride-2 layer: 112 -> 56 0.18 vs 0.26 ms, 14 -> 7 0.044 vs 0.049 ms), then the register
    tile with the fewest computed vectors (`tile_for`)."""
    return replace(tile_for(wl.flat_len(True), lanes, max_nvec), col_phases=True)


def tile_for(flat_len: int, lanes: int, max_nvec: int = 8) -> DepthwiseConfig:
    """The register tile with the fewest computed vectors (garbage included), the largest
    among equals: 7x7 (61 positions) -> 4 vectors in one tile, 14x14 (222) -> 2 x 7."""
    best: tuple[int, int] | None = None
    for nvec in range(1, max_nvec + 1):
        total = -(-flat_len // (lanes * nvec)) * nvec
        if best is None or total < best[0] or (total == best[0] and nvec > best[1]):
            best = (total, nvec)
    assert best is not None
    return DepthwiseConfig(lanes, best[1])


def schedule_grouped(
    lg: LoweredGrouped, cfg: DepthwiseConfig, func: tvm.tirx.PrimFunc | None = None
) -> s_tir.Schedule:
    """Apply the schedule (see the module docstring) to a lowered grouped-conv group.

    Args:
        lg: the lowered group.
        cfg: the tile; ``cfg.p_align`` must be the alignment `lg` was lowered with.
        func: the PrimFunc to schedule (default: ``lg.prim_func()``).

    Returns:
        The schedule; build ``sch.mod``.
    """
    sch = s_tir.Schedule(func if func is not None else lg.prim_func())
    out_names = {t.op.name for t in lg.outputs}
    for name in lg.stage_names:
        if name not in out_names:
            sch.compute_inline(sch.get_sblock(name))
    (final,) = [sch.get_sblock(n) for n in lg.stage_names if n in out_names]
    n, m, _h, _w = sch.get_loops(final)
    conv = sch.get_sblock(DW_FLAT)
    sch.compute_at(conv, m, preserve_unit_loops=True)
    pads = [sch.get_sblock(name) for name in lg.pad_names]
    for pad in pads:
        sch.compute_at(pad, m, preserve_unit_loops=True)
        sch.set_scope(pad, 0, "local")
    sch.set_scope(conv, 0, "local")
    wq, pa = lg.wq, cfg.p_align
    for pad in pads:
        sch.transform_layout(pad, ("write", 0), lambda n_, c, r, col: (n_, c, r * wq + col))
    ln = cfg.lanes
    sch.transform_layout(conv, ("write", 0), lambda n_, m_, t, j, v: (n_, m_, t * pa + j * ln + v))

    # Output stages: one row at a time, vectorized along the width.
    if cfg.col_phases or lg.conv.strides[1] == 1:
        sch.vectorize(sch.get_loops(final)[-1])

    # The conv: register tiles of nvec vectors (all taps unrolled in the TE), a reduction
    # only over the input channels of a group.
    _n, _m, t, pt, pv, *red = sch.get_loops(conv)[2:]
    if red:
        sch.reorder(t, red[0], pt, pv)
    sch.unroll(pt)
    sch.vectorize(pv)
    sch.parallel(sch.fuse(n, m))
    if red:
        sch.decompose_reduction(conv, red[0])

    # Padding: zero fill, then a branch-free copy of the in-bound values.
    for pad in pads:
        try:
            fill = sch.decompose_padding(pad, sch.get_loops(pad)[1])
            sch.vectorize(sch.get_loops(fill)[-1])
        except s_tir.ScheduleError as e:
            if "trivial" not in str(e):
                continue  # keep the guarded scalar copy (a vector one could read outside)
            # else a phase plane without padding: a plain copy
        if cfg.col_phases and lg.conv.strides[1] > 1:
            continue  # a strided read: LLVM's loop vectorizer deinterleaves whole vectors
        sch.vectorize(sch.get_loops(pad)[-1])
    return sch
