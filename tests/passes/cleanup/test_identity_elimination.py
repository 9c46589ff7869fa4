"""identity_elimination: every no-op form goes; real work and signature entries stay."""

from __future__ import annotations

import pytest

from lepton_compiler.pass_manager import PassContext
from lepton_compiler.passes.cleanup.dead_code import DeadCodeEliminationPass
from lepton_compiler.passes.cleanup.identity_elimination import IdentityEliminationPass
from tests.passes.conftest import check_equivalent, feeds_for, ops, parse

HEADER = '<ir_version: 8, opset_import: ["" : 18]>\n'

CASES = {
    "identity": "a = Identity(x)\n y = Relu(a)",
    "dropout": "a = Dropout(x)\n y = Relu(a)",
    "mul_one": "one = Constant<value = float {1.0}>()\n a = Mul(x, one)\n y = Relu(a)",
    "one_mul": "one = Constant<value = float {1.0}>()\n a = Mul(one, x)\n y = Relu(a)",
    "add_zero": "z = Constant<value = float[3] {0.0, 0.0, 0.0}>()\n a = Add(x, z)\n y = Relu(a)",
    "sub_zero": "z = Constant<value = float {0.0}>()\n a = Sub(x, z)\n y = Relu(a)",
    "div_one": "one = Constant<value = float {1.0}>()\n a = Div(x, one)\n y = Relu(a)",
    "cast_same": "a = Cast<to = 1>(x)\n y = Relu(a)",
    "reshape_same": "s = Constant<value = int64[2] {2, 3}>()\n a = Reshape(x, s)\n y = Relu(a)",
    "transpose_pair": "a = Transpose<perm = [1, 0]>(x)\n b = Transpose<perm = [1, 0]>(a)\n"
    " y = Relu(b)",
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_no_op_is_removed(case: str, ctx: PassContext) -> None:
    text = HEADER + "g (float[2,3] x) => (float[2,3] y) {\n " + CASES[case] + "\n}"
    g, before = parse(text), parse(text)
    assert IdentityEliminationPass()(g, ctx).modified
    DeadCodeEliminationPass()(g, ctx)
    assert ops(g) == ["Relu"]
    check_equivalent(before, g, feeds_for(before))
    assert not IdentityEliminationPass()(g, ctx).modified  # idempotent


@pytest.mark.parametrize(
    "body",
    [
        # Mul by 2 is real work.
        "two = Constant<value = float {2.0}>()\n a = Mul(x, two)\n y = Relu(a)",
        # Adding zeros that broadcast [2,3] up to [4,2,3] changes the shape.
        "z = Constant<value = float[4,2,3] {" + ", ".join(["0.0"] * 24) + "}>()\n"
        " a = Add(x, z)\n y = ReduceSum<keepdims = 0>(a, axes)",
        # 0 - x is not x.
        "z = Constant<value = float {0.0}>()\n a = Sub(z, x)\n y = Relu(a)",
        # A transpose pair that does not cancel.
        "a = Transpose<perm = [1, 0]>(x)\n b = Reshape(a, s)\n y = Relu(b)",
    ],
)
def test_real_work_stays(body: str, ctx: PassContext) -> None:
    extra = "axes = Constant<value = int64[1] {0}>()\n s = Constant<value = int64[2] {2, 3}>()\n"
    text = HEADER + "g (float[2,3] x) => (float[2,3] y) {\n " + extra + " " + body + "\n}"
    g = parse(text)
    before_ops = ops(g)
    assert not IdentityEliminationPass()(g, ctx).modified
    assert ops(g) == before_ops


def test_graph_output_fed_by_input_is_kept(ctx: PassContext) -> None:
    g = parse(HEADER + "g (float[2,3] x) => (float[2,3] y) {\n y = Identity(x)\n}")
    assert not IdentityEliminationPass()(g, ctx).modified
    assert ops(g) == ["Identity"]


def test_graph_output_name_survives(ctx: PassContext) -> None:
    text = HEADER + "g (float[2,3] x) => (float[2,3] y) {\n a = Relu(x)\n y = Identity(a)\n}"
    g, before = parse(text), parse(text)
    assert IdentityEliminationPass()(g, ctx).modified
    assert ops(g) == ["Relu"] and g.outputs[0].name == "y"
    check_equivalent(before, g, feeds_for(before))
