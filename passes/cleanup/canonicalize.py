"""Canonicalization: one form for ops that can be written several ways, so later passes match
one pattern instead of many.

Rules (each a pattern rule; see `lepton_compiler.rewriter`):
- ``Sub(x, c)`` → ``Add(x, -c)`` for float constants (exact: negation is exact);
- ``Div(x, c)`` → ``Mul(x, 1/c)`` for float constants that are powers of two (exact; other
  divisors keep their Div so results stay bit-identical);
- ``Clip(x, 0, +inf)`` / ``Clip(x, 0)`` → ``Relu(x)``;
- ``Gemm(A, B)`` without bias, alpha = 1, transA = 0 and a constant B → ``MatMul``; with a
  bias, a constant B stored transposed (transB = 1) is pre-transposed so every Gemm and
  MatMul weight has the same [K, N] layout (node count never grows).
Belongs in the cleanup pipeline, after constant folding.
"""

from __future__ import annotations

import numpy as np

from lepton_compiler.ir import TensorType, Value
from lepton_compiler.pass_manager import register_pass
from lepton_compiler.rewriter import Builder, Const, Match, Op, RewritePass, Rule, Var


def _is_float(v: Value) -> bool:
    return isinstance(v.type, TensorType) and v.type.dtype.is_float


def _sub_to_add() -> Rule:
    def check(m: Match) -> str | None:
        if not (_is_float(m["x"]) and _is_float(m["c"])):
            return "only float Sub is rewritten"
        return None

    return Rule(
        "sub_const_to_add",
        Op("Sub", Var("x"), Const("c"), name="sub"),
        check=check,
        rewrite=lambda m, b: [b.op("Add", m["x"], b.const(-m.const("c"), "neg"))],
    )


def _power_of_two(a: np.ndarray) -> bool:
    if a.size == 0 or not np.all(np.isfinite(a)) or np.any(a == 0):
        return False
    mantissa, _ = np.frexp(np.abs(a.astype(np.float64)))
    return bool(np.all(mantissa == 0.5))


def _div_to_mul() -> Rule:
    def check(m: Match) -> str | None:
        if not (_is_float(m["x"]) and _is_float(m["c"])):
            return "only float Div is rewritten"
        if not _power_of_two(m.const("c")):
            return "the divisor is not a power of two (1/c would round)"
        return None

    def rewrite(m: Match, b: Builder) -> list[Value]:
        c = m.const("c")
        return [b.op("Mul", m["x"], b.const((1 / c).astype(c.dtype), "recip"))]

    return Rule("div_const_to_mul", Op("Div", Var("x"), Const("c"), name="div"),
                check=check, rewrite=rewrite)


def _clip_to_relu() -> list[Rule]:
    zero = Const("lo", lambda a: a.size == 1 and float(a.reshape(-1)[0]) == 0.0)
    inf = Const("hi", lambda a: a.size == 1 and bool(np.isposinf(a.reshape(-1)[0])))

    def relu(m: Match, b: Builder) -> list[Value]:
        return [b.op("Relu", m["x"])]

    return [
        Rule("clip_to_relu", Op("Clip", Var("x"), zero, inf, name="clip"), rewrite=relu),
        Rule("clip_min_to_relu", Op("Clip", Var("x"), zero, name="clip"), rewrite=relu),
        Rule("clip_min_to_relu", Op("Clip", Var("x"), zero, None, name="clip"), rewrite=relu),
    ]


def _gemm_forms() -> list[Rule]:
    def plain(m: Match) -> str | None:
        g = m.node("gemm")
        if g.attrs.get("alpha", 1.0) != 1.0 or g.attrs.get("transA", 0) != 0:
            return "alpha != 1 or transA set"
        return None

    def weight(m: Match) -> np.ndarray:
        w = m.const("b")
        return np.ascontiguousarray(w.T) if m.node("gemm").attrs.get("transB", 0) else w

    def with_bias(m: Match) -> str | None:
        reason = plain(m)
        if reason is None and not m.node("gemm").attrs.get("transB", 0):
            return "already canonical (transB = 0)"
        return reason

    def to_matmul(m: Match, b: Builder) -> list[Value]:
        return [b.op("MatMul", m["a"], b.const(weight(m), "weight"))]

    def untranspose(m: Match, b: Builder) -> list[Value]:
        g = m.node("gemm")
        return [b.op("Gemm", m["a"], b.const(weight(m), "weight"), m["c"],
                     alpha=1.0, beta=g.attrs.get("beta", 1.0), transA=0, transB=0)]

    return [
        Rule("gemm_to_matmul", Op("Gemm", Var("a"), Const("b"), name="gemm"),
             check=plain, rewrite=to_matmul),
        Rule("gemm_to_matmul", Op("Gemm", Var("a"), Const("b"), None, name="gemm"),
             check=plain, rewrite=to_matmul),
        Rule("gemm_untranspose_weight", Op("Gemm", Var("a"), Const("b"), Var("c"), name="gemm"),
             check=with_bias, rewrite=untranspose),
    ]


@register_pass
class CanonicalizePass(RewritePass):
    """Rewrite equivalent op forms into one canonical form (Sub/Div by constants, Clip, Gemm)."""

    name = "canonicalize"

    def rules(self) -> list[Rule]:
        return [_sub_to_add(), _div_to_mul(), *_clip_to_relu(), *_gemm_forms()]
