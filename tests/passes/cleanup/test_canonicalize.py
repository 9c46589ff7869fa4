"""canonicalize: Sub/Div by constants, Clip→Relu, Gemm→MatMul+Add."""

from __future__ import annotations

import pytest

from lepton_compiler.pass_manager import PassContext
from lepton_compiler.passes.cleanup.canonicalize import CanonicalizePass
from tests.passes.conftest import check_equivalent, feeds_for, ops, parse

HEADER = '<ir_version: 8, opset_import: ["" : 18]>\n'


def _graph(body: str, sig: str = "(float[2,3] x) => (float[2,3] y)") -> str:
    return HEADER + f"g {sig} {{\n {body}\n}}"


CASES = {
    "sub": ("c = Constant<value = float[3] {1.0, 2.0, 3.0}>()\n y = Sub(x, c)", ["Add"]),
    "div_pow2": ("c = Constant<value = float {8.0}>()\n y = Div(x, c)", ["Mul"]),
    "clip_relu": ("lo = Constant<value = float {0.0}>()\n"
                  " hi = Constant<value = float {inf}>()\n y = Clip(x, lo, hi)", ["Relu"]),
    "clip_min_only": ("lo = Constant<value = float {0.0}>()\n y = Clip(x, lo)", ["Relu"]),
    "gemm_transb": (
        "w = Constant<value = float[4,3] {" + ", ".join(str(i / 7) for i in range(12)) + "}>()\n"
        " b = Constant<value = float[4] {1.0, 2.0, 3.0, 4.0}>()\n"
        " y = Gemm<transB = 1>(x, w, b)",
        ["Gemm"],
    ),
    "gemm_no_bias": (
        "w = Constant<value = float[4,3] {" + ", ".join(str(i / 7) for i in range(12)) + "}>()\n"
        " y = Gemm<transB = 1>(x, w)",
        ["MatMul"],
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_rule_fires(case: str, ctx: PassContext) -> None:
    body, expected = CASES[case]
    sig = "(float[2,3] x) => (float[2,4] y)" if case.startswith("gemm") else None
    text = _graph(body, sig) if sig else _graph(body)
    g, before = parse(text), parse(text)
    assert CanonicalizePass()(g, ctx).modified
    assert ops(g) == expected
    assert all(n.meta.get("rule") for n in g)  # new nodes are tagged with their rule
    if case == "gemm_transb":
        assert g.nodes[0].attrs["transB"] == 0 and g.nodes[0].inputs[1].shape == (3, 4)
    check_equivalent(before, g, feeds_for(before))
    assert not CanonicalizePass()(g, ctx).modified  # idempotent


@pytest.mark.parametrize(
    "body",
    [
        "c = Constant<value = float {3.0}>()\n y = Div(x, c)",  # 1/3 would round
        "lo = Constant<value = float {0.0}>()\n"
        " hi = Constant<value = float {6.0}>()\n y = Clip(x, lo, hi)",  # ReLU6 is not Relu
        "y = Sub(x, x)",  # not a constant
    ],
)
def test_rule_refuses(body: str, ctx: PassContext) -> None:
    g = parse(_graph(body))
    before_ops = ops(g)
    assert not CanonicalizePass()(g, ctx).modified
    assert ops(g) == before_ops


def test_trace_explains_refusal() -> None:
    g = parse(_graph("c = Constant<value = float {3.0}>()\n y = Div(x, c)"))
    ctx = PassContext(trace_rules=True, verify_each=True)
    CanonicalizePass()(g, ctx)
    text = "\n".join(ctx.traces)
    assert "div_const_to_mul: did not fire" in text and "power of two" in text
