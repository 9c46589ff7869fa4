"""Fold BatchNormalization, and Mul/Add by per-channel constants, into the preceding Conv,
ConvTranspose, Gemm or MatMul: the weights and bias absorb the affine transform.

``BN(conv(x, W) + b) = conv(x, W * s) + (b - mean) * s + beta`` with
``s = gamma / sqrt(var + eps)`` per output channel. Likewise ``conv(x, W) * c`` folds c into W
and b, and ``conv(x, W) + c`` folds c into b, when c is constant per output channel (or
scalar). Only inference-mode BatchNormalization with constant statistics folds, and only when
the producer's output has no other reader. First pass of the fusion pipeline: the anchors that
group fusion sees must already carry their biases.
"""

from __future__ import annotations

import numpy as np

from lepton_compiler.ir import TensorType, Value
from lepton_compiler.pass_manager import register_pass
from lepton_compiler.rewriter import Builder, Const, Match, Op, RewritePass, Rule, Var

_ANCHORS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def _channel_axis_len(m: Match) -> int | None:
    """Output channels of the anchor, or None when the layout does not allow folding."""
    node = m.node("anchor")
    out = node.outputs[0]
    if not isinstance(out.type, TensorType) or out.type.shape is None:
        return None
    shape = out.type.shape
    if node.op in ("Gemm", "MatMul") and len(shape) != 2:
        return None  # BN's channel axis is 1; for rank-2 products that is the last axis
    n = shape[1] if len(shape) >= 2 else None
    return n if isinstance(n, int) else None


def _weights(m: Match) -> tuple[np.ndarray, np.ndarray | None, str]:
    """The anchor's weight (in a [.., C_out]-scalable form) and bias, and a layout tag."""
    node = m.node("anchor")
    w = m.const("w").astype(np.float64)
    b = node.inputs[2].const if len(node.inputs) > 2 and node.inputs[2] is not None else None
    return w, None if b is None else np.asarray(b, np.float64), node.op


