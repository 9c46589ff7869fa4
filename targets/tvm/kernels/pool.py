"""Pool family: 2-D ``MaxPool`` and ``AveragePool`` (NCHW; strides, dilations, explicit or
automatic padding, ``ceil_mode``, ``count_include_pad`` either way) and ``GlobalAveragePool`` /
``GlobalMaxPool`` (any rank >= 3) as TIR kernels (`schedules.x86_pool`).

The window geometry (output size, padding per side, ceil-mode rule) comes from the reference
kernel's own `_Geometry`, so both agree by construction. An element-wise epilogue fused
after the pool (`attention.anchor_group`) runs as each output is stored. Refused: MaxPool's
Indices output, windowed pools that are not 2-D, non-float32 data.
"""

from __future__ import annotations

import math
from typing import Any

from lepton_compiler.ir import Node, TensorType
from lepton_compiler.ops.kernels.pool import _Geometry

from ..schedules.x86_conv import vector_lanes
from ..schedules.x86_pool import PoolShape, global_pool_func, pool_func
from ..te_ops import LoweringError
from . import KernelPlan
from .attention import anchor_group, flat_plan, parallel_tasks, static_shape

NAME = "pool"
ANCHORS = ("MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool")


def plan(fused: Node, target: Any) -> KernelPlan:
    """Plan a lone pooling node."""
    group = anchor_group(fused, ANCHORS, int_output=True)
    node, position, epi = group.anchor, group.position, group.epilogue
    x = static_shape(node.inputs[0] if node.inputs else None, "X")
    out = static_shape(node.outputs[0], "output")
    lanes = vector_lanes(target)
    inputs = [(position[node.inputs[0]], x), *group.operands]  # type: ignore[index]
    if node.op.startswith("Global"):
        if len(x) < 3:
            raise LoweringError(f"{node!r}: {node.op} needs [N, C, *spatial], got {x}")
        planes, size = x[0] * x[1], math.prod(x[2:])
        if out != (x[0], x[1], *([1] * (len(x) - 2))):
            raise LoweringError(f"{node!r}: output {out} for input {x}")
        if _output_dtype(fused) != "float32":
            raise LoweringError(f"{fused!r}: a global pool storing integers is not supported")
        is_max = node.op == "GlobalMaxPool"
        tasks = parallel_tasks(planes * size, planes)
        key = ("global_pool", planes, size, is_max, lanes, tasks)
        return flat_plan((*key, group.epilogue_key),
                         lambda: global_pool_func(planes, size, is_max, lanes, tasks, epi),
                         inputs, out, key)  # fmt: skip
    if len(x) != 4:
        raise LoweringError(f"{node!r}: only 2-D (NCHW) {node.op} is supported, X is {x}")
    try:
        geo = _Geometry(x[2:], node.attrs)
    except ValueError as e:
        raise LoweringError(f"{node!r}: {e}") from e
    if out != (x[0], x[1], *geo.out):
        raise LoweringError(f"{node!r}: output {out}, geometry gives {geo.out}")
    is_max = node.op == "MaxPool"
    # input copied once, each output reads every tap
    work = x[0] * x[1] * (x[2] * x[3] + math.prod(geo.out) * math.prod(geo.kernel))
    shape = PoolShape(
        planes=x[0] * x[1], h=x[2], w=x[3], ho=geo.out[0], wo=geo.out[1],
        kernel=(geo.kernel[0], geo.kernel[1]), strides=(geo.strides[0], geo.strides[1]),
        dilations=(geo.dilations[0], geo.dilations[1]), begin=(geo.begin[0], geo.begin[1]),
        end=(geo.end[0], geo.end[1]), is_max=is_max,
        include_pad=bool(node.attrs.get("count_include_pad", 0)) and not is_max, lanes=lanes,
        parallel=parallel_tasks(work, x[0] * x[1]) > 1,
    )  # fmt: skip
    out_dtype = _output_dtype(fused)
    plan = flat_plan(("pool", shape, group.epilogue_key, out_dtype),
                     lambda: pool_func(shape, epi, out_dtype), inputs, out, shape)  # fmt: skip
    plan.output_dtypes = [out_dtype]
    return plan


def _output_dtype(fused: Node) -> str:
    """float32, or uint8/int8 when the epilogue ends by requantizing (QuantizeLinear)."""
    body = list(fused.attrs["body"])
    v = fused.outputs[0]
    dtype = v.dtype.numpy.name if isinstance(v.type, TensorType) else "float32"
    if dtype == "float32":
        return dtype
    if dtype in ("uint8", "int8") and body[-1].op == "QuantizeLinear":
        return dtype
    raise LoweringError(f"{fused!r}: a pool group storing {dtype} is not supported")
