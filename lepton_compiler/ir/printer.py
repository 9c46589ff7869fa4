"""Readable text form of the IR, the dump users and pass developers read.

Example::

    graph main(%x: float32[batch,3,32,32]) -> (%y: float32[batch,10]) opset{"":18}
      const %w: float32[8,3,3,3]
      %c: float32[batch,8,30,30] = Conv(%x, %w) {group=1, pads=[0,0,0,0]}  # conv_0
      ...
      return %y
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .core import Graph, Node, Value


def format_value(v: Value | None) -> str:
    """``%name: type`` (or ``_`` for an omitted optional input)."""
    return "_" if v is None else f"%{v.name}: {v.type if v.type is not None else '?'}"


def _format_attr(value: Any, indent: str) -> str:
    if isinstance(value, Graph):
        inner = format_graph(value, indent + "    ")
        return "{\n" + inner + "\n" + indent + "  }"
    if isinstance(value, np.ndarray):
        if value.size <= 8:
            return f"tensor<{value.dtype}>{value.tolist()}"
        return f"tensor<{value.dtype}{list(value.shape)}>"
    if isinstance(value, (list, tuple)):
        if value and isinstance(value[0], Graph):
            return "[" + ", ".join(_format_attr(g, indent) for g in value) + "]"
        return "[" + ",".join(_format_attr(x, indent) for x in value) + "]"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return repr(value)
    return str(value)


def format_node(node: Node, indent: str = "  ") -> str:
    """One line (plus nested subgraphs) for a node."""
    outs = ", ".join(format_value(v) for v in node.outputs)
    ins = ", ".join("_" if v is None else f"%{v.name}" for v in node.inputs)
    attrs = ""
    if node.attrs:
        attrs = " {" + ", ".join(
            f"{k}={_format_attr(v, indent)}" for k, v in sorted(node.attrs.items())
        ) + "}"
    tag = f"  # {node.name}" if node.name else ""
    if "rule" in node.meta:
        tag += f" [rule {node.meta['rule']}]"
    return f"{indent}{outs} = {node.op}({ins}){attrs}{tag}"


def format_graph(graph: Graph, indent: str = "") -> str:
    """The whole graph, one node per line, constants first."""
    ins = ", ".join(format_value(v) for v in graph.inputs)
    outs = ", ".join(format_value(v) for v in graph.outputs)
    opsets = ""
    if graph.parent is None and graph.opset_imports:
        opsets = " opset{" + ",".join(
            f'"{d}":{v}' for d, v in sorted(graph.opset_imports.items())
        ) + "}"
    lines = [f"{indent}graph {graph.name}({ins}) -> ({outs}){opsets}"]
    for c in graph.initializers.values():
        payload = ""
        if c.const is not None and np.asarray(c.const).size <= 8:
            payload = " = " + str(np.asarray(c.const).tolist())
        lines.append(f"{indent}  const {format_value(c)}{payload}")
    for n in graph:
        lines.append(format_node(n, indent + "  "))
    lines.append(f"{indent}  return " + ", ".join(f"%{v.name}" for v in graph.outputs))
    return "\n".join(lines)
