"""Pool family: 2-D ``MaxPool`` and ``AveragePool`` (NCHW; strides, dilations, explicit or
automatic padding, ``ceil_mode``, ``count_include_pad`` either way) and ``GlobalAveragePool`` /
``GlobalMaxPool`` (any rank >= 3) as TIR kernels (`schedules.x86_pool`).

The window geometry (output size, padding per side, ceil-mode rule) comes from the reference
kernel's own `_Geometry`, so both agree by construction. An element-wise epilogue fused
after the pool (`attention.anchor_group`) runs as each output is stored.

MaxPool and GlobalMaxPool also run on uint8/int8 data (padding with the dtype's minimum), as
``quantize_before_maxpool`` leaves them in a quantized CNN: alone, storing the same dtype, or
followed by one per-tensor DequantizeLinear, storing float32 (the form of a pre-quantized
model whose pooled tensor is also read by float ops). Refused: MaxPool's Indices output,
windowed pools that are not 2-D, other data types, an 8-bit average, any other epilogue after
an 8-bit pool.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from lepton_compiler.ir import Node, TensorType, Value
from lepton_compiler.ops.kernels.pool import _Geometry

from ..schedules.x86_attention import Epilogue
from ..schedules.x86_conv import vector_lanes
from ..schedules.x86_pool import PoolShape, global_pool_func, pool_func
from ..te_elementwise import unary_builder
from ..te_ops import LoweringError
from . import KernelPlan
from .attention import AnchorGroup, anchor_group, flat_plan, parallel_tasks, static_shape

NAME = "pool"
ANCHORS = ("MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool")
_EIGHT_BIT = ("uint8", "int8")


def _dtype_name(v: Value | None) -> str:
    """`v`'s NumPy dtype name, "" when unknown."""
    return v.dtype.numpy.name if v is not None and isinstance(v.type, TensorType) else ""


def _shape(v: Value | None, what: str) -> tuple[int, ...]:
    """`v`'s static shape, whatever its dtype."""
    if v is None or v.shape is None or not all(isinstance(d, int) for d in v.shape):
        raise LoweringError(f"{what} needs a static shape")
    return tuple(int(d) for d in v.shape)


def _eight_bit_group(fused: Node) -> tuple[AnchorGroup, str, str] | None:
    """For a pool reading uint8/int8 data: the group, the data dtype and the stored dtype;
    None when the pool reads anything else (the float path takes it).

    Raises:
        LoweringError: an 8-bit average, Indices, an output of another dtype, or an epilogue
            other than one DequantizeLinear with a constant scalar scale and zero point.
    """
    body = fused.attrs["body"]
    nodes = list(body)
    node = nodes[0] if nodes else None
    if node is None or node.op not in ANCHORS or not node.inputs:
        return None
    dtype = _dtype_name(node.inputs[0])
    if dtype not in _EIGHT_BIT:
        return None
    if node.op not in ("MaxPool", "GlobalMaxPool") or len(node.outputs) != 1:
        raise LoweringError(f"{node!r}: only a single-output maximum runs on {dtype}")
    pooled = node.outputs[0]
    if _dtype_name(pooled) != dtype:
        raise LoweringError(f"{node!r}: a {dtype} pool must produce {dtype}")
    position = {v: i for i, v in enumerate(body.inputs)}
    if len(nodes) == 1 and list(body.outputs) == [pooled]:
        return AnchorGroup(node, position), dtype, dtype
    dq = nodes[1] if len(nodes) == 2 else None
    if dq is None or dq.op != "DequantizeLinear" or dq.inputs[0] is not pooled:
        raise LoweringError(f"{fused!r}: only a DequantizeLinear may follow a {dtype} pool")
    if list(body.outputs) != [dq.outputs[0]] or _shape(dq.outputs[0], "output") != _shape(
        pooled, "pool output"
    ):
        raise LoweringError(f"{fused!r}: the group's output is not the DequantizeLinear's")
    epi = _dequantize_epilogue(fused, dq, _shape(pooled, "pool output"))
    return AnchorGroup(node, position, epi), dtype, "float32"


