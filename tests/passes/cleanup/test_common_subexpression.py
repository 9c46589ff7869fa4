"""common_subexpression_elimination: duplicate nodes and equal constants merge."""

from __future__ import annotations

from lepton_compiler.pass_manager import PassContext
from lepton_compiler.passes.cleanup.common_subexpression import (
    CommonSubexpressionEliminationPass,
)
from lepton_compiler.passes.cleanup.dead_code import DeadCodeEliminationPass
from tests.passes.conftest import check_equivalent, feeds_for, ops, parse

HEADER = '<ir_version: 8, opset_import: ["" : 18]>\n'


def test_merges_duplicates_and_equal_constants(ctx: PassContext) -> None:
    text = HEADER + """
g (float[2,3] x) => (float[2,3] y) {
  c1 = Constant<value = float {2.0}>()
  c2 = Constant<value = float {2.0}>()
  a = Mul(x, c1)
  b = Mul(x, c2)
  ea = Exp(a)
  eb = Exp(b)
  y = Add(ea, eb)
}
"""
    g, before = parse(text), parse(text)
    assert CommonSubexpressionEliminationPass()(g, ctx).modified
    DeadCodeEliminationPass()(g, ctx)
    assert ops(g) == ["Mul", "Exp", "Add"]
    assert len(g.initializers) == 1
    check_equivalent(before, g, feeds_for(before))
    assert not CommonSubexpressionEliminationPass()(g, ctx).modified


def test_different_attributes_or_random_ops_do_not_merge(ctx: PassContext) -> None:
    text = HEADER + """
g (float[2,3] x) => (float[2,3] y) {
  a = LeakyRelu<alpha = 0.1>(x)
  b = LeakyRelu<alpha = 0.2>(x)
  r1 = RandomUniformLike(x)
  r2 = RandomUniformLike(x)
  s = Add(a, b)
  t = Add(r1, r2)
  y = Add(s, t)
}
"""
    g = parse(text)
    assert not CommonSubexpressionEliminationPass()(g, ctx).modified
    assert ops(g).count("LeakyRelu") == 2 and ops(g).count("RandomUniformLike") == 2