def _scaled(m: Match, s: np.ndarray) -> np.ndarray:
    """The anchor's weight with output channel c multiplied by s[c]."""
    node = m.node("anchor")
    w = m.const("w").astype(np.float64)
    if node.op == "Conv":
        return w * s.reshape(-1, *([1] * (w.ndim - 1)))
    if node.op == "ConvTranspose":
        group = node.attrs.get("group", 1)
        cin, cout_g = w.shape[0], w.shape[1]
        wg = w.reshape(group, cin // group, cout_g, *w.shape[2:])
        sg = s.reshape(group, 1, cout_g, *([1] * (w.ndim - 2)))
        return (wg * sg).reshape(w.shape)
    if node.op == "Gemm" and node.attrs.get("transB", 0):
        return w * s.reshape(-1, 1)
    return w * s.reshape(1, -1)  # Gemm (transB = 0) and MatMul: [K, N]


def _anchor_ok(m: Match) -> str | None:
    node = m.node("anchor")
    if node.op == "Gemm" and (node.attrs.get("alpha", 1.0) != 1.0 or node.attrs.get("beta", 1.0)
                              != 1.0 or node.attrs.get("transA", 0)):
        return "Gemm with alpha/beta != 1 or transA"
    if len(node.inputs) > 2 and node.inputs[2] is not None and node.inputs[2].const is None:
        return "the anchor's bias is not a constant"
    if not (isinstance(m["w"].type, TensorType) and m["w"].type.dtype.is_float):
        return "integer weights"
    if _channel_axis_len(m) is None:
        return "the output's channel axis is unknown or not the product's last axis"
    return None


def _rebuild(m: Match, b: Builder, s: np.ndarray, shift: np.ndarray) -> list[Value]:
    """The anchor again with weight * s and bias * s + shift (per output channel)."""
    node = m.node("anchor")
    dtype = m.const("w").dtype
    _, bias, _ = _weights(m)
    n = _channel_axis_len(m)
    assert n is not None
    s = np.broadcast_to(s.reshape(-1), (n,))
    shift = np.broadcast_to(shift.reshape(-1), (n,))
    new_bias = (np.zeros(n) if bias is None else np.broadcast_to(bias.reshape(-1), (n,))) * s
    new_bias = (new_bias + shift).astype(dtype)
    w = b.const(_scaled(m, s).astype(dtype), "folded_weight")
    if node.op == "MatMul":
        y = b.op("MatMul", m["x"], w)
        if bias is None and not np.any(shift):
            return [y]
        return [b.op("Add", y, b.const(new_bias, "folded_bias"))]
    attrs = dict(node.attrs)
    return [b.op(node.op, m["x"], w, b.const(new_bias, "folded_bias"), **attrs)]


def _per_channel(m: Match, name: str) -> np.ndarray | None:
    """The constant `name` as one value per output channel, or None if it is not that."""
    c = m.const(name).astype(np.float64)
    n = _channel_axis_len(m)
    out = m.node("anchor").outputs[0]
    if n is None or not isinstance(out.type, TensorType) or out.type.shape is None:
        return None
    rank = len(out.type.shape)
    if c.size == 1:
        return np.full(n, float(c.reshape(-1)[0]))
    if c.ndim > rank:
        return None
    full = (1,) * (rank - c.ndim) + c.shape
    if full[1] != n or any(d != 1 for i, d in enumerate(full) if i != 1):
        return None
    return c.reshape(n)


def _rules() -> list[Rule]:
    rules: list[Rule] = []
    for op in _ANCHORS:
        for with_bias in (False, True):
            ins = (Var("x"), Const("w"), Const("b")) if with_bias else (Var("x"), Const("w"))
            anchor = Op(op, *ins, name="anchor")

            def bn_check(m: Match) -> str | None:
                bn = m.node("bn")
                if bn.attrs.get("training_mode", 0):
                    return "BatchNormalization in training mode"
                if len(bn.outputs) > 1:
                    return "BatchNormalization computes running statistics"
                return _anchor_ok(m)

            def bn_rewrite(m: Match, b: Builder) -> list[Value]:
                eps = float(m.node("bn").attrs.get("epsilon", 1e-5))
                gamma, beta = m.const("scale"), m.const("beta")
                mean, var = m.const("mean"), m.const("var")
                s = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + eps)
                return _rebuild(m, b, s, beta.astype(np.float64) - mean * s)

            rules.append(Rule(
                f"fold_batchnorm_into_{op.lower()}",
                Op("BatchNormalization", anchor, Const("scale"), Const("beta"), Const("mean"),
                   Const("var"), name="bn"),
                check=bn_check, rewrite=bn_rewrite,
            ))

            def mul_check(m: Match) -> str | None:
                return _anchor_ok(m) or (
                    None if _per_channel(m, "c") is not None else "not a per-channel constant")

            def mul_rewrite(m: Match, b: Builder) -> list[Value]:
                s = _per_channel(m, "c")
                assert s is not None
                return _rebuild(m, b, s, np.zeros_like(s))

            def add_rewrite(m: Match, b: Builder) -> list[Value]:
                shift = _per_channel(m, "c")
                assert shift is not None
                return _rebuild(m, b, np.ones_like(shift), shift)

            rules.append(Rule(f"fold_mul_into_{op.lower()}", Op("Mul", anchor, Const("c")),
                              check=mul_check, rewrite=mul_rewrite))
            if with_bias or op != "MatMul":
                rules.append(Rule(f"fold_add_into_{op.lower()}", Op("Add", anchor, Const("c")),
                                  check=mul_check, rewrite=add_rewrite))
    return rules


@register_pass
class FoldBatchNormPass(RewritePass):
    """Fold BatchNormalization and per-channel Mul/Add into Conv/ConvTranspose/Gemm/MatMul."""

    name = "fold_batchnorm"

    def rules(self) -> list[Rule]:
        return _rules()
