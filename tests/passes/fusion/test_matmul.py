"""fuse_matmul_bias (MatMul + bias → Gemm / lepton.MatMulAdd) and fold_matmul_transpose."""

from __future__ import annotations

import numpy as np
import pytest

from lepton_compiler.ir import Graph
from lepton_compiler.pass_manager import PassContext, PassManager
from lepton_compiler.testing import assert_equivalent, graph_from_text, op_list, random_inputs

_VALUES = ", ".join(f"{(i % 7) / 7 - 0.4:.4f}" for i in range(48))
W = f"  w = Constant<value = float[8,6] {{{_VALUES}}}>()\n"
WT = W.replace("w = Constant<value = float[8,6]", "wt = Constant<value = float[6,8]")
BIAS = "  b = Constant<value = float[6] {0.1, -0.2, 0.3, -0.4, 0.5, -0.6}>()\n"


def _text(sig: str, body: str) -> str:
    return f"g {sig} {{\n{body}\n}}"


X3 = '(float["N",4,8] x) => (float["N",4,6] y)'
X2 = '(float["N",8] x) => (float["N",6] y)'

CASES: dict[str, tuple[str, list[str], list[str], dict[str, int]]] = {
    # name: (text, passes, expected ops, expected attributes of the last node)
    "bias_3d": (_text(X3, W + BIAS + "  m = MatMul(x, w)\n  y = Add(m, b)"),
                ["fuse_matmul_bias"], ["lepton.MatMulAdd"], {"transA": 0, "transB": 0}),
    "bias_2d_is_gemm": (_text(X2, W + BIAS + "  m = MatMul(x, w)\n  y = Add(b, m)"),
                        ["fuse_matmul_bias"], ["Gemm"], {"transA": 0, "transB": 0}),
    "bias_row_shaped": (
        _text(X3, W + BIAS.replace("float[6]", "float[1,6]") + "  m = MatMul(x, w)\n"
              "  y = Add(m, b)"),
        ["fuse_matmul_bias"], ["lepton.MatMulAdd"], {}),
    "transposed_constant": (_text(X3, WT + "  t = Transpose<perm = [1, 0]>(wt)\n"
                                  "  y = MatMul(x, t)"),
                            ["fold_matmul_transpose"], ["MatMul"], {}),
    "transposed_activation_b": (
        _text('(float["N",4,8] x, float["N",6,8] z) => (float["N",4,6] y)',
              "  t = Transpose<perm = [0, 2, 1]>(z)\n  y = MatMul(x, t)"),
        ["fold_matmul_transpose"], ["lepton.MatMulAdd"], {"transA": 0, "transB": 1}),
    "transposed_activation_a_2d": (
        _text('(float[8,"N"] x) => (float["N",6] y)',
              W + "  t = Transpose<perm = [1, 0]>(x)\n  y = MatMul(t, w)"),
        ["fold_matmul_transpose"], ["Gemm"], {"transA": 1, "transB": 0}),
    "both_transposed_then_bias": (
        _text('(float["N",8,4] x, float["N",6,8] z) => (float["N",4,6] y)',
              BIAS + "  ta = Transpose<perm = [0, 2, 1]>(x)\n"
              "  tb = Transpose<perm = [0, 2, 1]>(z)\n  m = MatMul(ta, tb)\n  y = Add(m, b)"),
        ["fold_matmul_transpose", "fuse_matmul_bias"], ["lepton.MatMulAdd"],
        {"transA": 1, "transB": 1}),
    "gemm_operand_keeps_alpha_beta": (
        _text('(float[8,"N"] x) => (float["N",6] y)',
              W + BIAS + "  t = Transpose<perm = [1, 0]>(x)\n"
              "  y = Gemm<alpha = 0.5, beta = 2.0>(t, w, b)"),
        ["fold_matmul_transpose"], ["Gemm"], {"transA": 1}),
}


def _run(names: list[str], g: Graph) -> bool:
    return PassManager(names).run(g, PassContext(verify_each=True)).modified


