"""dead_code_elimination: unused chains and constants go, outputs and inputs stay."""

from __future__ import annotations

from lepton_compiler.pass_manager import PassContext
from lepton_compiler.passes.cleanup.dead_code import DeadCodeEliminationPass
from tests.passes.conftest import check_equivalent, feeds_for, ops, parse

TEXT = """
<ir_version: 8, opset_import: ["" : 18]>
g (float[2,3] x) => (float[2,3] y) {
  unused1 = Exp(x)
  unused2 = Neg(unused1)
  y = Relu(x)
}
"""


def test_removes_dead_chain(ctx: PassContext) -> None:
    g = parse(TEXT)
    before = parse(TEXT)
    result = DeadCodeEliminationPass()(g, ctx)
    assert result.modified
    assert ops(g) == ["Relu"]
    check_equivalent(before, g, feeds_for(before))


def test_keeps_everything_used_and_is_idempotent(ctx: PassContext) -> None:
    g = parse(TEXT)
    DeadCodeEliminationPass()(g, ctx)
    snapshot = ops(g)
    assert not DeadCodeEliminationPass()(g, ctx).modified
    assert ops(g) == snapshot


def test_node_with_a_second_user_stays(ctx: PassContext) -> None:
    g = parse("""
<ir_version: 8, opset_import: ["" : 18]>
g (float[4] x) => (float[4] y, float[4] z) {
  e = Exp(x)
  y = Relu(e)
  z = Neg(e)
}
""")
    assert not DeadCodeEliminationPass()(g, ctx).modified
    assert ops(g) == ["Exp", "Relu", "Neg"]
