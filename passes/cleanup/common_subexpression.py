"""Common subexpression elimination: nodes computing the same op on the same inputs with the
same attributes become one; equal small constants become one.

Belongs in every cleanup pipeline after constant folding (folding exposes equal constants).
Random ops and ops with subgraphs are never merged.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import numpy as np

from lepton_compiler.ir import Graph, Node, Value
from lepton_compiler.pass_manager import Pass, PassContext, PassResult, register_pass

from ._util import NONDETERMINISTIC

#: Constants up to this many bytes are compared by content and merged.
_CONST_MERGE_BYTES = 1 << 16


@register_pass
class CommonSubexpressionEliminationPass(Pass):
    """Merge nodes that compute the same thing, and equal small constants."""

    name = "common_subexpression_elimination"

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        changed = False
        for g in [graph, *graph.subgraphs_recursive()]:
            changed |= _merge_constants(g)
            changed |= _merge_nodes(g)
        return PassResult(graph, changed)


def _freeze(x: Any) -> Hashable:
    if isinstance(x, np.ndarray):
        return ("array", x.dtype.str, x.shape, x.tobytes())
    if isinstance(x, (list, tuple)):
        return tuple(_freeze(i) for i in x)
    if isinstance(x, Graph):
        return ("graph", id(x))
    return x


def _merge_constants(graph: Graph) -> bool:
    seen: dict[Hashable, Value] = {}
    changed = False
    outputs = {id(v) for v in graph.outputs}
    for c in list(graph.initializers.values()):
        if c.const is None or c.const.nbytes > _CONST_MERGE_BYTES or id(c) in outputs:
            continue
        if c.const.dtype == object:
            continue
        key = (_freeze(c.const), c.quant is None)
        first = seen.setdefault(key, c)
        if first is not c and c.quant is None:
            graph.replace_all_uses(c, first)
            changed = True
    if changed:
        graph.remove_unused_constants()
    return changed


def _merge_nodes(graph: Graph) -> bool:
    seen: dict[Hashable, Node] = {}
    changed = False
    for node in graph:
        if node.op in NONDETERMINISTIC or node.subgraphs():
            continue
        key = (
            node.domain,
            node.op_type,
            tuple(id(v) for v in node.inputs),
            tuple(sorted((k, _freeze(v)) for k, v in node.attrs.items())),
            len(node.outputs),
        )
        first = seen.get(key)
        if first is None:
            seen[key] = node
            continue
        if any(v.is_graph_output() for v in node.outputs):
            continue
        for mine, theirs in zip(node.outputs, first.outputs, strict=True):
            graph.replace_all_uses(mine, theirs)
        graph.remove(node)
        changed = True
    return changed
