"""The pattern rewriter: matching, commuted inputs, escapes, checks, tracing, tagging."""

from __future__ import annotations

import numpy as np

from lepton_compiler.ir import verify
from lepton_compiler.rewriter import Builder, Const, Match, Op, Rule, RuleTrace, Var, apply_rules
from tests.passes.conftest import check_equivalent, feeds_for, ops, parse

HEADER = '<ir_version: 8, opset_import: ["" : 18]>\n'

# HardSwish written out: x * HardSigmoid(x) → HardSwish(x)
HSWISH = Rule(
    "hardswish",
    Op("Mul", Var("x"), Op("HardSigmoid", Var("x"), name="hs",
                           attrs={"alpha": 1 / 6, "beta": 0.5}), name="mul"),
    rewrite=lambda m, b: [b.op("HardSwish", m["x"])],
)


def _text(mul: str) -> str:
    return HEADER + (
        "g (float[2,3] x) => (float[2,3] y) {\n"
        " h = HardSigmoid<alpha = 0.16666666666666666, beta = 0.5>(x)\n"
        f" y = {mul}\n}}"
    )


def test_fires_in_both_input_orders_of_a_commutative_root() -> None:
    for mul in ("Mul(x, h)", "Mul(h, x)"):
        g, before = parse(_text(mul)), parse(_text(mul))
        assert apply_rules(g, [HSWISH]) == 1
        assert ops(g) == ["HardSwish"]
        assert g.nodes[0].meta["rule"] == "hardswish"
        assert g.outputs[0].name == "y"
        check_equivalent(before, g, feeds_for(before))


def test_inner_value_with_outside_user_blocks_the_rewrite() -> None:
    text = HEADER + (
        "g (float[2,3] x) => (float[2,3] y, float[2,3] z) {\n"
        " h = HardSigmoid<alpha = 0.16666666666666666, beta = 0.5>(x)\n"
        " y = Mul(x, h)\n z = Neg(h)\n}"
    )
    g = parse(text)
    traces: dict[str, RuleTrace] = {}
    assert apply_rules(g, [HSWISH], traces=traces) == 0
    assert ops(g) == ["HardSigmoid", "Mul", "Neg"]
    assert "also read by Neg" in str(traces["hardswish"])


def test_var_must_bind_the_same_value() -> None:
    text = HEADER + (
        "g (float[2,3] x, float[2,3] w) => (float[2,3] y) {\n"
        " h = HardSigmoid<alpha = 0.16666666666666666, beta = 0.5>(w)\n y = Mul(x, h)\n}"
    )
    g = parse(text)
    traces: dict[str, RuleTrace] = {}
    assert apply_rules(g, [HSWISH], traces=traces) == 0
    assert "$x is bound to" in str(traces["hardswish"])


def test_check_reason_and_wrong_attribute_are_traced() -> None:
    g = parse(_text("Mul(x, h)").replace("beta = 0.5", "beta = 0.25"))
    traces: dict[str, RuleTrace] = {}
    assert apply_rules(g, [HSWISH], traces=traces) == 0
    assert "attribute beta=0.25" in str(traces["hardswish"])
    refusing = Rule("never", HSWISH.pattern, HSWISH.rewrite, check=lambda m: "no thanks")
    g2 = parse(_text("Mul(x, h)"))
    assert apply_rules(g2, [refusing], traces=traces) == 0
    assert "no thanks" in str(traces["never"])


def test_rewrite_with_new_constant_and_iteration_cap() -> None:
    # x + c1 + c2 + c3 → folds pairwise into one Add by repeated application.
    def fold(m: Match, b: Builder):
        return [b.op("Add", m["x"], b.const(m.const("a") + m.const("b")))]

    rule = Rule("add_add", Op("Add", Op("Add", Var("x"), Const("a"), name="inner"), Const("b")),
                rewrite=fold)
    text = HEADER + (
        "g (float[3] x) => (float[3] y) {\n"
        " c = Constant<value = float {1.0}>()\n"
        " a1 = Add(x, c)\n a2 = Add(a1, c)\n y = Add(a2, c)\n}"
    )
    g, before = parse(text), parse(text)
    assert apply_rules(g, [rule]) == 2
    assert ops(g) == ["Add"]
    np.testing.assert_allclose(g.nodes[0].inputs[1].const, 3.0)
    verify(g)
    check_equivalent(before, g, feeds_for(before))


def test_iteration_cap_stops_a_rule_that_always_fires() -> None:
    again = Rule("again", Op("Relu", Var("x")), rewrite=lambda m, b: [b.op("Relu", m["x"])])
    g = parse(HEADER + "g (float[3] x) => (float[3] y) {\n y = Relu(x)\n}")
    assert apply_rules(g, [again], max_iterations=3) == 3
    assert ops(g) == ["Relu"] and g.outputs[0].name == "y"
    verify(g)
