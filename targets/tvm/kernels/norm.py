"""Norm family: ``lepton.SkipLayerNorm`` (x + skip (+ bias), normalized over the last axis,
times gamma (+ beta)), ``LayerNormalization`` (output Y only) and ``RMSNormalization`` (no
mean subtracted, the mean of squares as the statistic) as one TIR kernel each
(`schedules.x86_norm`): rows in parallel, vectorized along the row, two-pass fp32 statistics.

``LayerNormalization`` normalizes over the axes from ``axis`` on: the kernel sees them
flattened into one row, so any axis works as long as Scale and B cover the whole normalized
shape (a Scale that broadcasts within it is refused). An element-wise epilogue fused after
the norm (`attention.anchor_group`) runs as each output is stored. Rows are split over the
thread pool only for large tensors (`attention.parallel_tasks`): BERT's 128 x 768 rows run
on the calling thread.
"""

from __future__ import annotations

import math
from typing import Any

from lepton_compiler.ir import Node, Value

from ..schedules.x86_conv import vector_lanes
from ..schedules.x86_norm import NormShape, layer_norm_func
from ..te_ops import LoweringError
from . import KernelPlan
from .attention import anchor_group, broadcast_lead, flat_plan, parallel_tasks, static_shape

NAME = "norm"
ANCHORS = ("lepton.SkipLayerNorm", "LayerNormalization", "RMSNormalization")


def _strip_ones(shape: tuple[int, ...]) -> tuple[int, ...]:
    i = 0
    while i < len(shape) and shape[i] == 1:
        i += 1
    return shape[i:]


def _per_feature(v: Value | None, norm: tuple[int, ...], what: str, node: Node) -> bool:
    """Check a gamma/beta/bias input covers the normalized shape exactly (leading ones
    allowed); False when the input is absent."""
    if v is None:
        return False
    s = static_shape(v, what)
    if _strip_ones(s) != _strip_ones(norm) or math.prod(s) != math.prod(norm):
        raise LoweringError(f"{node!r}: {what} {s} does not cover the normalized shape {norm}")
    return True


def plan(fused: Node, target: Any) -> KernelPlan:
    """Plan a lone ``lepton.SkipLayerNorm`` or ``LayerNormalization`` node."""
    group = anchor_group(fused, ANCHORS)
    node, position, epi = group.anchor, group.position, group.epilogue
    ins = list(node.inputs)
    out = static_shape(node.outputs[0], "output")
    if len(out) == 0:
        raise LoweringError(f"{node!r}: scalar output")
    if node.op in ("LayerNormalization", "RMSNormalization"):
        if len(ins) > (3 if node.op == "LayerNormalization" else 2):
            raise LoweringError(f"{node!r}: too many inputs for {node.op}")
        x = static_shape(ins[0] if ins else None, "X")
        axis = int(node.attrs.get("axis", -1))
        if not -len(x) <= axis < len(x):
            raise LoweringError(f"{node!r}: axis {axis} out of range for rank {len(x)}")
        axis %= len(x)
        if int(node.attrs.get("stash_type", 1)) != 1:
            raise LoweringError(f"{node!r}: only stash_type=1 (float32 statistics)")
        norm = x[axis:]
        lead = x[:axis]
        x_lead = lead
        skip_lead = None
        has_gamma = _per_feature(ins[1] if len(ins) > 1 else None, norm, "Scale", node)
        if not has_gamma:
            raise LoweringError(f"{node!r}: Scale is required")
        has_beta = _per_feature(ins[2] if len(ins) > 2 else None, norm, "B", node)
        has_bias = False
        eps = float(node.attrs.get("epsilon", 1e-5))
        params = [ins[0], ins[1], *([ins[2]] if has_beta else [])]
    else:
        if len(ins) < 3 or len(ins) > 5:
            raise LoweringError(f"{node!r}: SkipLayerNorm takes 3 to 5 inputs")
        x = static_shape(ins[0], "x")
        s = static_shape(ins[1], "skip")
        if len(x) == 0 or len(s) == 0 or x[-1] != s[-1]:
            raise LoweringError(f"{node!r}: x {x} and skip {s} differ in the last axis")
        norm = (out[-1],)
        if x[-1] != out[-1]:
            raise LoweringError(f"{node!r}: output {out} does not end in {x[-1]}")
        if not _per_feature(ins[2], norm, "gamma", node):
            raise LoweringError(f"{node!r}: gamma is required")
        has_beta = _per_feature(ins[3] if len(ins) > 3 else None, norm, "beta", node)
        has_bias = _per_feature(ins[4] if len(ins) > 4 else None, norm, "bias", node)
        lead = out[:-1]
        x_lead, skip_lead = x[:-1], s[:-1]
        if broadcast_lead(x_lead, skip_lead) != lead:
            raise LoweringError(f"{node!r}: x {x} and skip {s} do not broadcast to {out}")
        eps = float(node.attrs.get("epsilon", 1e-5))
        params = [ins[0], ins[1], ins[2], *([ins[3]] if has_beta else []),
                  *([ins[4]] if has_bias else [])]  # fmt: skip
    if out != (*lead, *norm):
        raise LoweringError(f"{node!r}: output {out}, expected {(*lead, *norm)}")
    rows = math.prod(lead)
    tasks = parallel_tasks(rows * math.prod(norm), rows)
    shape = NormShape(
        lead=lead, h=math.prod(norm), x_lead=x_lead, skip_lead=skip_lead, has_bias=has_bias,
        has_beta=has_beta, epsilon=eps, lanes=vector_lanes(target), tasks=tasks,
        rms=node.op == "RMSNormalization",
    )  # fmt: skip
    inputs = [(position[v], static_shape(v)) for v in params if v is not None]
    return flat_plan(("layernorm", shape, group.epilogue_key),
                     lambda: layer_norm_func(shape, epi), inputs + group.operands, out,
                     shape)  # fmt: skip
