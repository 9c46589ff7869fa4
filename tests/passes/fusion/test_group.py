"""fuse_groups: anchors take their element-wise epilogues; boundaries, cycles and caps hold."""

from __future__ import annotations

import numpy as np
import pytest

from lepton_compiler.interpreter import run_graph
from lepton_compiler.pass_manager import PassContext
from lepton_compiler.passes.fusion.group import GroupFusionPass
from lepton_compiler.runtime.report import fused_groups_summary
from lepton_compiler.testing import assert_equivalent, graph_from_text, op_list

HEADER = '<ir_version: 8, opset_import: ["" : 18]>\n'
_VALUES = ", ".join(f"{(i % 7 - 3) / 10}" for i in range(144))
W = "w = Constant<value = float[4,4,3,3] {" + _VALUES + "}>()\n"
B = " b = Constant<value = float[1,4,1,1] {0.1, -0.2, 0.3, 0.0}>()\n"

CONV_BLOCK = HEADER + """
g (float["N",4,6,6] x) => (float["N",4,6,6] y) {
  """ + W + B + """
  c = Conv<pads = [1,1,1,1]>(x, w)
  a = Add(c, b)
  r = Relu(a)
  s = Add(r, x)
  y = Relu(s)
}
"""


def _ctx() -> PassContext:
    return PassContext(verify_each=True)


def test_conv_takes_bias_activation_and_residual() -> None:
    g, before = graph_from_text(CONV_BLOCK), graph_from_text(CONV_BLOCK)
    assert GroupFusionPass()(g, _ctx()).modified
    assert op_list(g) == ["lepton.Fused"]
    fused = g.nodes[0]
    assert op_list(fused.attrs["body"]) == ["Conv", "Add", "Relu", "Add", "Relu"]
    assert fused.attrs["anchor"] == "Conv"
    assert g.outputs[0].name == "y"
    (summary,) = fused_groups_summary(g)
    assert summary["epilogue"] == ["Add", "Relu", "Add", "Relu"]
    assert summary["bytes_saved"] == 0  # symbolic batch: sizes unknown
    for n in (1, 3):
        x = np.random.default_rng(n).standard_normal((n, 4, 6, 6)).astype(np.float32)
        assert_equivalent(before, g, {"x": x})
    assert not GroupFusionPass()(g, _ctx()).modified  # idempotent


def test_a_second_reader_ends_the_group() -> None:
    text = CONV_BLOCK.replace('(float["N",4,6,6] y)', '(float["N",4,6,6] y, float["N",4,6,6] r)')
    g, before = graph_from_text(text), graph_from_text(text)
    assert GroupFusionPass()(g, _ctx()).modified
    # r is a graph output: Conv+Add+Relu is one group, Add+Relu (residual) another.
    assert op_list(g) == ["lepton.Fused", "lepton.Fused"]
    assert [op_list(n.attrs["body"]) for n in g] == [["Conv", "Add", "Relu"], ["Add", "Relu"]]
    assert [v.name for v in g.outputs] == ["y", "r"]
    assert_equivalent(before, g)


def test_a_join_that_would_create_a_cycle_is_refused() -> None:
    # LayerNormalization's second output (the mean) leaves the group through a Reshape (which
    # never joins a group); joining the Add (which reads Y and the reshaped mean) would make
    # the group depend on itself.
    text = HEADER + """
g (float[2,6] x, float[6] gamma) => (float[2,6] y) {
  ln, mean = LayerNormalization<axis = -1>(x, gamma)
  shape = Constant<value = int64[2] {2, 1}>()
  n = Reshape(mean, shape)
  y = Add(ln, n)
}
"""
    g, before = graph_from_text(text), graph_from_text(text)
    assert not GroupFusionPass()(g, _ctx()).modified
    assert op_list(g) == ["LayerNormalization", "Reshape", "Add"]
    # Without the detour the same Add joins.
    text2 = text.replace("n = Reshape(mean, shape)", "n = Neg(gamma)")
    g2, before2 = graph_from_text(text2), graph_from_text(text2)
    assert GroupFusionPass()(g2, _ctx()).modified
    assert "lepton.Fused" in op_list(g2)
    assert_equivalent(before, g)
    assert_equivalent(before2, g2)


def test_elementwise_chain_and_size_cap() -> None:
    ops = "\n".join(f"  v{i + 1} = {'Sigmoid' if i % 2 else 'Neg'}(v{i})" for i in range(10))
    text = HEADER + f"g (float[8] v0) => (float[8] v10) {{\n{ops}\n}}"
    g, before = graph_from_text(text), graph_from_text(text)
    ctx = _ctx()
    ctx.options["fusion_max_ops"] = 4
    assert GroupFusionPass()(g, ctx).modified
    assert op_list(g) == ["lepton.Fused"] * 3
    assert [len(n.attrs["body"]) for n in g] == [4, 4, 2]
    assert_equivalent(before, g)


def test_broadcast_that_grows_the_tensor_is_not_an_epilogue() -> None:
    text = HEADER + """
g (float[1,4] x, float[3,1] z) => (float[3,4] y) {
  a = Relu(x)
  y = Add(a, z)
}
"""
    g = graph_from_text(text)
    assert not GroupFusionPass()(g, _ctx()).modified
    assert op_list(g) == ["Relu", "Add"]


@pytest.mark.parametrize("static", [True, False])
def test_bytes_saved_counts_static_intermediates(static: bool) -> None:
    text = CONV_BLOCK.replace('"N"', "2") if static else CONV_BLOCK
    g = graph_from_text(text)
    GroupFusionPass()(g, _ctx())
    saved = fused_groups_summary(g)[0]["bytes_saved"]
    assert saved == (4 * 2 * 4 * 6 * 6 * 4 if static else 0)  # 4 intermediates of 2x4x6x6 f32
    run_graph(g, {"x": np.zeros((2, 4, 6, 6), np.float32)})


DQ_RESIDUAL = HEADER + """
g (float[1,4,6,6] x, uint8[1,4,6,6] r) => (float[1,4,6,6] y) {
  """ + W + """
  s = Constant<value = float {0.05}>()
  z = Constant<value = uint8 {128}>()
  c = Conv<pads = [1,1,1,1]>(x, w)
  d = DequantizeLinear(r, s, z)
  y = Add(c, d)
}
"""


def test_dequantized_side_input_moves_into_the_group() -> None:
    g, before = graph_from_text(DQ_RESIDUAL), graph_from_text(DQ_RESIDUAL)
    assert GroupFusionPass()(g, _ctx()).modified
    assert op_list(g) == ["lepton.Fused"]
    assert op_list(g.nodes[0].attrs["body"]) == ["Conv", "DequantizeLinear", "Add"]
    feeds = {"x": np.random.default_rng(0).standard_normal((1, 4, 6, 6)).astype(np.float32),
             "r": np.arange(144, dtype=np.uint8).reshape(1, 4, 6, 6)}  # fmt: skip
    np.testing.assert_allclose(run_graph(g, feeds)["y"], run_graph(before, feeds)["y"],
                               rtol=1e-6, atol=1e-6)  # fmt: skip


def test_dequantize_read_by_two_groups_stays_alone() -> None:
    text = DQ_RESIDUAL.replace("=> (float[1,4,6,6] y)", "=> (float[1,4,6,6] y, float[1,4,6,6] y2)")
    second = "  y = Add(c, d)\n  c2 = Conv(x, w)\n  y2 = Add(c2, d)\n"
    text = text.replace("  y = Add(c, d)\n", second)
    g = graph_from_text(text)
    GroupFusionPass()(g, _ctx())
    assert op_list(g).count("DequantizeLinear") == 1
