"""x86 schedule for element-wise chains: every intermediate inlined, one parallel loop per
output, vectorized by the target's lanes where the element count allows."""

from __future__ import annotations

from tvm import s_tir

from ..te_ops import LoweredGroup

__all__ = ["schedule_elementwise_group"]


def schedule_elementwise_group(lg: LoweredGroup, lanes: int) -> s_tir.Schedule:
    """A plain schedule for a group without an anchor: one parallel, vectorized loop per
    output."""
    sch = s_tir.Schedule(lg.prim_func())
    out_names = {t.op.name for t in lg.outputs}
    for name in lg.stage_names:
        if name not in out_names:
            sch.compute_inline(sch.get_sblock(name))
    for name in lg.stage_names:
        if name not in out_names:
            continue
        blk = sch.get_sblock(name)
        loops = sch.get_loops(blk)
        if not loops:
            continue
        fused = sch.fuse(*loops)
        total = int(sch.get(fused).extent)
        if total % lanes == 0 and total >= lanes:
            outer, inner = sch.split(fused, [None, lanes])
            sch.vectorize(inner)
            sch.parallel(outer)
        else:
            sch.parallel(fused)
    return sch
