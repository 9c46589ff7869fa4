"""Normalization fusions: LayerNorm, RMSNorm and Softmax written out as reductions become one
op each, and a residual Add feeding a LayerNorm becomes ``lepton.SkipLayerNorm``.

Exporters of older opsets, TF2ONNX and hand-written models spell LayerNorm as
``ReduceMean → Sub → Pow → ReduceMean → Add(ε) → Sqrt → Div → Mul(γ) → Add(β)``, RMSNorm
(LLaMA, T5) as ``Pow → ReduceMean → Add(ε) → Sqrt → Reciprocal → Mul → Mul(γ)`` and Softmax as
``Exp(x - max) / sum``. One op per normalization is one kernel with one pass over memory and
a numerically careful formula; residual + LayerNorm in one op saves a full read and write of
the activations per transformer sub-layer.

Two passes, both in the fusion pipeline after ``fuse_activations`` and before
``fuse_attention`` (whose Softmax may come from here): ``fuse_normalization`` then
``fuse_skip_layernorm`` (which also takes the LayerNorms the first one made).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from lepton_compiler.ir import Node, TensorType, Value
from lepton_compiler.pass_manager import register_pass
from lepton_compiler.rewriter import Builder, Const, Match, Op, RewritePass, Rule, Var


def _scalar(value: float) -> Callable[[np.ndarray], bool]:
    def pred(a: np.ndarray) -> bool:
        return a.size == 1 and a.dtype.kind in "fiu" and float(a.reshape(-1)[0]) == value

    return pred


def _epsilon(a: np.ndarray) -> bool:
    return a.size == 1 and a.dtype.kind == "f" and 0.0 <= float(a.reshape(-1)[0]) < 1.0


def _rank(v: Value | None) -> int | None:
    return len(v.shape) if v is not None and v.shape is not None else None


def reduced_axes(node: Node) -> tuple[int, ...] | None:
    """The axes a Reduce* node reduces (normalized, sorted), or None when not constant."""
    rank = _rank(node.inputs[0])
    if rank is None:
        return None
    if len(node.inputs) > 1 and node.inputs[1] is not None:
        if node.inputs[1].const is None:
            return None
        axes = [int(a) for a in np.asarray(node.inputs[1].const).reshape(-1)]
    elif "axes" in node.attrs:  # opsets before 18 (13 for ReduceSum)
        axes = [int(a) for a in node.attrs["axes"]]
    else:
        axes = [] if node.attrs.get("noop_with_empty_axes", 0) else list(range(rank))
    return tuple(sorted(a % rank for a in axes)) if rank else ()


def _keepdims(node: Node) -> bool:
    return bool(node.attrs.get("keepdims", 1))


def _last_axis(node: Node) -> bool:
    rank = _rank(node.inputs[0])
    return _keepdims(node) and rank is not None and reduced_axes(node) == (rank - 1,)


def _last_dim(v: Value) -> int | None:
    shape = v.shape
    return shape[-1] if shape and isinstance(shape[-1], int) else None


def _norm_check(m: Match) -> str | None:
    x = m["x"]
    if not (isinstance(x.type, TensorType) and x.dtype.is_float):
        return "x is not a float tensor"
    if _last_dim(x) is None:
        return f"the last axis of %{x.name} has no static size (the scale needs one)"
    return None


def _eps(m: Match) -> float:
    return float(m.const("eps").reshape(-1)[0])


def _ones(m: Match, b: Builder) -> Value:
    n = _last_dim(m["x"])
    assert n is not None
    return b.const(np.ones(n, m["x"].dtype.numpy), "norm_scale")


def _normalize_forms(x: Var | Op, stat: Op) -> dict[str, Op]:
    """``x / sqrt(stat + eps)`` divided, or multiplied by the reciprocal."""
    std = Op("Sqrt", Op("Add", stat, Const("eps", _epsilon), name="stat_eps"), name="std")
    return {
        "div": Op("Div", x, std, name="out"),
        "mul_reciprocal": Op("Mul", x, Op("Reciprocal", std, name="inv_std"), name="out"),
    }


def _layer_norm_rules() -> list[Rule]:
    x = Var("x")
    mean = Op("ReduceMean", x, name="mean", where=_last_axis, exact_arity=False)
    d = Op("Sub", x, mean, name="centered")
    squares = {"pow": Op("Pow", d, Const("two", _scalar(2.0)), name="square"),
               "mul": Op("Mul", d, d, name="square")}  # fmt: skip

    def rewrite(m: Match, b: Builder) -> list[Value]:
        return [b.op("LayerNormalization", m["x"], _ones(m, b), axis=-1, epsilon=_eps(m),
                     stash_type=1)]  # fmt: skip

    rules = []
    for sname, square in squares.items():
        var = Op("ReduceMean", square, name="var", where=_last_axis, exact_arity=False)
        for nname, pattern in _normalize_forms(d, var).items():
            rules.append(Rule(f"layernorm_{sname}_{nname}", pattern, rewrite, check=_norm_check))
    return rules


def _rms_norm_rules() -> list[Rule]:
    x = Var("x")
    squares = {"pow": Op("Pow", x, Const("two", _scalar(2.0)), name="square"),
               "mul": Op("Mul", x, x, name="square")}  # fmt: skip

    def rewrite(m: Match, b: Builder) -> list[Value]:
        return [b.op("lepton.RMSNorm", m["x"], _ones(m, b), axis=-1, epsilon=_eps(m))]

    rules = []
    for sname, square in squares.items():
        ms = Op("ReduceMean", square, name="mean_square", where=_last_axis, exact_arity=False)
        for nname, pattern in _normalize_forms(x, ms).items():
            rules.append(Rule(f"rmsnorm_{sname}_{nname}", pattern, rewrite, check=_norm_check))
    return rules


def _per_last_axis(c: np.ndarray, n: int, rank: int) -> np.ndarray | None:
    """`c` as one value per position of the last axis (length n), or None if it is not that."""
    if c.ndim > rank or any(d != 1 for d in c.shape[:-1]) or (c.ndim and c.shape[-1] not in (1, n)):
        return None
    return np.broadcast_to(c.reshape(-1), (n,))


def _folds() -> list[Rule]:
    """Mul/Add by per-feature constants after a LayerNorm or RMSNorm go into its scale/bias."""
    x = Var("x")

    def last_axis_norm(node: Node) -> bool:
        rank = _rank(node.inputs[0])
        axis = node.attrs.get("axis", -1)
        return len(node.outputs) == 1 and rank is not None and axis in (-1, rank - 1)

    def operands(m: Match) -> tuple[np.ndarray, np.ndarray | None, np.ndarray] | None:
        """(scale, bias or None, c), each one value per feature; None if one is not that."""
        norm, n, rank = m.node("norm"), _last_dim(m["x"]), _rank(m["x"])
        bias = norm.inputs[2] if len(norm.inputs) > 2 else None
        if n is None or rank is None or (bias is not None and bias.const is None):
            return None
        arrays = [m.const("scale"), m.const("c"), None if bias is None else bias.const]
        scale, c, b = (None if a is None else _per_last_axis(np.asarray(a), n, rank)
                       for a in arrays)  # fmt: skip
        if scale is None or c is None or (bias is not None and b is None):
            return None
        return scale, b, c

    def check(m: Match) -> str | None:
        if operands(m) is None:
            return "the constant, scale or bias is not one value per feature of the last axis"
        return None

    def fold(m: Match, b: Builder) -> list[Value]:
        found = operands(m)
        assert found is not None
        scale, bias, c = found
        if m.node("out").op == "Mul":
            scale, bias = scale * c, None if bias is None else bias * c
        else:
            bias = c if bias is None else bias + c
        norm, dtype = m.node("norm"), m.const("scale").dtype
        ins = [m["x"], b.const(scale.astype(dtype), "norm_scale")]
        if bias is not None:
            ins.append(b.const(bias.astype(dtype), "norm_bias"))
        return [b.op(norm.op, *ins, **dict(norm.attrs))]

    rules = []
    for op in ("LayerNormalization", "lepton.RMSNorm"):
        norm = Op(op, x, Const("scale"), name="norm", where=last_axis_norm, exact_arity=False)
        short = "layernorm" if op == "LayerNormalization" else "rmsnorm"
        rules.append(Rule(f"fold_mul_into_{short}", Op("Mul", norm, Const("c"), name="out"),
                          fold, check=check))
        if op == "LayerNormalization":  # RMSNorm has no bias
            rules.append(Rule(f"fold_add_into_{short}", Op("Add", norm, Const("c"), name="out"),
                              fold, check=check))
    return rules


def _softmax_rules() -> list[Rule]:
    x = Var("x")
    exps = {
        "stable": Op("Exp", Op("Sub", x, Op("ReduceMax", x, name="max", where=_keepdims,
                                            exact_arity=False), name="shifted"), name="exp"),
        "plain": Op("Exp", x, name="exp"),
    }

    def axis(m: Match) -> int | None:
        axes = reduced_axes(m.node("sum"))
        if axes is None or len(axes) != 1:
            return None
        if "max" in m.nodes and reduced_axes(m.node("max")) != axes:
            return None
        return axes[0]

    def check(m: Match) -> str | None:
        if not (isinstance(m["x"].type, TensorType) and m["x"].dtype.is_float):
            return "x is not a float tensor"
        return None if axis(m) is not None else "the reductions are not over one common axis"

    def rewrite(m: Match, b: Builder) -> list[Value]:
        a, rank = axis(m), _rank(m["x"])
        assert a is not None and rank is not None
        return [b.op("Softmax", m["x"], axis=a - rank)]

    rules = []
    for ename, exp in exps.items():
        total = Op("ReduceSum", exp, name="sum", where=_keepdims, exact_arity=False)
        forms = {"div": Op("Div", exp, total, name="out"),
                 "mul_reciprocal": Op("Mul", exp, Op("Reciprocal", total, name="inv_sum"),
                                      name="out")}  # fmt: skip
        for fname, pattern in forms.items():
            rules.append(Rule(f"softmax_{ename}_{fname}", pattern, rewrite, check=check))
    return rules


@register_pass
class FuseNormalizationPass(RewritePass):
    """Fuse decomposed LayerNorm, RMSNorm and Softmax into single ops; fold γ/β into them.

    Forms matched (over the last axis, reductions with keepdims = 1 and axes given as an
    input constant or, before opset 18, an attribute; Mul/Add operands in either order):

    - LayerNorm: ``d = Sub(x, ReduceMean(x))``, ``v = ReduceMean(Pow(d, 2) | Mul(d, d))``,
      ``Div(d, Sqrt(Add(v, ε)))`` or ``Mul(d, Reciprocal(Sqrt(Add(v, ε))))``
      → ``LayerNormalization(x, 1, axis=-1, epsilon=ε)``;
    - RMSNorm: ``Div(x, Sqrt(Add(ReduceMean(Pow(x, 2) | Mul(x, x)), ε)))`` or the Reciprocal
      form → ``lepton.RMSNorm(x, 1, axis=-1, epsilon=ε)`` (LayerNorm rules are tried first:
      the tail of a LayerNorm is an RMSNorm of ``d``);
    - then ``Mul(norm, γ)`` and ``Add(LayerNormalization, β)`` with per-feature constants
      fold into the scale and bias (also for LayerNorms the model had as one op);
    - Softmax: ``e = Exp(Sub(x, ReduceMax(x)))`` or ``e = Exp(x)``, ``Div(e, ReduceSum(e))``
      or ``Mul(e, Reciprocal(ReduceSum(e)))`` over one common axis a → ``Softmax(axis=a)``.

    Every intermediate must be read only inside the pattern (the driver refuses otherwise).
    """

    name = "fuse_normalization"

    def rules(self) -> list[Rule]:
        return [*_layer_norm_rules(), *_rms_norm_rules(), *_folds(), *_softmax_rules()]


def _skip_layer_norm_rules() -> list[Rule]:
    x, skip = Var("x"), Var("skip")

    def ln_ok(node: Node) -> bool:
        rank = _rank(node.inputs[0])
        return (len(node.outputs) == 1 and rank is not None
                and node.attrs.get("axis", -1) in (-1, rank - 1)
                and node.attrs.get("stash_type", 1) == 1)  # fmt: skip

    def check(m: Match) -> str | None:
        x_shape, total = m["x"].shape, m.node("sum").outputs[0].shape
        if "bias_add" not in m.nodes:
            if total not in (x_shape, m["skip"].shape):
                return "neither operand of the residual Add has the sum's shape"
            return None
        n, rank = _last_dim(m["x"]), _rank(m["x"])
        if n is None or rank is None or _per_last_axis(m.const("bias"), n, rank) is None:
            return "the inner Add's constant is not a bias (one value per feature)"
        return None if x_shape == total else "the residual broadcasts x to a larger shape"

    def rewrite(m: Match, b: Builder) -> list[Value]:
        ln = m.node("ln")
        x, s = m["x"], m["skip"]
        if x.shape != m.node("sum").outputs[0].shape:
            x, s = s, x  # the skip may broadcast, x may not
        ins: list[Value | None] = [x, s, ln.inputs[1]]
        beta = ln.inputs[2] if len(ln.inputs) > 2 else None
        if "bias_add" in m.nodes:
            n, rank = _last_dim(x), _rank(x)
            assert n is not None and rank is not None
            bias = _per_last_axis(m.const("bias"), n, rank)
            assert bias is not None
            ins += [beta, b.const(np.ascontiguousarray(bias), "skip_bias")]
        elif beta is not None:
            ins.append(beta)
        return [b.op("lepton.SkipLayerNorm", *ins, epsilon=float(ln.attrs.get("epsilon", 1e-5)))]

    def ln(inner: Op) -> Op:
        return Op("LayerNormalization", inner, Var("gamma"), name="ln", where=ln_ok,
                  exact_arity=False)

    biased = Op("Add", Op("Add", x, Const("bias"), name="bias_add"), skip, name="sum")
    return [
        Rule("skip_layernorm_bias", ln(biased), rewrite, check=check),
        Rule("skip_layernorm", ln(Op("Add", x, skip, name="sum")), rewrite, check=check),
    ]


@register_pass
class FuseSkipLayerNormPass(RewritePass):
    """Fuse a residual Add (+ bias Add) and the LayerNorm reading it into lepton.SkipLayerNorm.

    Forms matched: ``LayerNormalization(Add(Add(x, bias), skip), γ, β?)`` with a constant
    per-feature bias → ``lepton.SkipLayerNorm(x, skip, γ, β, bias)``, and
    ``LayerNormalization(Add(x, skip), γ, β?)`` → ``lepton.SkipLayerNorm(x, skip, γ, β?)``;
    only LayerNorms over the last axis with one output and stash_type 1.

    When the sum is read by anything besides the LayerNorm (pre-LN transformers carry it on
    as the residual stream), the rule does not fire: the op has no second output for the sum,
    and recomputing the sum outside would save nothing.
    """

    name = "fuse_skip_layernorm"

    def rules(self) -> list[Rule]:
        return _skip_layer_norm_rules()
