"""Layout family: ``Transpose`` as a TIR copy kernel, for permutations that keep the last axis
in place (BERT's head split ``[B, S, H, D] -> [B, H, S, D]`` and merge back).

Such a transpose is a gather of contiguous runs: the trailing axes the permutation leaves in
place form one run of ``R`` elements, copied with vector loads and stores, and each output
run's source offset is index arithmetic on the leading output index. Both sides stream.

Why a kernel at all: measured on the 2-core machine, the copy itself is no faster than
NumPy's (``[1, 128, 12, 64]``: 13 us vs 13-17 us for ``np.ascontiguousarray`` of the
transposed view). The gain is in the executor: a reference Transpose returns a strided NumPy
view, which the next kernel must copy twice (to a contiguous array, then into its staging
tensor); a Transpose kernel reads its input from the previous kernel's buffer and writes a
buffer the next kernel reads, all zero-copy, so the head split/merge costs one copy instead of
two. Permutations that move the last axis (a strided 2-D transpose inside) run as the
element-wise family's parallel copy loop (`te_movement`; gathers, no run to copy whole).
"""

from __future__ import annotations

import math
from typing import Any

from lepton_compiler.ir import Node

from ..schedules.x86_layout import TransposeShape, transpose_func
from ..te_ops import LoweringError
from . import KernelPlan
from .attention import anchor_group, flat_plan, parallel_tasks, static_shape

NAME = "layout"
ANCHORS = ("Transpose",)


def plan(fused: Node, target: Any) -> KernelPlan:
    """Plan a lone ``Transpose`` whose permutation keeps the last axis in place."""
    group = anchor_group(fused, ANCHORS)
    if group.epilogue is not None:
        raise LoweringError("a Transpose group with an epilogue is not supported")
    node, position = group.anchor, group.position
    x = static_shape(node.inputs[0] if node.inputs else None, "input")
    rank = len(x)
    perm = [int(p) for p in node.attrs.get("perm") or reversed(range(rank))]
    if sorted(perm) != list(range(rank)):
        raise LoweringError(f"{node!r}: perm {perm} is not a permutation of {rank} axes")
    keep = 0  # trailing axes left in place
    while keep < rank and perm[rank - 1 - keep] == rank - 1 - keep:
        keep += 1
    if keep == 0:  # a strided transpose inside: the generic copy loop
        from .elementwise import plan as copy_plan

        return copy_plan(fused, target)
    if keep == rank:
        raise LoweringError(f"{node!r}: identity permutation (a copy; left to the executor)")
    out = tuple(x[p] for p in perm)
    if static_shape(node.outputs[0], "output") != out:
        raise LoweringError(f"{node!r}: output {node.outputs[0].shape}, expected {out}")
    lead = rank - keep
    run = math.prod(x[lead:])
    in_strides = [math.prod(x[i + 1 :]) for i in range(rank)]
    shape = TransposeShape(
        out_lead=out[:lead],
        src_strides=tuple(in_strides[p] for p in perm[:lead]),
        run=run,
        parallel=parallel_tasks(math.prod(x), math.prod(out[:lead])) > 1,
    )
    return flat_plan(("transpose", shape), lambda: transpose_func(shape),
                     [(position[node.inputs[0]], x)], out, shape)  # type: ignore[index]  # fmt: skip
