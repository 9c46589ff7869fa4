"""constant_folding: all-constant nodes become constants, within the size cap."""

from __future__ import annotations

import numpy as np

from lepton_compiler.pass_manager import PassContext
from lepton_compiler.passes.cleanup.constant_folding import ConstantFoldingPass
from tests.passes.conftest import check_equivalent, feeds_for, ops, parse

HEADER = '<ir_version: 8, opset_import: ["" : 18]>\n'

CHAIN = HEADER + """
g (float[2,3] x) => (float[2,3] y) {
  a = Constant<value = float[3] {1.0, 2.0, 3.0}>()
  b = Constant<value = float[3] {4.0, 5.0, 6.0}>()
  c = Mul(a, b)
  d = Sqrt(c)
  y = Add(x, d)
}
"""


def test_folds_a_constant_chain(ctx: PassContext) -> None:
    g, before = parse(CHAIN), parse(CHAIN)
    assert ConstantFoldingPass()(g, ctx).modified
    assert ops(g) == ["Add"]
    folded = g.find_node(g.nodes[0].name).inputs[1]
    np.testing.assert_allclose(folded.const, np.sqrt([4.0, 10.0, 18.0]), rtol=1e-6)
    assert len(g.initializers) == 1  # the inputs of the folded chain are gone
    check_equivalent(before, g, feeds_for(before))
    assert not ConstantFoldingPass()(g, ctx).modified  # idempotent


def test_size_cap_keeps_big_expands(ctx: PassContext) -> None:
    text = HEADER + """
g (float[1000,1000] x) => (float[1000,1000] y) {
  v = Constant<value = float {1.5}>()
  s = Constant<value = int64[2] {1000, 1000}>()
  big = Expand(v, s)
  y = Add(x, big)
}
"""
    g = parse(text)
    ctx.options["fold_max_bytes"] = 1 << 20
    assert not ConstantFoldingPass()(g, ctx).modified
    assert ops(g) == ["Expand", "Add"]
    ctx.options["fold_max_bytes"] = 8 << 20
    assert ConstantFoldingPass()(g, ctx).modified
    assert ops(g) == ["Add"]


def test_non_constant_and_random_nodes_stay(ctx: PassContext) -> None:
    text = HEADER + """
g (float[2,3] x) => (float[2,3] y) {
  s = Constant<value = int64[2] {2, 3}>()
  r = RandomUniformLike(x)
  n = Neg(x)
  y = Add(r, n)
}
"""
    g = parse(text)
    assert not ConstantFoldingPass()(g, ctx).modified
    assert ops(g) == ["RandomUniformLike", "Neg", "Add"]


def test_folding_a_graph_output_keeps_its_name(ctx: PassContext) -> None:
    text = HEADER + """
g (float[2] x) => (float[2] y, float[2] k) {
  a = Constant<value = float[2] {1.0, 4.0}>()
  k = Sqrt(a)
  y = Add(x, k)
}
"""
    g, before = parse(text), parse(text)
    assert ConstantFoldingPass()(g, ctx).modified
    assert [v.name for v in g.outputs] == ["y", "k"]
    check_equivalent(before, g, feeds_for(before))
