"""Reduce family: ``ReduceMean``, ``ReduceSum``, ``ReduceMax``, ``ReduceMin``, ``ReduceProd``,
``ReduceSumSquare``, ``ReduceL1``, ``ReduceL2``, ``ReduceLogSum`` and ``ReduceLogSumExp``
(computed as the reference does, ``log(sum(exp(x)))``) over constant axes (attribute before
opset 18, or ``ReduceSum``'s input from opset 13), ``keepdims`` either way, float32, with an
element-wise epilogue (`attention.anchor_group`) applied as each result is stored; and
``ArgMax``/``ArgMin`` (one axis, ``select_last_index`` either way, int64 indices).

The input is viewed as ``[outer, reduced, inner]`` blocks: consecutive axes of the same kind
merge (``[N, C, H, W]`` reduced over ``H, W`` is ``[N*C, H*W, 1]``; over ``C`` it is
``[N, C, H*W]``), so any set of axes becomes at most a few loops. Schedule
(`schedules.x86_reduce`): parallel over the kept positions; with kept innermost elements
(``inner > 1``) the reduction runs across whole vectors of them; with the innermost axis
reduced, each output accumulates a contiguous run in ``lanes`` partial sums that are added at
the end. ``ReduceMean`` multiplies the sum by ``1 / count`` once. Refused: other dtypes,
computed axes, ``noop_with_empty_axes`` with no axes.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from lepton_compiler.ir import DType, Node

from ..schedules.x86_conv import vector_lanes
from ..schedules.x86_reduce import ArgShape, ReduceShape, arg_func, reduce_func
from ..te_ops import LoweringError
from . import KernelPlan
from .attention import anchor_group, flat_plan, parallel_tasks, static_shape

NAME = "reduce"
ANCHORS = (
    "ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceSumSquare",
    "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ArgMax", "ArgMin",
)  # fmt: skip


def _axes(node: Node, fused: Node, rank: int) -> list[int]:
    """The reduced axes, normalized and sorted (every axis when none are given)."""
    axes: Any = node.attrs.get("axes")
    if axes is None and len(node.inputs) > 1 and node.inputs[1] is not None:
        body = fused.attrs["body"]
        outer = dict(zip(body.inputs, fused.inputs, strict=True))
        src = outer.get(node.inputs[1]) or node.inputs[1]
        if src.const is None:
            raise LoweringError(f"{node!r}: the axes must be a constant")
        axes = np.asarray(src.const).astype(np.int64).ravel().tolist()
    if not axes:
        if int(node.attrs.get("noop_with_empty_axes", 0)):
            raise LoweringError(f"{node!r}: no axes with noop_with_empty_axes (a copy)")
        return list(range(rank))
    out = sorted({int(a) + rank if int(a) < 0 else int(a) for a in axes})
    if any(not 0 <= a < rank for a in out):
        raise LoweringError(f"{node!r}: axes {axes} out of range for rank {rank}")
    return out


def blocks(shape: tuple[int, ...], axes: list[int]) -> list[tuple[bool, int]]:
    """``shape`` as runs of consecutive axes of one kind: (reduced, size) per run, size-1
    axes dropped (they change nothing)."""
    runs: list[tuple[bool, int]] = []
    for d, n in enumerate(shape):
        if n == 1:
            continue
        red = d in axes
        if runs and runs[-1][0] == red:
            runs[-1] = (red, runs[-1][1] * n)
        else:
            runs.append((red, n))
    return runs


def plan(fused: Node, target: Any) -> KernelPlan:
    """Plan a lone reduction (see the module docstring)."""
    group = anchor_group(fused, ANCHORS)
    node, position = group.anchor, group.position
    if node.op in ("ArgMax", "ArgMin"):
        return _plan_arg(group, target)
    x = static_shape(node.inputs[0] if node.inputs else None, "data")
    out = static_shape(node.outputs[0], "reduced")
    axes = _axes(node, fused, len(x))
    keep = [n for d, n in enumerate(x) if d not in axes]
    want = tuple(1 if d in axes else n for d, n in enumerate(x))
    if out not in (want, tuple(keep)) or math.prod(out) != math.prod(keep):
        raise LoweringError(f"{node!r}: output {out} for input {x} reduced over {axes}")
    if math.prod(x) == 0:
        raise LoweringError(f"{node!r}: an empty input")
    lanes = vector_lanes(target)
    runs = blocks(x, axes)
    shape = ReduceShape(
        op=node.op,
        runs=tuple(runs),
        lanes=lanes,
        tasks=parallel_tasks(math.prod(x), max(1, math.prod(keep) // max(1, _inner(runs)))),
    )
    inputs = [(position[node.inputs[0]], x), *group.operands]  # type: ignore[index]
    return flat_plan(("reduce", shape, group.epilogue_key),
                     lambda: reduce_func(shape, group.epilogue), inputs, out, shape)  # fmt: skip


def _inner(runs: list[tuple[bool, int]]) -> int:
    """Kept elements after the last reduced run (1 when the innermost axis is reduced)."""
    return runs[-1][1] if runs and not runs[-1][0] else 1


def _plan_arg(group: Any, target: Any) -> KernelPlan:
    """``ArgMax``/``ArgMin`` over one axis (int64 indices; ``keepdims`` either way)."""
    node, position = group.anchor, group.position
    if group.epilogue is not None:
        raise LoweringError(f"{node!r}: an epilogue after {node.op} is not supported")
    x = static_shape(node.inputs[0] if node.inputs else None, "data")
    if not x or math.prod(x) == 0:
        raise LoweringError(f"{node!r}: a scalar or empty input")
    axis = int(node.attrs.get("axis", 0))
    axis = axis + len(x) if axis < 0 else axis
    if not 0 <= axis < len(x):
        raise LoweringError(f"{node!r}: axis {axis} out of range")
    out = node.outputs[0]
    want = (*x[:axis], *([1] if int(node.attrs.get("keepdims", 1)) else []), *x[axis + 1 :])
    if out.shape is None or tuple(out.shape) != want or out.dtype is not DType.INT64:
        raise LoweringError(f"{node!r}: output {out.shape} {out.dtype}, expected {want} int64")
    outer, n, inner = math.prod(x[:axis]), x[axis], math.prod(x[axis + 1 :])
    shape = ArgShape(
        outer=outer, n=n, inner=inner, is_max=node.op == "ArgMax",
        last=bool(int(node.attrs.get("select_last_index", 0))), lanes=vector_lanes(target),
        tasks=parallel_tasks(outer * n * inner, outer),
    )  # fmt: skip
    return KernelPlan(
        key=("arg", shape),
        make=lambda: arg_func(shape),
        input_indices=[position[node.inputs[0]]],
        param_shapes=[(math.prod(x),)],
        output_shapes=[want],
        kernel_output_shapes=[(outer * inner,)],
        config=shape,
        param_dtypes=["float32"],
        output_dtypes=["int64"],
    )
