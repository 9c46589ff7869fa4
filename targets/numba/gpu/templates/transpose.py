"""Transpose: one thread per output element (grid-stride loop) reading the input element it
comes from; consecutive threads write consecutive outputs, so the stores coalesce."""

from __future__ import annotations

import math

from lepton_compiler.errors import LoweringError
from lepton_compiler.ir import Graph, Node, TensorType

from ...epilogue import static_shape
from ..emit import Constants, Lines, cuda_module_text
from . import CudaKernelSource
from .launch import flat_launch, grid_stride, unflatten

NAME = "transpose"
ANCHORS = ("Transpose",)

_DTYPES = ("FLOAT32", "FLOAT64", "INT64", "INT32")


def plan(fused: Node) -> CudaKernelSource:
    """Write the copy.

    Raises:
        LoweringError: an epilogue, a scalar, or a dtype other than float32/64, int32/64.
    """
    body: Graph = fused.attrs["body"]
    nodes = list(body)
    node = nodes[0]
    if len(nodes) != 1 or node.op != "Transpose" or node.inputs[0] not in body.inputs:
        raise LoweringError(f"{fused.name}: Transpose with an epilogue has no template")
    x = node.inputs[0]
    assert x is not None
    if not isinstance(x.type, TensorType) or x.type.dtype.name not in _DTYPES:
        raise LoweringError(f"{fused.name}: Transpose of {x.type} has no template")
    xs, ys = static_shape(x), static_shape(node.outputs[0])
    r = len(xs)
    perm = [int(p) for p in node.attrs.get("perm") or range(r - 1, -1, -1)]
    if r == 0 or 0 in xs or sorted(perm) != list(range(r)):
        raise LoweringError(f"{fused.name}: Transpose {xs} perm {perm} has no template")
    total = math.prod(ys)
    grid, block = flat_launch(total)
    code = Lines()
    names = [f"i{d}" for d in range(r)]
    grid_stride(code, total)
    unflatten(code, "t", ys, names)
    src = [""] * r
    for k, p in enumerate(perm):
        src[p] = names[k]
    code(f"out[{', '.join(names)}] = x[{', '.join(src)}]")
    dtype = str(x.type.dtype.numpy)
    doc = [
        f"Transpose {list(xs)} perm={perm} -> {list(ys)} ({dtype}).",
        "",
        f"One thread per output element (grid-stride loop); launch grid={grid}, block={block}.",
    ]
    return CudaKernelSource(
        name="transpose",
        source=cuda_module_text(doc, "transpose", ["x", "out"], code, Constants()),
        grid=grid,
        block=block,
        input_indices=[list(body.inputs).index(x)],
        param_shapes=[xs],
        param_dtypes=[dtype],
        output_shapes=[ys],
        output_dtypes=[dtype],
        ops=["Transpose"],
    )
