"""fuse_activations: GELU (erf, tanh), SiLU, HardSwish, HardSigmoid and Mish chains."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from onnx import helper
from onnx.reference import ReferenceEvaluator

from lepton_compiler.ir import Graph, Node, Value
from lepton_compiler.ops import lookup_node
from lepton_compiler.pass_manager import PassContext
from lepton_compiler.passes.fusion.activations import FuseActivationsPass
from lepton_compiler.testing import assert_equivalent, graph_from_text, op_list, random_inputs

SIG = '(float["N",8] x) => (float["N",8] y)'


def _text(body: str, sig: str = SIG) -> str:
    return f"g {sig} {{\n{body}\n}}"


def _const(name: str, value: float) -> str:
    return f"  {name} = Constant<value = float {{{value!r}}}>()\n"


def _gelu(shape: str, inner: str, half: float = 0.5) -> str:
    """GELU text: `inner` picks the gate, `shape` the association order of the outer Muls."""
    body = _const("half", half) + _const("one", 1.0)
    if inner == "erf_div":
        body += _const("c", 1.4142135381698608) + "  t = Div(x, c)\n  e = Erf(t)\n"
    elif inner == "erf_mul":
        body += _const("c", 0.7071067690849304) + "  t = Mul(x, c)\n  e = Erf(t)\n"
    else:
        if inner == "tanh_pow":
            body += _const("three", 3.0) + "  cube = Pow(x, three)\n"
        else:
            body += "  sq = Mul(x, x)\n  cube = Mul(sq, x)\n"
        body += (_const("k", 0.044715) + _const("s", 0.7978845608028654)
                 + "  kc = Mul(k, cube)\n  p = Add(x, kc)\n  t = Mul(p, s)\n  e = Tanh(t)\n")
    body += "  g = Add(one, e)\n"
    body += {
        "xhalf_gate": "  xh = Mul(half, x)\n  y = Mul(xh, g)",
        "xgate_half": "  xg = Mul(x, g)\n  y = Mul(half, xg)",
        "x_halfgate": "  hg = Mul(g, half)\n  y = Mul(x, hg)",
    }[shape]
    return _text(body)


GELU_INNERS = ("erf_div", "erf_mul", "tanh_pow", "tanh_mul")
GELU_SHAPES = ("xhalf_gate", "xgate_half", "x_halfgate")

CASES: dict[str, tuple[str, list[str]]] = {
    "silu": (_text("  s = Sigmoid(x)\n  y = Mul(s, x)"), ["lepton.SiLU"]),
    "hardswish_hardsigmoid": (
        _text("  h = HardSigmoid<alpha = 0.16666667, beta = 0.5>(x)\n  y = Mul(x, h)"),
        ["HardSwish"]),
    "hardswish_div6": (
        _text(_const("three", 3.0) + _const("lo", 0.0) + _const("hi", 6.0) + _const("six", 6.0)
              + "  a = Add(x, three)\n  r = Clip(a, lo, hi)\n  m = Mul(x, r)\n  y = Div(m, six)"),
        ["HardSwish"]),
    "hardswish_mul_sixth": (
        _text(_const("three", 3.0) + _const("lo", 0.0) + _const("hi", 6.0)
              + _const("s", 0.16666667) + "  a = Add(three, x)\n  r = Clip(a, lo, hi)\n"
              "  m = Mul(r, x)\n  y = Mul(m, s)"),
        ["HardSwish"]),
    "hardswish_x_times_hardsigmoid_relu6": (  # MobileNetV3: x * (relu6(x + 3) / 6)
        _text(_const("three", 3.0) + _const("lo", 0.0) + _const("hi", 6.0) + _const("six", 6.0)
              + "  a = Add(x, three)\n  r = Clip(a, lo, hi)\n  h = Div(r, six)\n  y = Mul(x, h)"),
        ["HardSwish"]),
    "hardsigmoid_relu6_mul": (
        _text(_const("three", 3.0) + _const("lo", 0.0) + _const("hi", 6.0)
              + _const("s", 0.16666667) + "  a = Add(x, three)\n  r = Clip(a, lo, hi)\n"
              "  y = Mul(r, s)"),
        ["HardSigmoid"]),
    "hardsigmoid_clip_mul": (
        _text(_const("a", 0.2) + _const("b", 0.5) + _const("lo", 0.0) + _const("hi", 1.0)
              + "  m = Mul(x, a)\n  t = Add(b, m)\n  y = Clip(t, lo, hi)"),
        ["HardSigmoid"]),
    "hardsigmoid_clip_div": (
        _text(_const("a", 6.0) + _const("b", 0.5) + _const("lo", 0.0) + _const("hi", 1.0)
              + "  m = Div(x, a)\n  t = Add(m, b)\n  y = Clip(t, lo, hi)"),
        ["HardSigmoid"]),
    "mish": (_text("  s = Softplus(x)\n  t = Tanh(s)\n  y = Mul(x, t)"), ["Mish"]),
    "mish_log_exp": (
        _text(_const("one", 1.0) + "  e = Exp(x)\n  a = Add(e, one)\n  s = Log(a)\n"
              "  t = Tanh(s)\n  y = Mul(t, x)"),
        ["Mish"]),
}
for _shape, _inner in itertools.product(GELU_SHAPES, GELU_INNERS):
    CASES[f"gelu_{_inner}_{_shape}"] = (_gelu(_shape, _inner), ["lepton.Gelu"])


def _run(g: Graph) -> bool:
    return FuseActivationsPass()(g, PassContext(verify_each=True)).modified


@pytest.mark.parametrize("case", sorted(CASES))
def test_rule_fires(case: str) -> None:
    text, expected = CASES[case]
    g, before = graph_from_text(text), graph_from_text(text)
    assert _run(g)
    assert op_list(g) == expected
    assert all(n.meta.get("rule") for n in g)
    assert g.inputs[0].shape == ("N", 8) and g.outputs[0].shape == ("N", 8)  # symbolic kept
    assert_equivalent(before, g, random_inputs(before, batch=3), rtol=1e-5, atol=1e-6)
    assert not _run(g)  # idempotent


@pytest.mark.parametrize("inner", GELU_INNERS)
def test_gelu_approximation_attribute(inner: str) -> None:
    g = graph_from_text(_gelu("xhalf_gate", inner))
    assert _run(g)
    assert g.nodes[0].attrs["approximate"] == ("tanh" if inner.startswith("tanh") else "none")


def test_hardsigmoid_attributes() -> None:
    g = graph_from_text(CASES["hardsigmoid_clip_div"][0])
    assert _run(g)
    attrs = g.nodes[0].attrs
    assert attrs["alpha"] == pytest.approx(1 / 6) and attrs["beta"] == pytest.approx(0.5)


@pytest.mark.parametrize(
    "text",
    [
        _gelu("xhalf_gate", "erf_div", half=0.6),  # 0.6 is not GELU's 0.5
        _gelu("xgate_half", "tanh_pow").replace("{0.044715}", "{0.05}"),
        _text("  h = HardSigmoid(x)\n  y = Mul(x, h)"),  # default alpha 0.2: not HardSwish
        _text(_const("three", 3.0) + _const("lo", 0.0) + _const("hi", 6.0) + _const("six", 5.0)
              + "  a = Add(x, three)\n  r = Clip(a, lo, hi)\n  m = Mul(x, r)\n  y = Div(m, six)"),
        _text("  s = Sigmoid(x)\n  y = Mul(s, s)"),  # s * sigmoid(s) needs s = x
        _text("  s = Sigmoid(x)\n  n = Neg(x)\n  y = Mul(n, s)"),  # a different x
    ],
    ids=["gelu_half_0.6", "gelu_tanh_cubic_0.05", "hardsigmoid_default", "relu6_div5",
         "sigmoid_squared", "sigmoid_other_x"],
)
def test_wrong_constant_or_operand_does_not_fire(text: str) -> None:
    g = graph_from_text(text)
    ops = op_list(g)
    assert not _run(g)
    assert op_list(g) == ops


@pytest.mark.parametrize(
    "text",
    [
        _gelu("xhalf_gate", "erf_div").replace("=> (float[\"N\",8] y)",
                                               "=> (float[\"N\",8] y, float[\"N\",8] e)"),
        _text("  s = Sigmoid(x)\n  m = Mul(x, s)\n  y = Add(m, s)"),
    ],
    ids=["gelu_erf_is_an_output", "silu_gate_read_twice"],
)
def test_intermediate_with_an_outside_reader_stays(text: str) -> None:
    g = graph_from_text(text)
    ops = op_list(g)
    assert not _run(g)
    assert op_list(g) == ops


def test_gelu_input_with_other_readers_still_fuses() -> None:
    """x itself may be read elsewhere (a residual): it is not inside the match."""
    text = _gelu("xgate_half", "erf_div").replace("y = Mul(half, xg)",
                                                  "z = Mul(half, xg)\n  y = Add(z, x)")
    g, before = graph_from_text(text), graph_from_text(text)
    assert _run(g)
    assert op_list(g) == ["lepton.Gelu", "Add"]
    assert_equivalent(before, g)


def test_trace_names_the_wrong_constant() -> None:
    g = graph_from_text(_gelu("xhalf_gate", "erf_div", half=0.6))
    ctx = PassContext(trace_rules=True)
    FuseActivationsPass()(g, ctx)
    text = "\n".join(ctx.traces)
    assert "gelu_erf_div_xhalf_gate: did not fire" in text and "$half" in text


# -- the fused ops against ONNX's own definitions of later opsets -----------------------------


def _onnx_op(op: str, opset: int, x: np.ndarray, **attrs: object) -> np.ndarray:
    node = helper.make_node(op, ["x"], ["y"], **attrs)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", 1, None)],
                              [helper.make_tensor_value_info("y", 1, None)])  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    return ReferenceEvaluator(model).run(None, {"x": x})[0]


def _ours(op: str, x: np.ndarray, **attrs: object) -> np.ndarray:
    node = Node(op, [Value("x")], attrs)
    ref = lookup_node(node).reference
    assert ref is not None
    return ref(node, [x], {})[0]


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_matches_onnx_gelu_20(approximate: str) -> None:
    x = np.linspace(-12, 12, 603, dtype=np.float32).reshape(3, 201)
    expected = _onnx_op("Gelu", 20, x, approximate=approximate)
    got = _ours("lepton.Gelu", x, approximate=approximate)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_silu_matches_onnx_swish_24() -> None:
    x = np.linspace(-60, 60, 801, dtype=np.float32)  # ONNX's Swish overflows beyond -88
    np.testing.assert_allclose(_ours("lepton.SiLU", x), _onnx_op("Swish", 24, x), rtol=1e-5,
                               atol=1e-6)  # fmt: skip
