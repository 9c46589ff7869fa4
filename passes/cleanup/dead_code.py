"""Dead code elimination: drop nodes whose results nobody reads, and unused constants.

Belongs at the start and end of every cleanup pipeline (other rewrites leave dead producers
behind). Walks backwards so whole dead chains go in one run; recurses into subgraphs. Graph
inputs are never removed: they are the model's signature.
"""

from __future__ import annotations

from lepton_compiler.ir import Graph
from lepton_compiler.pass_manager import Pass, PassContext, PassResult, register_pass


@register_pass
class DeadCodeEliminationPass(Pass):
    """Remove nodes whose outputs are unused, and constants nothing reads."""

    name = "dead_code_elimination"

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        return PassResult(graph, _eliminate(graph))


def _eliminate(graph: Graph) -> bool:
    changed = False
    outputs = {id(v) for v in graph.outputs}
    for node in reversed(graph.nodes):
        if node.graph is not graph:
            continue
        if any(v.uses or id(v) in outputs for v in node.outputs):
            for sub in node.subgraphs():
                changed |= _eliminate(sub)
            continue
        graph.remove(node)
        changed = True
    changed |= graph.remove_unused_constants() > 0
    return changed
