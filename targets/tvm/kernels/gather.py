"""Gather family: ``Gather`` along axis 0 of a float32 table with integer indices (embedding
lookups: BERT's word embeddings, ``[vocab, hidden]`` indexed by ``[batch, seq]`` token ids).

Each output row is one contiguous row of the table: the kernel is a parallel loop over the
index positions and a vectorized copy of ``prod(table.shape[1:])`` values. Negative indices
count from the end, as ONNX defines; an index outside ``[-n, n)`` is clamped (ONNX leaves it
undefined; the reference kernel raises). Other axes, non-float tables and groups with an
epilogue are refused (they keep the reference kernel).
"""

from __future__ import annotations

import math
from typing import Any

from tvm import s_tir, te, tirx

from lepton_compiler.ir import DType, Node

from ..schedules.x86_conv import vector_lanes
from ..te_ops import LoweringError
from . import KernelPlan

NAME = "gather"
ANCHORS = ("Gather",)

_INDEX_DTYPES = {DType.INT64: "int64", DType.INT32: "int32"}


def plan(fused: Node, target: Any) -> KernelPlan:
    """Plan a lone axis-0 ``Gather`` (see the module docstring)."""
    body = list(fused.attrs["body"])
    if len(body) != 1 or body[0].op != "Gather":
        raise LoweringError("a Gather group with an epilogue is not supported")
    node = body[0]
    if int(node.attr("axis", 0)) != 0:
        raise LoweringError(f"{node!r}: only axis 0 is supported")
    table_v, index_v = node.inputs[0], node.inputs[1]
    if table_v is None or index_v is None:
        raise LoweringError(f"{node!r}: needs data and indices")
    if table_v.dtype is not DType.FLOAT32:
        raise LoweringError(f"{node!r}: only a float32 table is supported")
    index_dtype = _INDEX_DTYPES.get(index_v.dtype)  # type: ignore[arg-type]
    if index_dtype is None:
        raise LoweringError(f"{node!r}: indices must be int32 or int64")
    table, index = table_v.shape, index_v.shape
    if table is None or index is None or not all(isinstance(d, int) for d in (*table, *index)):
        raise LoweringError(f"{node!r}: needs static shapes")
    if len(table) < 1:
        raise LoweringError(f"{node!r}: a scalar table")
    rows, row = int(table[0]), math.prod(table[1:])
    count = max(1, math.prod(index))
    lanes = vector_lanes(target)
    position = {v: i for i, v in enumerate(fused.attrs["body"].inputs)}
    out_shape = (*[int(d) for d in index], *[int(d) for d in table[1:]])

    def make() -> Any:
        data = te.placeholder((rows, row), "float32", name="data")
        idx = te.placeholder((count,), index_dtype, name="indices")

        def row_of(i: Any) -> Any:
            k = idx[i].astype("int64")
            k = tirx.Select(k < 0, k + rows, k)
            return tirx.max(tirx.min(k, tirx.const(rows - 1, "int64")), tirx.const(0, "int64"))

        out = te.compute((count, row), lambda i, j: data[row_of(i), j], name="gather")
        sch = s_tir.Schedule(te.create_prim_func([data, idx, out]))
        blk = sch.get_sblock("gather")
        i, j = sch.get_loops(blk)
        if row % lanes == 0:
            _, jv = sch.split(j, [None, lanes])
            sch.vectorize(jv)
        if count * row >= 1 << 15:
            sch.parallel(i)
        return sch

    return KernelPlan(
        key=("gather", rows, row, count, index_dtype, lanes),
        make=make,
        input_indices=[position[table_v], position[index_v]],
        param_shapes=[(rows, row), (count,)],
        output_shapes=[out_shape],
        kernel_output_shapes=[(count, row)],
        param_dtypes=["float32", index_dtype],
    )
