"""QDense family: ``lepton.QMatMul`` (``a [..., K]`` uint8/int8 times constant int8
``b [K, N]``, int32 bias) with its float epilogue, as one int8 kernel
(`schedules.x86_qdense`).

A's leading dims are flattened into rows (the kernel declares every tensor flat: the same
memory). The epilogue is the QConv family's (`kernels.qconv.lower_epilogue`): Relu/Clip/Gelu
and the other unary ops, binary ops with a float side tensor or a constant scalar,
``DequantizeLinear`` of a side tensor, ``QuantizeLinear`` to uint8/int8.

Kernel parameters: a, a_scale, a_zero_point, b packed (`x86_qdense.pack_weights`), b again as
per-column sums (for the zero-point compensation), b_scale, the bias if present, the
epilogue's side tensors. Refused (`LoweringError`): b not 2-D, dynamic shapes, a zero point
or scale that is not a scalar, ops before the QMatMul or outside the epilogue table.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from lepton_compiler.ir import DType, Graph, Node

from ..schedules.x86_qdense import (
    QDenseWorkload,
    choose_qdense_tile,
    pack_weights,
    qdense_func,
    weight_sums,
)
from ..te_ops import LoweringError
from ..vnni import has_vnni
from . import KernelPlan
from .qconv import anchor_of, body_input, check_scalars, lower_epilogue, static_shape, threads_of

NAME = "qdense"
ANCHORS = ("lepton.QMatMul",)


def plan(fused: Node, target: Any) -> KernelPlan:
    """Lower a QMatMul group (see the module docstring)."""
    body: Graph = fused.attrs["body"]
    anchor = anchor_of(body, "lepton.QMatMul")
    wl = qdense_workload(anchor)
    position = {b: i for i, b in enumerate(body.inputs)}
    a_v, as_v, az_v, b_v, bs_v = (body_input(anchor.inputs[i], position) for i in range(5))
    bias_v = anchor.inputs[5] if len(anchor.inputs) > 5 else None
    if bias_v is not None:
        bias_v = body_input(bias_v, position)
    a_dtype = check_scalars(a_v, as_v, az_v)
    epi, epi_inputs = lower_epilogue(fused, anchor, static_shape(anchor.outputs[0]))
    tile = choose_qdense_tile(wl, threads_of(target))
    vnni = has_vnni(target)
    nb = tile.nb
    nblk = -(-wl.n // nb)
    indices = [position[a_v], position[as_v], position[az_v], position[b_v], position[b_v],
               position[bs_v]]  # fmt: skip
    shapes: list[tuple[int, ...]] = [
        (wl.rows * wl.k,), (1,), (1,), (nblk * wl.k4 * nb,), (nblk * nb,),
        (wl.n if wl.per_channel else 1,),
    ]  # fmt: skip
    dtypes = [a_dtype, "float32", a_dtype, "int32", "int32", "float32"]
    if bias_v is not None:
        indices.append(position[bias_v])
        shapes.append((wl.n,))
        dtypes.append("int32")
    for v, op in zip(epi_inputs, epi.operands, strict=True):
        indices.append(position[v])
        shapes.append((op.size,))
        dtypes.append(op.dtype)
    packs: dict[int, Callable[[np.ndarray], np.ndarray]] = {
        3: lambda b: pack_weights(b, wl, nb).reshape(-1),
        4: lambda b: weight_sums(b, wl, nb),
    }

    def make() -> Any:
        return qdense_func(wl, tile, epi, vnni, a_dtype)

    return KernelPlan(
        key=("qdense", wl, tile, vnni, a_dtype, epi.key),
        make=make,
        input_indices=indices,
        param_shapes=shapes,
        output_shapes=[static_shape(o) for o in body.outputs],
        kernel_output_shapes=[(wl.rows * wl.n,)] * len(body.outputs),
        packs=packs,
        config=tile,
        param_dtypes=dtypes,
        output_dtypes=list(epi.output_dtypes),
    )


def qdense_workload(node: Node) -> QDenseWorkload:
    """Read a ``lepton.QMatMul`` node into a `QDenseWorkload`.

    Raises:
        LoweringError: b not a 2-D int8 tensor, A of rank < 1, dynamic shapes, or operands of
            unexpected shapes.
    """
    a, b, bs = node.inputs[0], node.inputs[3], node.inputs[4]
    if a is None or b is None or bs is None:
        raise LoweringError(f"{node!r}: missing operand")
    a_shape, b_shape = static_shape(a), static_shape(b)
    if len(b_shape) != 2 or b.dtype is not DType.INT8:
        raise LoweringError(f"{node!r}: b must be a 2-D int8 tensor")
    if len(a_shape) < 1:
        raise LoweringError(f"{node!r}: a must have a K dimension")
    k, n = b_shape
    if a_shape[-1] != k:
        raise LoweringError(f"{node!r}: inner dimensions differ ({a_shape[-1]} vs {k})")
    rows = math.prod(a_shape[:-1])
    if min(rows, k, n) < 1:
        raise LoweringError(f"{node!r}: empty product")
    bs_n = math.prod(static_shape(bs))
    if bs_n not in (1, n) or bs.dtype is not DType.FLOAT32:
        raise LoweringError(f"{node!r}: b_scale must be float32 [N] or a scalar")
    bias = node.inputs[5] if len(node.inputs) > 5 else None
    if bias is not None and (static_shape(bias) != (n,) or bias.dtype is not DType.INT32):
        raise LoweringError(f"{node!r}: bias must be int32 [N]")
    return QDenseWorkload(rows=rows, k=k, n=n, signed=a.dtype is DType.INT8,
                          has_bias=bias is not None, per_channel=bs_n == n > 1)  # fmt: skip
