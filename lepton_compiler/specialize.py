"""Specialize a graph with symbolic dimensions to concrete input shapes.

Backends whose kernels need static shapes (TVM's) compile a model with a symbolic batch once
per concrete input shape they meet: `specialize` copies the graph, gives the inputs the
concrete shapes and re-infers every value's type in order (fused-group bodies included). The
original graph is not touched.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .errors import InputError
from .ir import Graph, Node, TensorType, Value
from .ops.infer import infer_types

__all__ = ["clone_graph", "has_symbolic_shapes", "specialize"]


def _static(v: Value) -> bool:
    t = v.type
    if not isinstance(t, TensorType):
        return True
    return t.shape is not None and all(isinstance(d, int) for d in t.shape)


def has_symbolic_shapes(graph: Graph) -> bool:
    """True when a tensor value of the top-level graph has an unknown or symbolic size."""
    values = [*graph.inputs, *(o for n in graph for o in n.outputs)]
    return not all(_static(v) for v in values)


def specialize(graph: Graph, shapes: Mapping[str, Sequence[int]]) -> Graph:
    """A copy of `graph` whose inputs have the given shapes, every type re-inferred.

    Args:
        graph: the graph (not modified).
        shapes: a concrete shape for every tensor input, by name.

    Raises:
        InputError: a shape has the wrong rank or contradicts a fixed size of the input.
    """
    g = clone_graph(graph)
    for v in g.inputs:
        if not isinstance(v.type, TensorType) or v.name not in shapes:
            continue
        shape = tuple(int(d) for d in shapes[v.name])
        old = v.type.shape
        if old is not None:
            if len(old) != len(shape):
                raise InputError(f"input {v.name!r}: expected rank {len(old)}, got {shape}")
            for a, b in zip(old, shape, strict=True):
                if isinstance(a, int) and a != b:
                    raise InputError(f"input {v.name!r}: expected shape {old}, got {shape}")
        v.type = v.type.with_shape(shape)
    _reinfer(g)
    return g


def clone_graph(graph: Graph, vmap: dict[Value, Value] | None = None) -> Graph:
    """A structural copy of `graph` (subgraphs included); constants' arrays are shared.

    Args:
        graph: the graph to copy.
        vmap: original -> copy for values already copied (a subgraph's captured values).
    """
    vmap = {} if vmap is None else vmap

    def cv(v: Value | None) -> Value | None:
        if v is None:
            return None
        if v not in vmap:
            vmap[v] = Value(v.name, v.type, const=v.const, quant=v.quant)
        return vmap[v]

    def attr(a: Any) -> Any:
        if isinstance(a, Graph):
            return clone_graph(a, vmap)
        if isinstance(a, list) and a and all(isinstance(x, Graph) for x in a):
            return [clone_graph(x, vmap) for x in a]
        return a

    g = Graph(
        inputs=[cv(v) for v in graph.inputs],  # type: ignore[misc]
        name=graph.name,
        opset_imports=graph.opset_imports,
        initializers=[cv(v) for v in graph.initializers.values()],  # type: ignore[misc]
    )
    g.meta, g.doc = dict(graph.meta), graph.doc
    for n in graph:
        new = Node(
            n.op_type,
            [cv(v) for v in n.inputs],
            {k: attr(a) for k, a in n.attrs.items()},
            outputs=[cv(o) for o in n.outputs],  # type: ignore[misc]
            name=n.name,
            domain=n.domain,
        )
        new.meta = dict(n.meta)
        g.append(new)
    g.outputs = [cv(o) for o in graph.outputs]  # type: ignore[misc]
    return g


def _reinfer(graph: Graph) -> None:
    for node in graph.nodes:
        if node.op == "lepton.Fused":
            body: Graph = node.attrs["body"]
            for bv, v in zip(body.inputs, node.inputs, strict=True):
                if v is not None and v.type is not None:
                    bv.type = v.type
            _reinfer(body)
        for out, inferred in zip(node.outputs, infer_types(node), strict=False):
            if inferred is not None:
                out.type = inferred
