"""Transpose: a parallel copy in the output's order (the output's last dim innermost, so the
stores are contiguous)."""

from __future__ import annotations

from lepton_compiler.errors import LoweringError
from lepton_compiler.ir import Graph, Node, TensorType

from ..emit import Constants, Lines, module_text
from ..epilogue import static_shape
from . import KernelSource
from .loops import parallel_nest

NAME = "transpose"
ANCHORS = ("Transpose",)

_DTYPES = ("FLOAT32", "FLOAT64", "INT64", "INT32")


def plan(fused: Node, tiles: int = 1) -> KernelSource:
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
    code = Lines()
    names = [f"i{d}" for d in range(r)]
    parallel_nest(code, ys, names)
    src = [""] * r
    for k, p in enumerate(perm):
        src[p] = names[k]
    code(f"out[{', '.join(names)}] = x[{', '.join(src)}]")
    dtype = x.type.dtype.numpy
    doc = [f"Transpose {list(xs)} perm={perm} -> {list(ys)} ({dtype})."]
    return KernelSource(
        name="transpose",
        source=module_text(doc, "transpose", ["x", "out"], code, Constants()),
        input_indices=[list(body.inputs).index(x)],
        param_shapes=[xs],
        param_dtypes=[str(dtype)],
        output_shapes=[ys],
        output_dtypes=[str(dtype)],
        ops=["Transpose"],
    )
