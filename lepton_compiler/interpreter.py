"""The reference interpreter: runs any IR graph node by node with each op's `reference`.

It is the oracle every test compares against and the fallback executor for ops a backend
does not lower. Intermediate results are dropped after their last use, so real models run in
bounded memory.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .errors import InputError, LeptonError, LoweringError
from .ir import Graph, Node, Value
from .ops.registry import lookup_node


def run_graph(graph: Graph, feeds: Mapping[str, Any]) -> dict[str, Any]:
    """Run the top-level graph.

    Args:
        graph: the graph to run.
        feeds: a value for every graph input, by input name.

    Returns:
        Every graph output by name.

    Raises:
        InputError: an input is missing or an unknown name is given.
    """
    names = {v.name for v in graph.inputs}
    unknown = [k for k in feeds if k not in names]
    if unknown:
        raise InputError(f"unknown input name(s) {unknown}; the graph's inputs are {sorted(names)}")
    bound: dict[Value, Any] = {}
    for v in graph.inputs:
        if v.name not in feeds:
            raise InputError(f"missing input {v.name!r}")
        bound[v] = feeds[v.name]
    results = run_subgraph(graph, bound, {})
    return {v.name: r for v, r in zip(graph.outputs, results, strict=True)}


def run_node(node: Node, env: Mapping[Value, Any]) -> list[Any]:
    """Run one node's reference kernel on the values in `env` (inputs and captured outer
    values); returns its outputs (at least one per node output).

    Raises:
        LoweringError: the op has no reference kernel, or the kernel failed (the message
            names the node and the error).
    """
    opdef = lookup_node(node)
    if opdef is None or opdef.reference is None:
        raise LoweringError(f"op {node.op} (node {node.name!r}) has no reference kernel")
    inputs = [None if v is None else env[v] for v in node.inputs]
    try:
        outs = opdef.reference(node, inputs, env)
    except LeptonError:
        raise
    except Exception as e:
        raise LoweringError(
            f"reference kernel of {node.op} node {node.name!r} failed: "
            f"{type(e).__name__}: {e}"
        ) from e
    if len(outs) < len(node.outputs):
        raise LoweringError(
            f"{node.op} node {node.name!r} produced {len(outs)} outputs, "
            f"expected {len(node.outputs)}"
        )
    return list(outs)


def run_subgraph(graph: Graph, bound: Mapping[Value, Any], scope: Mapping[Value, Any]) -> list[Any]:
    """Run `graph` with its inputs bound, reading captured outer values from `scope`.

    Returns:
        The outputs in order.
    """
    env: dict[Value, Any] = dict(scope)
    env.update(bound)
    for c in graph.initializers.values():
        env[c] = c.const
    nodes = graph.nodes
    last_use: dict[Value, int] = {}
    for i, node in enumerate(nodes):
        for v in [*node.inputs, *node.outer_values()]:
            if v is not None:
                last_use[v] = i
    keep = set(graph.outputs) | set(scope) | set(graph.initializers.values())
    for i, node in enumerate(nodes):
        outs = run_node(node, env)
        for v, r in zip(node.outputs, outs, strict=False):
            env[v] = r
        for v in node.inputs:
            if v is not None and last_use.get(v) == i and v not in keep:
                env.pop(v, None)
    return [_materialize(env[v]) for v in graph.outputs]


def _materialize(x: Any) -> Any:
    return np.asarray(x) if isinstance(x, np.generic) else x
