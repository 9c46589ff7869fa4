"""x86 schedule for the channel-vector conv form (`te_ops.conv2d_cvec`): pointwise and
small-spatial convs vectorized over output channels, with pre-packed weights.

Why: the other forms (`x86_conv`) vectorize over output positions; on 7x7 (49 positions)
or 14x14 (196, rows of 14) a vector of positions is partly empty and the tiles are few.
Here a register tile is ``hb x wb`` output positions times ``mv`` vectors of ``lanes``
output channels (``nb = mv * lanes`` channels, the packing block of the weights
``[Mpad / nb, C, KH, KW, nb]``): each reduction step (one input channel, one tap) does
``mv`` contiguous weight loads, ``hb * wb`` broadcasts of input values (any stride: they are
scalar loads) and ``hb * wb * mv`` FMAs, with no wasted lane as long as the positions of a
tile divide the output (7 | 49, 7 | 196...).

The output stays NCHW: the tile is written transposed by the output stages (crop, bias,
activations, residual), which run right after the tile's reduction while it is still in
L1 (scalar stores, ``hb * wb * nb`` per tile; cheap next to the tile's ``C * KH * KW``
reduction steps when ``C`` is large, which `choose_cvec_config`'s callers check).

Loop nest: ``(n, m block, row block, column block) [parallel, fused] / c, kh, kw /
rows [unroll] / columns [unroll] / vectors [unroll] / lanes [vectorize]``; m blocks outside,
so consecutive tiles of a thread share one weight panel. Padding, when the conv has any, is
an ``xpad`` copy stage, parallel over (batch, channel).

`vectorize`/`parallel` are applied before `decompose_reduction` (the other order is a
ScheduleError in TVM 0.27).
"""

from __future__ import annotations

from dataclasses import dataclass

import tvm
from tvm import s_tir

from ..te_ops import CONV_CVEC, XPAD, ConvWorkload, LoweredGroup

__all__ = ["CvecConfig", "choose_cvec_config", "schedule_cvec"]


@dataclass(frozen=True)
class CvecConfig:
    """Register tile of the channel-vector conv.

    Attributes:
        lanes: fp32 lanes per vector.
        mv: vectors of output channels per tile (unrolled); the weights are packed by
            ``nb = mv * lanes`` channels.
        hb: output rows per tile (unrolled; divides the output height).
        wb: output columns per tile (unrolled; divides the output width).
        unroll_taps: unroll the kernel-tap loops.
    """

    lanes: int
    mv: int
    hb: int
    wb: int
    unroll_taps: bool = True

    @property
    def nb(self) -> int:
        """Output channels per tile (and per packed weight block)."""
        return self.mv * self.lanes

    @property
    def positions(self) -> int:
        """Output positions per tile."""
        return self.hb * self.wb


#: Vector registers with AVX-512 (16 with AVX2): accumulators + weight vectors + a broadcast.
def _registers(lanes: int) -> int:
    return 32 if lanes >= 16 else 16


def choose_cvec_config(wl: ConvWorkload, lanes: int, threads: int = 2) -> CvecConfig | None:
    """Pick the tile, or None when no tile of at least 4 positions divides the output.

    Scored on: output channels wasted by padding M to whole blocks (it matters most),
    accumulators in flight (14 hide the FMA latency), loads per FMA (``(positions + mv) /
    (positions * mv)``; a broadcast and a vector load per 1.5 FMAs are cheap next to the
    FMAs) and enough tiles for every thread. At most 24 accumulators (28 spilled).
    Measured (ratio to ORT's time, minima; 2 threads on Zen 4): M = 160 on 7x7, 2 vectors x
    7 positions 0.47-0.82 vs 3 x 7 (17 % padded channels) 0.55-0.99; M = 256 on 14x14 (1x1
    and 3x3) 2 x 7 or 4 x (2x2) 0.49 / 1.52 vs 3 x 7 0.59 / 1.73; no difference without
    padding (96->576 on 14x14, 512->512 3x3 on 7x7).
    """
    ho, wo = wl.out_hw
    regs = _registers(lanes)
    best: tuple[float, CvecConfig] | None = None
    for mv in (1, 2, 3, 4):
        nb = mv * lanes
        mpad = -(-wl.m // nb) * nb
        for wb in range(1, min(wo, 16) + 1):
            if wo % wb:
                continue
            for hb in range(1, min(ho, 16) + 1):
                pos = hb * wb
                acc = pos * mv
                if ho % hb or pos < 4 or acc > 24 or acc + mv + 1 > regs:
                    continue
                tiles = wl.n * (mpad // nb) * (ho // hb) * (wo // wb)
                useful = wl.m / mpad
                intensity = acc / (pos + mv)
                score = (
                    useful
                    * min(1.0, acc / 14)
                    * min(1.0, intensity / 1.5)
                    * min(1.0, tiles / (4 * threads))
                    + 1e-3 * acc
                    + 1e-4 * wb
                )
                if best is None or score > best[0] + 1e-9:
                    best = (score, CvecConfig(lanes, mv, hb, wb, wl.kh * wl.kw <= 9))
    return None if best is None else best[1]


def schedule_cvec(
    lg: LoweredGroup, cfg: CvecConfig, func: tvm.tirx.PrimFunc | None = None
) -> s_tir.Schedule:
    """Apply the channel-vector schedule (module docstring) to a group lowered with
    ``lower_group(..., cvec=cfg.nb)``.

    Returns:
        The schedule; build ``sch.mod``.
    """
    assert lg.conv is not None, "not a conv group"
    sch = s_tir.Schedule(func if func is not None else lg.prim_func())
    out_names = {t.op.name for t in lg.outputs}
    for name in lg.stage_names:
        if name not in out_names:
            sch.compute_inline(sch.get_sblock(name))
    blk = sch.get_sblock(CONV_CVEC)
    n, mb, oh, ow, j, rc, rkh, rkw = sch.get_loops(blk)
    ho, hi = sch.split(oh, [None, cfg.hb])
    wo, wi = sch.split(ow, [None, cfg.wb])
    jv, jl = sch.split(j, [None, cfg.lanes])
    tiles = (n, mb, ho, wo)
    sch.reorder(*tiles, rc, rkh, rkw, hi, wi, jv, jl)
    sch.set_scope(blk, 0, "local")
    for name in lg.stage_names:
        if name in out_names:
            sch.reverse_compute_at(sch.get_sblock(name), tiles[-1])
    sch.parallel(sch.fuse(*tiles))
    sch.unroll(hi)
    sch.unroll(wi)
    sch.unroll(jv)
    if cfg.unroll_taps:
        sch.unroll(rkw)
        sch.unroll(rkh)
    sch.vectorize(jl)
    sch.decompose_reduction(blk, rc)
    if any(lg.conv.pads):
        xb = sch.get_sblock(XPAD)
        xn, xc, _xh, _xw = sch.get_loops(xb)
        sch.parallel(sch.fuse(xn, xc))
    return sch
