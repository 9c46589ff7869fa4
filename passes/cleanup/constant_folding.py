"""Constant folding: compute at compile time every node whose inputs are all constants.

Belongs in every cleanup pipeline, after shape folding and before fusion. Results larger than
the ``fold_max_bytes`` option (default 4 MiB) are not folded unless they are no larger than the
constants they replace, so folding never bloats the model (e.g. an `Expand` of a scalar to a
big tensor stays an op). Random ops are never folded. A DequantizeLinear of a quantized
constant (int8/uint8/int32 weights and biases of a QDQ model) is kept: it is how quantized
weights are spelled, and ``lower_qdq`` needs it (it folds the ones no integer op takes). Runs
each op's reference kernel, the same semantics the interpreter uses.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lepton_compiler.ir import Node, TensorType, tensor_type_of
from lepton_compiler.ops import lookup_node
from lepton_compiler.pass_manager import NodePass, PassContext, register_pass

from ._util import NONDETERMINISTIC

DEFAULT_MAX_BYTES = 4 << 20


@register_pass
class ConstantFoldingPass(NodePass):
    """Replace nodes whose inputs are all constants by their computed results."""

    name = "constant_folding"

    def visit(self, node: Node, ctx: PassContext) -> bool:
        return _try_fold(node, int(ctx.option("fold_max_bytes", DEFAULT_MAX_BYTES)))


def _quantized_const(node: Node) -> bool:
    x = node.inputs[0] if node.inputs else None
    return x is not None and x.const is not None and np.asarray(x.const).dtype.kind in "iu"


def _try_fold(node: Node, cap: int) -> bool:
    graph = node.graph
    if graph is None or node.op in NONDETERMINISTIC or node.subgraphs():
        return False
    if node.op == "DequantizeLinear" and _quantized_const(node):
        return False
    if not node.inputs or any(v is not None and v.const is None for v in node.inputs):
        return False  # ops without inputs (ConstantOfShape needs one; Range has three) stay
    opdef = lookup_node(node)
    if opdef is None or opdef.reference is None:
        return False
    try:
        results: list[Any] = opdef.reference(
            node, [None if v is None else v.const for v in node.inputs], {}
        )
    except Exception:
        return False  # a kernel that cannot run here is left for run time to report
    arrays = [np.asarray(r) if isinstance(r, np.generic) else r for r in results]
    if not all(isinstance(a, np.ndarray) for a in arrays[: len(node.outputs)]):
        return False  # sequences and optionals are not constants
    out_bytes = sum(a.nbytes for a in arrays[: len(node.outputs)])
    in_bytes = sum(v.const.nbytes for v in node.inputs if v is not None and len(v.uses) == 1)
    if out_bytes > cap and out_bytes > in_bytes:
        return False
    for out, arr in zip(node.outputs, arrays, strict=False):
        if isinstance(out.type, TensorType) and out.type.dtype.numpy != arr.dtype:
            return False  # a kernel disagreeing with the declared type: leave it alone
    for out, arr in zip(node.outputs, arrays, strict=False):
        const = graph.add_constant(arr, out.name + "_folded")
        const.type = tensor_type_of(arr)
        graph.replace_value(out, const)
    graph.remove(node)
    return True
