"""fuse_normalization (LayerNorm, RMSNorm, Softmax, scale/bias folds) and fuse_skip_layernorm."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper
from onnx.reference import ReferenceEvaluator

from lepton_compiler.ir import Graph, Node, Value
from lepton_compiler.ops import lookup_node
from lepton_compiler.pass_manager import Pass, PassContext
from lepton_compiler.passes.fusion.normalization import (
    FuseNormalizationPass,
    FuseSkipLayerNormPass,
)
from lepton_compiler.testing import assert_equivalent, graph_from_text, op_list, random_inputs

SIG = '(float["N",4,8] x) => (float["N",4,8] y)'
AXES = "  ax = Constant<value = int64[1] {-1}>()\n"
EPS = "  eps = Constant<value = float {1e-5}>()\n"
TWO = "  two = Constant<value = float {2.0}>()\n"
GAMMA = "  gamma = Constant<value = float[8] {0.5, 1.5, 1.0, 2.0, 0.7, 1.1, 0.9, 1.3}>()\n"
BETA = "  beta = Constant<value = float[8] {0.1, -0.2, 0.3, 0.0, 0.5, -0.6, 0.7, 0.8}>()\n"


def _text(body: str, sig: str = SIG) -> str:
    return f"g {sig} {{\n{body}\n}}"


def _layernorm(square: str = "pow", norm: str = "div", affine: str = "gamma_beta",
               reduce_axis: int = -1) -> str:
    body = AXES.replace("{-1}", f"{{{reduce_axis}}}") + EPS + TWO + GAMMA + BETA
    body += "  m = ReduceMean(x, ax)\n  d = Sub(x, m)\n"
    body += "  sq = Pow(d, two)\n" if square == "pow" else "  sq = Mul(d, d)\n"
    body += "  v = ReduceMean(sq, ax)\n  ve = Add(v, eps)\n  s = Sqrt(ve)\n"
    out = "y" if affine == "none" else "n"
    if norm == "div":
        body += f"  {out} = Div(d, s)\n"
    else:
        body += f"  r = Reciprocal(s)\n  {out} = Mul(d, r)\n"
    if affine == "gamma":
        body += "  y = Mul(gamma, n)\n"
    elif affine == "gamma_beta":
        body += "  gn = Mul(n, gamma)\n  y = Add(gn, beta)\n"
    return _text(body)


def _rmsnorm(square: str = "pow", norm: str = "mul_reciprocal", two: float = 2.0) -> str:
    body = AXES + EPS + TWO.replace("2.0", repr(two)) + GAMMA
    body += "  sq = Pow(x, two)\n" if square == "pow" else "  sq = Mul(x, x)\n"
    body += "  ms = ReduceMean(sq, ax)\n  ve = Add(ms, eps)\n  s = Sqrt(ve)\n"
    body += "  n = Div(x, s)\n" if norm == "div" else "  r = Reciprocal(s)\n  n = Mul(x, r)\n"
    return _text(body + "  y = Mul(gamma, n)")


def _softmax(
    stable: bool = True, norm: str = "div", axis: int = -1, max_axis: int | None = None
) -> str:
    body = AXES.replace("{-1}", f"{{{axis}}}")
    if stable:
        first = axis if max_axis is None else max_axis
        body += f"  max_ax = Constant<value = int64[1] {{{first}}}>()\n"
        body += "  mx = ReduceMax(x, max_ax)\n  sh = Sub(x, mx)\n  e = Exp(sh)\n"
    else:
        body += "  e = Exp(x)\n"
    body += "  t = ReduceSum(e, ax)\n"
    body += "  y = Div(e, t)" if norm == "div" else "  r = Reciprocal(t)\n  y = Mul(r, e)"
    return _text(body)


def _skip(bias: bool = True, beta: bool = True, extra: str = "") -> str:
    sig = '(float["N",4,8] x, float["N",4,8] res) => (float["N",4,8] y)'
    body = GAMMA + BETA
    if bias:
        body += "  b = Constant<value = float[8] {0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8}>()\n"
        body += "  xb = Add(x, b)\n  s = Add(res, xb)\n"
    else:
        body += "  s = Add(x, res)\n"
    ln_in = "s, gamma, beta" if beta else "s, gamma"
    body += f"  y = LayerNormalization<axis = -1, epsilon = 1e-5>({ln_in})\n" + extra
    return _text(body, sig)


NORM_CASES: dict[str, tuple[str, list[str]]] = {
    "layernorm_pow_div_gamma_beta": (_layernorm(), ["LayerNormalization"]),
    "layernorm_mul_reciprocal_plain": (_layernorm("mul", "mul_reciprocal", "none"),
                                       ["LayerNormalization"]),
    "layernorm_pow_reciprocal_gamma": (_layernorm("pow", "mul_reciprocal", "gamma"),
                                       ["LayerNormalization"]),
    "layernorm_mul_div_gamma_beta": (_layernorm("mul", "div"), ["LayerNormalization"]),
    "rmsnorm_pow_reciprocal": (_rmsnorm(), ["lepton.RMSNorm"]),
    "rmsnorm_mul_div": (_rmsnorm("mul", "div"), ["lepton.RMSNorm"]),
    "fold_into_existing_layernorm": (
        _text(GAMMA + BETA + "  one = Constant<value = float[8] {1., 1., 1., 1., 1., 1., 1., 1.}>()"
              "\n  n = LayerNormalization<axis = -1, epsilon = 1e-5>(x, one)\n"
              "  gn = Mul(n, gamma)\n  y = Add(beta, gn)"),
        ["LayerNormalization"]),
    "softmax_stable_div": (_softmax(), ["Softmax"]),
    "softmax_plain_mul_reciprocal": (_softmax(False, "mul"), ["Softmax"]),
    "softmax_middle_axis": (_softmax(True, "div", axis=1), ["Softmax"]),
}


def _run(p: Pass, g: Graph) -> bool:
    return p(g, PassContext(verify_each=True)).modified


@pytest.mark.parametrize("case", sorted(NORM_CASES))
def test_normalization_fires(case: str) -> None:
    text, expected = NORM_CASES[case]
    g, before = graph_from_text(text), graph_from_text(text)
    assert _run(FuseNormalizationPass(), g)
    assert op_list(g) == expected
    assert g.outputs[0].shape == ("N", 4, 8)
    assert_equivalent(before, g, random_inputs(before, batch=3), rtol=1e-5, atol=1e-5)
    assert not _run(FuseNormalizationPass(), g)  # idempotent


def test_layernorm_attributes_and_folded_constants() -> None:
    g = graph_from_text(_layernorm())
    assert _run(FuseNormalizationPass(), g)
    ln = g.nodes[0]
    assert ln.attrs["axis"] == -1 and ln.attrs["epsilon"] == pytest.approx(1e-5)
    np.testing.assert_allclose(ln.inputs[1].const, [0.5, 1.5, 1.0, 2.0, 0.7, 1.1, 0.9, 1.3])
    np.testing.assert_allclose(ln.inputs[2].const, [0.1, -0.2, 0.3, 0.0, 0.5, -0.6, 0.7, 0.8])


def test_softmax_axis() -> None:
    g = graph_from_text(_softmax(True, "div", axis=1))
    assert _run(FuseNormalizationPass(), g)
    assert g.nodes[0].attrs["axis"] == -2  # axis 1 of a rank-3 tensor


@pytest.mark.parametrize(
    "text",
    [
        _layernorm().replace("{2.0}", "{3.0}"),  # Pow(d, 3) is not a variance
        _layernorm(reduce_axis=1),  # over the middle axis: not LayerNormalization(axis=-1)
        _rmsnorm(two=3.0),
        _softmax(True, "div", axis=-1).replace("ReduceSum(e, ax)", "ReduceMean(e, ax)"),
    ],
    ids=["layernorm_pow3", "layernorm_axis1", "rmsnorm_pow3", "softmax_mean_not_sum"],
)
def test_wrong_constant_or_axis_does_not_fire(text: str) -> None:
    g = graph_from_text(text)
    ops = op_list(g)
    assert not _run(FuseNormalizationPass(), g)
    assert op_list(g) == ops


@pytest.mark.parametrize(
    "text,expected",
    [
        # e = Exp(...) is also an output: no Softmax rule may take it
        (_softmax().replace('=> (float["N",4,8] y)', '=> (float["N",4,8] y, float["N",4,8] e)'),
         None),
        # the variance is also read: neither LayerNorm nor RMSNorm may take it
        (_layernorm().replace('=> (float["N",4,8] y)', '=> (float["N",4,8] y, float["N",4,1] v)'),
         None),
        # the centered value is also read: LayerNorm may not take it, but d / rms(d) is an
        # RMSNorm of d (exactly what LayerNorm computes after centering)
        (_layernorm().replace('=> (float["N",4,8] y)', '=> (float["N",4,8] y, float["N",4,8] d)'),
         ["ReduceMean", "Sub", "lepton.RMSNorm", "Add"]),  # RMSNorm has no bias
        # max and sum over different axes: not the stable form, but exp(s) / sum(exp(s)) of
        # the shifted s is still a Softmax of s
        (_softmax(True, "div", axis=-1, max_axis=1), ["ReduceMax", "Sub", "Softmax"]),
    ],
    ids=["softmax_exp_read", "layernorm_var_read", "layernorm_centered_read",
         "softmax_mixed_axes"],
)
def test_intermediate_with_an_outside_reader(text: str, expected: list[str] | None) -> None:
    g, before = graph_from_text(text), graph_from_text(text)
    ops = op_list(g)
    assert _run(FuseNormalizationPass(), g) == (expected is not None)
    assert op_list(g) == (expected or ops)
    assert_equivalent(before, g, random_inputs(before, batch=2), rtol=1e-5, atol=1e-5)


def test_a_per_row_constant_does_not_fold() -> None:
    text = _layernorm(affine="none").replace(
        "  y = Div(d, s)",
        "  n = Div(d, s)\n  c = Constant<value = float[4,1] {1.0, 2.0, 3.0, 4.0}>()\n"
        "  y = Mul(n, c)")
    g, before = graph_from_text(text), graph_from_text(text)
    assert _run(FuseNormalizationPass(), g)
    assert op_list(g) == ["LayerNormalization", "Mul"]
    assert_equivalent(before, g, random_inputs(before, batch=2), rtol=1e-5, atol=1e-5)


SKIP_CASES: dict[str, tuple[str, list[str], int]] = {
    "bias_beta": (_skip(), ["lepton.SkipLayerNorm"], 5),
    "no_bias": (_skip(bias=False), ["lepton.SkipLayerNorm"], 4),
    "bias_no_beta": (_skip(beta=False), ["lepton.SkipLayerNorm"], 5),
    "no_bias_no_beta": (_skip(bias=False, beta=False), ["lepton.SkipLayerNorm"], 3),
}


@pytest.mark.parametrize("case", sorted(SKIP_CASES))
def test_skip_layernorm_fires(case: str) -> None:
    text, expected, arity = SKIP_CASES[case]
    g, before = graph_from_text(text), graph_from_text(text)
    assert _run(FuseSkipLayerNormPass(), g)
    assert op_list(g) == expected
    node = g.nodes[0]
    assert len(node.inputs) == arity
    assert node.inputs[0] is g.inputs[0] and node.inputs[1] is g.inputs[1]  # x, then residual
    assert_equivalent(before, g, random_inputs(before, batch=3), rtol=1e-5, atol=1e-5)
    assert not _run(FuseSkipLayerNormPass(), g)


def test_skip_layernorm_from_a_decomposed_layernorm() -> None:
    text = _layernorm().replace(SIG, '(float["N",4,8] a, float["N",4,8] res) => '
                                '(float["N",4,8] y)').replace(
        "  m = ReduceMean(x, ax)", "  x = Add(a, res)\n  m = ReduceMean(x, ax)")
    g, before = graph_from_text(text), graph_from_text(text)
    ctx = PassContext(verify_each=True)
    assert FuseNormalizationPass()(g, ctx).modified and FuseSkipLayerNormPass()(g, ctx).modified
    assert op_list(g) == ["lepton.SkipLayerNorm"]
    assert_equivalent(before, g, random_inputs(before, batch=2), rtol=1e-5, atol=1e-5)


def test_skip_layernorm_refuses_when_the_sum_is_read_elsewhere() -> None:
    text = _skip(extra="").replace("=> (float[\"N\",4,8] y)",
                                   "=> (float[\"N\",4,8] y, float[\"N\",4,8] s)")
    g = graph_from_text(text)
    ops = op_list(g)
    assert not _run(FuseSkipLayerNormPass(), g)
    assert op_list(g) == ops


def test_skip_layernorm_keeps_a_non_bias_add_outside() -> None:
    """A constant that varies along other axes is not a bias: it stays in its own Add."""
    text = _skip().replace(
        "b = Constant<value = float[8] {0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8}>()",
        "b = Constant<value = float[4,1] {0.1, 0.2, 0.3, 0.4}>()")
    g, before = graph_from_text(text), graph_from_text(text)
    assert _run(FuseSkipLayerNormPass(), g)
    assert op_list(g) == ["Add", "lepton.SkipLayerNorm"]
    assert_equivalent(before, g, random_inputs(before, batch=2), rtol=1e-5, atol=1e-5)


# -- the fused ops against ONNX's own definitions ---------------------------------------------


def _onnx_op(op: str, opset: int, inputs: list[np.ndarray], **attrs: object) -> np.ndarray:
    names = [f"in{i}" for i in range(len(inputs))]
    node = helper.make_node(op, names, ["y"], **attrs)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info(n, 1, None)
                                            for n in names],
                              [helper.make_tensor_value_info("y", 1, None)])  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    return ReferenceEvaluator(model).run(None, dict(zip(names, inputs, strict=True)))[0]


def _ours(op: str, inputs: list[np.ndarray | None], **attrs: object) -> np.ndarray:
    node = Node(op, [None if a is None else Value(f"in{i}") for i, a in enumerate(inputs)],
                attrs)
    ref = lookup_node(node).reference
    assert ref is not None
    return ref(node, list(inputs), {})[0]


RNG = np.random.default_rng(0)
X = RNG.standard_normal((2, 5, 16)).astype(np.float32)
GAMMA_16 = RNG.uniform(0.5, 1.5, 16).astype(np.float32)
BETA_16 = RNG.standard_normal(16).astype(np.float32)


def test_rmsnorm_matches_onnx_rmsnormalization_23() -> None:
    expected = _onnx_op("RMSNormalization", 23, [X, GAMMA_16], axis=-1, epsilon=1e-6)
    got = _ours("lepton.RMSNorm", [X, GAMMA_16], axis=-1, epsilon=1e-6)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("bias,beta", [(True, True), (True, False), (False, True)])
def test_skip_layernorm_matches_onnx_layernormalization(bias: bool, beta: bool) -> None:
    skip = RNG.standard_normal((2, 5, 16)).astype(np.float32)
    b = RNG.standard_normal(16).astype(np.float32)
    total = X + b + skip if bias else X + skip
    ln_in = [total, GAMMA_16, BETA_16] if beta else [total, GAMMA_16]
    expected = _onnx_op("LayerNormalization", 17, ln_in, axis=-1, epsilon=1e-5)
    ins: list[np.ndarray | None] = [X, skip, GAMMA_16, BETA_16 if beta else None]
    got = _ours("lepton.SkipLayerNorm", [*ins, b] if bias else ins, epsilon=1e-5)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
