"""Type inference entry points used by `verify` and by passes that create nodes."""

from __future__ import annotations

from ..ir import Node, ValueType
from ..ir.verify import types_conflict
from .registry import lookup_node


def infer_types(node: Node) -> list[ValueType | None]:
    """Output types of `node` according to its op definition (None where unknown)."""
    d = lookup_node(node)
    if d is None or d.infer is None:
        return [None] * len(node.outputs)
    return list(d.infer(node))


def check_node_types(node: Node) -> list[str]:
    """Problems where a stored output type disagrees with the op's inference."""
    problems = []
    for out, inferred in zip(node.outputs, infer_types(node), strict=False):
        if types_conflict(out.type, inferred):
            problems.append(
                f"{node.op} node {node.name!r}: output %{out.name} is stored as {out.type} "
                f"but the op infers {inferred}"
            )
    return problems


def refresh_types(node: Node) -> None:
    """Set each output's type from inference, keeping stored detail inference lacks."""
    from ..ir import merge_types

    for out, inferred in zip(node.outputs, infer_types(node), strict=False):
        merged = merge_types(out.type, inferred)
        out.type = merged if merged is not None else inferred