@pytest.mark.parametrize("case", sorted(CASES))
def test_rule_fires(case: str) -> None:
    text, passes, expected, attrs = CASES[case]
    g, before = graph_from_text(text), graph_from_text(text)
    assert _run(passes, g)
    assert op_list(g) == expected
    for k, v in attrs.items():
        assert g.nodes[-1].attrs[k] == v, (k, g.nodes[-1].attrs)
    assert "N" in g.outputs[0].shape  # type: ignore[operator]
    assert_equivalent(before, g, random_inputs(before, batch=3), rtol=1e-5, atol=1e-5)
    assert not _run(passes, g)  # idempotent


def test_gemm_alpha_beta_are_kept() -> None:
    g = graph_from_text(CASES["gemm_operand_keeps_alpha_beta"][0])
    assert _run(["fold_matmul_transpose"], g)
    attrs = g.nodes[0].attrs
    assert attrs["alpha"] == pytest.approx(0.5) and attrs["beta"] == pytest.approx(2.0)


def test_transposed_constant_is_stored_as_k_by_n() -> None:
    g = graph_from_text(CASES["transposed_constant"][0])
    assert _run(["fold_matmul_transpose"], g)
    w = g.nodes[0].inputs[1]
    assert w.const is not None and w.const.shape == (8, 6)


@pytest.mark.parametrize(
    "text,passes",
    [
        # one value per row, not per column: not a bias epilogue
        (_text(X3, W + "  b = Constant<value = float[4,1] {1.0, 2.0, 3.0, 4.0}>()\n"
               "  m = MatMul(x, w)\n  y = Add(m, b)"), ["fuse_matmul_bias"]),
        # the bias is not a constant
        (_text('(float["N",4,8] x, float[6] c) => (float["N",4,6] y)',
               W + "  m = MatMul(x, w)\n  y = Add(m, c)"), ["fuse_matmul_bias"]),
        # 1-D activation: MatMul's vector semantics
        (_text("(float[8] x) => (float[6] y)", W + BIAS + "  m = MatMul(x, w)\n  y = Add(m, b)"),
         ["fuse_matmul_bias"]),
        # not a swap of the last two axes
        (_text('(float[4,"N",8] x) => (float["N",4,6] y)',
               W + "  t = Transpose<perm = [1, 0, 2]>(x)\n  y = MatMul(t, w)"),
         ["fold_matmul_transpose"]),
    ],
    ids=["per_row_constant", "bias_not_constant", "vector_operand", "other_perm"],
)
def test_refuses(text: str, passes: list[str]) -> None:
    g = graph_from_text(text)
    ops = op_list(g)
    assert not _run(passes, g)
    assert op_list(g) == ops


@pytest.mark.parametrize(
    "text,passes",
    [
        (_text('(float["N",4,8] x, float["N",6,8] z) => (float["N",4,6] y, float["N",8,6] t)',
               "  t = Transpose<perm = [0, 2, 1]>(z)\n  y = MatMul(x, t)"),
         ["fold_matmul_transpose"]),
        (_text('(float["N",4,8] x) => (float["N",4,6] y, float["N",4,6] m)',
               W + BIAS + "  m = MatMul(x, w)\n  y = Add(m, b)"), ["fuse_matmul_bias"]),
    ],
    ids=["transposed_value_read_elsewhere", "product_read_elsewhere"],
)
def test_intermediate_with_an_outside_reader_stays(text: str, passes: list[str]) -> None:
    g = graph_from_text(text)
    ops = op_list(g)
    assert not _run(passes, g)
    assert op_list(g) == ops


def test_bias_is_stored_one_dimensional() -> None:
    g = graph_from_text(CASES["bias_row_shaped"][0])
    assert _run(["fuse_matmul_bias"], g)
    bias = g.nodes[0].inputs[2]
    assert bias.const is not None and bias.const.shape == (6,)
    np.testing.assert_allclose(bias.const, [0.1, -0.2, 0.3, -0.4, 0.5, -0.6], rtol=1e-6)
