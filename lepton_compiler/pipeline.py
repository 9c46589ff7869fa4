"""Pass pipelines per opt level, as literal lists: reading this file is reading the compiler.

O0 runs nothing. O1 cleans up: the `CLEANUP` list, repeated until nothing changes. O2 adds
fusion and O3 target-specific rewrites; their passes come with the fusion and backend work,
and until then O2 and O3 run the O1 list.
"""

from __future__ import annotations

from collections.abc import Sequence

from .ir import Graph
from .pass_manager import FixedPoint, Pass, PassContext, PassManager, PassResult

#: The cleanup passes, in the order one round runs them.
CLEANUP: list[str] = [
    "dead_code_elimination",             # drop what nobody reads
    "identity_elimination",              # Identity, Dropout, x*1, x+0, cancelling Transposes
    "shape_folding",                     # Shape/Size/Gather(Shape) from static dims
    "constant_folding",                  # compute all-constant nodes (size-capped)
    "canonicalize",                      # one form for Sub/Div by constants, Clip, Gemm
    "common_subexpression_elimination",  # merge duplicate nodes and equal constants
    "dead_code_elimination",             # drop what the rewrites left behind
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