def _dequantize_epilogue(fused: Node, dq: Node, out_shape: tuple[int, ...]) -> Epilogue:
    """The DequantizeLinear after an 8-bit pool as an epilogue (scale and zero point baked
    in; the kernel stores float32)."""
    body = fused.attrs["body"]
    outer = {b: o for b, o in zip(body.inputs, fused.inputs, strict=True) if o is not None}

    def const(v: Value | None) -> np.ndarray | None:
        src = outer.get(v, v) if v is not None else None
        return None if src is None or src.const is None else np.asarray(src.const)

    fn = unary_builder(dq, const)
    if fn is None or int(dq.attrs.get("block_size", 0) or 0):
        raise LoweringError(f"{dq!r}: needs a constant scalar scale and zero point")
    consts = tuple(
        None if c is None else tuple(c.reshape(-1).tolist()) for c in map(const, dq.inputs[1:])
    )
    return Epilogue((("DequantizeLinear", consts),), out_shape, (), lambda v, loads: fn(v))


def plan(fused: Node, target: Any) -> KernelPlan:
    """Plan a lone pooling node (see the module docstring)."""
    eight_bit = _eight_bit_group(fused)
    if eight_bit is None:
        group, dtype, stored = anchor_group(fused, ANCHORS, int_output=True), "float32", ""
        node = group.anchor
        x = static_shape(node.inputs[0] if node.inputs else None, "X")
        out = static_shape(node.outputs[0], "output")
    else:
        group, dtype, stored = eight_bit
        node = group.anchor
        x, out = _shape(node.inputs[0], "X"), _shape(node.outputs[0], "output")
    position, epi = group.position, group.epilogue
    lanes = vector_lanes(target)
    inputs = [(position[node.inputs[0]], x), *group.operands]  # type: ignore[index]
    if node.op.startswith("Global"):
        if len(x) < 3:
            raise LoweringError(f"{node!r}: {node.op} needs [N, C, *spatial], got {x}")
        planes, size = x[0] * x[1], math.prod(x[2:])
        if out != (x[0], x[1], *([1] * (len(x) - 2))):
            raise LoweringError(f"{node!r}: output {out} for input {x}")
        if dtype == "float32" and _output_dtype(fused) != "float32":
            raise LoweringError(f"{fused!r}: a global pool storing integers is not supported")
        is_max = node.op == "GlobalMaxPool"
        tasks = parallel_tasks(planes * size, planes)
        key = ("global_pool", planes, size, is_max, lanes, tasks)
        plan = flat_plan((*key, group.epilogue_key, *_dtype_key(dtype)),
                         lambda: global_pool_func(planes, size, is_max, lanes, tasks, epi, dtype),
                         inputs, out, key)  # fmt: skip
        return _with_dtypes(plan, dtype, stored)
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
    out_dtype = stored or _output_dtype(fused)
    key = ("pool", shape, group.epilogue_key, out_dtype, *_dtype_key(dtype))
    plan = flat_plan(key, lambda: pool_func(shape, epi, out_dtype, dtype), inputs, out, shape)
    plan.output_dtypes = [out_dtype]
    return _with_dtypes(plan, dtype, stored)


def _dtype_key(dtype: str) -> tuple[str, ...]:
    """The input dtype's part of a plan key: empty for float32, so float kernels keep their
    keys (and cached builds)."""
    return () if dtype == "float32" else (dtype,)


def _with_dtypes(plan: KernelPlan, dtype: str, stored: str) -> KernelPlan:
    """`plan` declaring its data parameter as `dtype` and its output as `stored` when the pool
    runs on 8-bit data (float32 plans keep the defaults)."""
    if dtype != "float32":
        plan.param_dtypes = [dtype]
        plan.output_dtypes = [stored]
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
