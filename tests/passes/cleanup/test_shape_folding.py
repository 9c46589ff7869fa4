"""shape_folding: static shape queries become constants; symbolic dims stay run-time values."""

from __future__ import annotations

import numpy as np

from lepton_compiler.frontend.onnx import import_model
from lepton_compiler.interpreter import run_graph
from lepton_compiler.pass_manager import PassContext
from lepton_compiler.passes.cleanup.constant_folding import ConstantFoldingPass
from lepton_compiler.passes.cleanup.dead_code import DeadCodeEliminationPass
from lepton_compiler.passes.cleanup.shape_folding import ShapeFoldingPass
from tests.passes.conftest import check_equivalent, feeds_for, ops, parse

FLATTEN_CHAIN = """
<ir_version: 8, opset_import: ["" : 18]>
g (float[{batch},4,3] x) => (float[{batch},12] y) {{
  s = Shape(x)
  i0 = Constant<value = int64 {{0}}>()
  d0 = Gather<axis = 0>(s, i0)
  u0 = Unsqueeze(d0, ax)
  ax = Constant<value = int64[1] {{0}}>()
  m1 = Constant<value = int64[1] {{-1}}>()
  shp = Concat<axis = 0>(u0, m1)
  y = Reshape(x, shp)
}}
"""


def _chain(batch: str) -> str:
    text = FLATTEN_CHAIN.format(batch=batch)
    # Unsqueeze reads `ax` before it is defined in the text; move the constant up.
    return text.replace("  u0 = Unsqueeze(d0, ax)\n  ax = Constant<value = int64[1] {0}>()\n",
                        "  ax = Constant<value = int64[1] {0}>()\n  u0 = Unsqueeze(d0, ax)\n")


def test_static_chain_folds_to_a_constant_reshape(ctx: PassContext) -> None:
    g, before = parse(_chain("2")), parse(_chain("2"))
    assert ShapeFoldingPass()(g, ctx).modified
    ConstantFoldingPass()(g, ctx)
    DeadCodeEliminationPass()(g, ctx)
    assert ops(g) == ["Reshape"]
    np.testing.assert_array_equal(g.nodes[0].inputs[1].const, [2, -1])
    check_equivalent(before, g, feeds_for(before))
    assert not ShapeFoldingPass()(g, ctx).modified


def test_symbolic_batch_keeps_the_shape_query(ctx: PassContext) -> None:
    import onnx.parser

    g = import_model(onnx.parser.parse_model(_chain('"N"')), simplify=False)
    assert not ShapeFoldingPass()(g, ctx).modified
    assert "Shape" in ops(g)
    for n in (1, 3):
        x = np.random.default_rng(n).standard_normal((n, 4, 3)).astype(np.float32)
        assert run_graph(g, {"x": x})["y"].shape == (n, 12)


def test_gather_of_a_static_dim_folds_under_a_symbolic_batch(ctx: PassContext) -> None:
    import onnx.parser

    text = """
<ir_version: 8, opset_import: ["" : 18]>
g (float["N",4,3] x) => (int64 y) {
  s = Shape(x)
  i = Constant<value = int64 {2}>()
  y = Gather<axis = 0>(s, i)
}
"""
    g = import_model(onnx.parser.parse_model(text), simplify=False)
    assert ShapeFoldingPass()(g, ctx).modified
    DeadCodeEliminationPass()(g, ctx)
    assert ops(g) == [] and int(g.outputs[0].const) == 3 and g.outputs[0].name == "y"
