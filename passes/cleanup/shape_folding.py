"""Shape-chain folding: shape queries answered at compile time from the IR's types.

`Shape(x)` becomes a constant when every dim it reports is static; `Size(x)` likewise; and
`Gather(Shape(x), idx)` with a constant index becomes a constant when the dims it picks are
static, even if other dims of `x` are symbolic (a `batch` dim stays a run-time value). Constant
folding then computes the rest of the chain (Unsqueeze → Concat → Reshape). Belongs in the
cleanup pipeline right before constant folding.
"""

from __future__ import annotations

import numpy as np

from lepton_compiler.ir import Node, TensorType, Value
from lepton_compiler.pass_manager import NodePass, PassContext, register_pass


@register_pass
class ShapeFoldingPass(NodePass):
    """Replace Shape/Size/Gather-of-Shape by constants where the dims are static."""

    name = "shape_folding"

    def visit(self, node: Node, ctx: PassContext) -> bool:
        value = _fold(node)
        if value is None:
            return False
        _replace(node, value)
        return True


def _dims(v: Value | None) -> tuple | None:
    if v is None or not isinstance(v.type, TensorType) or v.type.shape is None:
        return None
    return v.type.shape


def _shape_slice(node: Node) -> tuple | None:
    """The dims a Shape node reports (honouring start/end), or None if the rank is unknown."""
    dims = _dims(node.inputs[0])
    if dims is None:
        return None
    rank = len(dims)
    start = node.attrs.get("start", 0)
    end = node.attrs.get("end", rank)
    start = min(max(start + rank if start < 0 else start, 0), rank)
    end = min(max(end + rank if end < 0 else end, 0), rank)
    return dims[start:end]


def _fold(node: Node) -> np.ndarray | None:
    if node.op == "Shape":
        dims = _shape_slice(node)
        if dims is not None and all(isinstance(d, int) for d in dims):
            return np.array(dims, dtype=np.int64)
    elif node.op == "Size":
        dims = _dims(node.inputs[0])
        if dims is not None and all(isinstance(d, int) for d in dims):
            return np.array(int(np.prod(dims, dtype=np.int64)), dtype=np.int64)
    elif node.op == "Gather" and node.inputs[0] is not None:
        shape_node = node.inputs[0].producer
        idx = node.inputs[1]
        if shape_node is None or shape_node.op != "Shape" or idx is None or idx.const is None:
            return None
        dims = _shape_slice(shape_node)
        if dims is None or node.attrs.get("axis", 0) != 0:
            return None
        index = np.asarray(idx.const, dtype=np.int64)
        if np.any(index >= len(dims)) or np.any(index < -len(dims)):
            return None  # out of range: leave the error to run time
        picked = [dims[int(i)] for i in index.reshape(-1)]
        if all(isinstance(d, int) for d in picked):
            return np.array(picked, dtype=np.int64).reshape(index.shape)
    return None


def _replace(node: Node, value: np.ndarray) -> None:
    graph = node.graph
    assert graph is not None
    out = node.outputs[0]
    const = graph.add_constant(value, out.name + "_static")
    graph.replace_value(out, const)
    graph.remove(node)
