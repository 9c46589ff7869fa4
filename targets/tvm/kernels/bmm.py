"""Batched products of two activations: ``MatMul`` with a B of rank >= 3 (or a 2-D B with a
batched A whose leading dims do not flatten into rows), NumPy broadcasting of the leading
dims, and an element-wise epilogue (`attention.anchor_group`). Reached through the dense
family, which owns ``MatMul`` and hands it such groups. Kernel: `schedules.x86_bmm`.

Refused: 1-D operands (the vector forms of MatMul), non-float32 tensors, symbolic shapes.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from lepton_compiler.ir import Node

from ..schedules.x86_bmm import BmmShape, bmm_func
from ..schedules.x86_conv import vector_lanes
from ..te_ops import LoweringError
from . import KernelPlan
from .attention import anchor_group, flat_plan, num_cores, static_shape


def batched(fused: Node) -> bool:
    """Whether the group's MatMul has a B of rank >= 3 (a product per batch)."""
    anchor = next(iter(fused.attrs["body"]), None)
    if anchor is None or anchor.op != "MatMul" or anchor.inputs[1] is None:
        return False
    shape = anchor.inputs[1].shape
    return shape is not None and len(shape) >= 3


def plan(fused: Node, target: Any) -> KernelPlan:
    """Plan a batched MatMul group."""
    group = anchor_group(fused, ("MatMul",))
    node, position = group.anchor, group.position
    xa = static_shape(node.inputs[0], "A")
    xb = static_shape(node.inputs[1], "B")
    if len(xa) < 2 or len(xb) < 2:
        raise LoweringError(f"{node!r}: 1-D operands are not supported")
    m, k = xa[-2:]
    kb, n = xb[-2:]
    if k != kb:
        raise LoweringError(f"{node!r}: inner dimensions differ ({k} vs {kb})")
    try:
        lead = tuple(int(d) for d in np.broadcast_shapes(xa[:-2], xb[:-2]))
    except ValueError as e:
        raise LoweringError(f"{node!r}: leading dims {xa[:-2]}, {xb[:-2]} differ") from e
    out = static_shape(node.outputs[0], "output")
    if out != (*lead, m, n):
        raise LoweringError(f"{node!r}: output {out}, expected {(*lead, m, n)}")
    if min(m, n, k, math.prod(lead)) < 1:
        raise LoweringError(f"{node!r}: empty product")
    shape = BmmShape(
        lead=lead, a_lead=xa[:-2], b_lead=xb[:-2], m=m, k=k, n=n,
        lanes=vector_lanes(target), tasks=4 * num_cores(target),
    )  # fmt: skip
    inputs = [(position[node.inputs[0]], xa), (position[node.inputs[1]], xb), *group.operands]  # type: ignore[index]
    return flat_plan(("bmm", shape, group.epilogue_key),
                     lambda: bmm_func(shape, group.epilogue), inputs, out, shape)  # fmt: skip
