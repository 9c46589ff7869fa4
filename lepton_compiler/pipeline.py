"""Pass pipelines per opt level, as literal lists: reading this file is reading the compiler.

O0 runs nothing. O1 cleans up: dead code, no-ops, constant folding and common subexpressions,
repeated until nothing changes. O2 adds fusion and O3 target-specific rewrites (their passes
come with the fusion and backend work; until then O2 and O3 run the O1 list).
"""

from __future__ import annotations

from collections.abc import Sequence

from .ir import Graph
from .pass_manager import FixedPoint, Pass, PassContext, PassManager, PassResult

#: The cleanup passes, in the order one round runs them.
CLEANUP: list[str] = [
    "dead_code_elimination",
    "identity_elimination",
    "constant_folding",
    "common_subexpression_elimination",
    "dead_code_elimination",
]

PIPELINES: dict[int, list[str]] = {
    0: [],
    1: CLEANUP,
    2: CLEANUP,
    3: CLEANUP,
}


def build_pipeline(opt_level: int, passes: Sequence[str] | None = None) -> list[Pass]:
    """The passes for an opt level, or exactly `passes` when given (e.g. from ``--passes``)."""
    if passes is not None:
        return PassManager(passes).passes
    names = PIPELINES[max(0, min(3, opt_level))]
    if not names:
        return []
    return [FixedPoint(names, max_iterations=4, name="cleanup")]


def run_pipeline(
    graph: Graph, ctx: PassContext, passes: Sequence[str] | None = None
) -> PassResult:
    """Run the pipeline for ``ctx.opt_level`` (or the explicit `passes`) on `graph`."""
    return PassManager(build_pipeline(ctx.opt_level, passes)).run(graph, ctx)
