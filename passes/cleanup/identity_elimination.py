"""No-op elimination: Identity, inference-mode Dropout, x*1, x+0, x-0, x/1, Reshape to the same
shape, Transpose pairs that cancel, Cast to the same type.

Belongs in every cleanup pipeline, before fusion (no-ops split what would fuse). A no-op whose
input is a graph input and whose output is a graph output is kept (removing it would merge two
signature entries). The surviving value keeps the more specific of the two types.
"""

from __future__ import annotations

import numpy as np

from lepton_compiler.ir import Node, TensorType, Value, merge_types
from lepton_compiler.pass_manager import NodePass, PassContext, register_pass


@register_pass
class IdentityEliminationPass(NodePass):
    """Remove ops that return their input unchanged (Identity, Dropout, x*1, x+0, ...)."""

    name = "identity_elimination"

    def visit(self, node: Node, ctx: PassContext) -> bool:
        return _try_eliminate(node)


def _const(v: Value | None) -> np.ndarray | None:
    return None if v is None or v.const is None else np.asarray(v.const)


def _same_type(a: Value, b: Value) -> bool:
    return isinstance(a.type, TensorType) and a.type == b.type and a.type.is_static


def _forwarded(node: Node) -> Value | None:
    """The input `node` merely forwards, or None when it does real work."""
    op, ins = node.op, node.inputs
    if op == "Identity" and ins and ins[0] is not None:
        return ins[0]
    if op == "Dropout":
        # Inference: the mask output must be unused, training_mode absent or constant false.
        training = _const(ins[2]) if len(ins) > 2 else None
        if len(ins) > 2 and ins[2] is not None and (training is None or bool(training)):
            return None
        if len(node.outputs) > 1 and node.outputs[1].uses:
            return None
        return ins[0]
    if op in ("Add", "Sub", "Mul", "Div") and len(ins) == 2:
        neutral = 1.0 if op in ("Mul", "Div") else 0.0
        candidates = [(0, 1)] if op in ("Sub", "Div") else [(0, 1), (1, 0)]
        for keep, const in candidates:
            c = _const(ins[const])
            x = ins[keep]
            if c is None or x is None or not np.all(c == neutral):
                continue
            # The constant must not broadcast the result to a bigger shape or other dtype.
            if _same_type(x, node.outputs[0]):
                return x
        return None
    if op == "Cast" and ins[0] is not None and isinstance(ins[0].type, TensorType):
        to = node.attrs.get("to")
        if to == ins[0].type.dtype.onnx_code:
            return ins[0]
        return None
    if op == "Reshape" and ins[0] is not None and _same_type(ins[0], node.outputs[0]):
        return ins[0]
    if op == "Transpose" and ins[0] is not None:
        perm = node.attrs.get("perm")
        if perm is not None and list(perm) == sorted(perm):
            return ins[0]
        inner = ins[0].producer
        if (
            inner is not None
            and inner.op == "Transpose"
            and perm is not None
            and inner.attrs.get("perm") is not None
            and inner.inputs[0] is not None
        ):
            p1, p2 = list(inner.attrs["perm"]), list(perm)
            if [p1[i] for i in p2] == list(range(len(p2))):
                return inner.inputs[0]
    return None


def _try_eliminate(node: Node) -> bool:
    graph = node.graph
    if graph is None:
        return False
    src = _forwarded(node)
    if src is None:
        return False
    out = node.outputs[0]
    if src is out:
        return False
    if out.is_graph_output() and (src.producer is None or src.is_graph_output()):
        return False  # would merge a graph output with an input, constant or other output
    merged = merge_types(src.type, out.type)
    if merged is not None:
        src.type = merged
    graph.replace_value(out, src)
    if not any(v.uses or v.is_graph_output() for v in node.outputs):
        graph.remove(node)
    return True
