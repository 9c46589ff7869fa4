"""`lepton.Fused`: a group of ops that a backend compiles into one kernel.

The node's ``body`` attribute is a `Graph` whose inputs bind to the node's inputs and whose
outputs are the node's outputs. Its semantics are exactly the body's: the reference runs the
body with the interpreter, and inference reads the body's output types.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..ir import Graph, Node, Value, ValueType
from .registry import define


def _body(node: Node) -> Graph:
    body = node.attrs.get("body")
    if not isinstance(body, Graph):
        raise TypeError(f"lepton.Fused node {node.name!r} has no body graph")
    return body


def _infer(node: Node) -> Sequence[ValueType | None]:
    return [v.type for v in _body(node).outputs]


def _reference(node: Node, inputs: list[Any], scope: Mapping[Value, Any]) -> list[Any]:
    from ..interpreter import run_subgraph

    body = _body(node)
    return run_subgraph(body, dict(zip(body.inputs, inputs, strict=True)), scope)


define(
    "lepton.Fused",
    category="opaque",
    infer=_infer,
    reference=_reference,
    doc="A fused group: its body graph becomes one kernel.",
)
