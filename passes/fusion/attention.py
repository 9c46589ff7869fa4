"""Attention fusion: scaled dot-product attention as encoders export it becomes one
``lepton.Attention`` op.

BERT-style exports (PyTorch, Hugging Face, TF2ONNX) write each attention head group as
``MatMul(Q, Kᵀ) → Div(√d) | Mul(1/√d) → Add(mask)? → Softmax(-1) → MatMul(·, V)``, with Q, K,
V head-split by ``Reshape [b, s, h, d] → Transpose [0, 2, 1, 3]`` (K straight to
``[b, h, d, s]`` with perm ``[0, 2, 3, 1]``). One op lets a backend run the whole thing as one
kernel (flash-attention style: scores never leave on-chip memory).

Design choice: ``lepton.Attention(q, k, v, mask?)`` works on head-split ``[..., s, d]``
tensors, so the head split/merge plumbing (Reshape and Transpose of Q, V and of the context)
stays as separate nodes: those are free views or cheap copies that a layout pass may fold
later, and keeping them out makes the op independent of how a model splits heads. K's
transpose is rewritten so that k is ``[..., s, d]`` like q: the perm of Kᵀ with its last two
entries swapped, dropped when that is the identity (``[0, 2, 3, 1]`` becomes ``[0, 2, 1, 3]``,
``[0, 1, 3, 2]`` disappears).

Runs in the fusion pipeline after ``fuse_normalization`` (a Softmax written out as Exp/Sum
becomes a Softmax there) and before the MatMul fusions (which would otherwise fold Kᵀ's
transpose into a product and hide the pattern).
"""

from __future__ import annotations

import math

import numpy as np

from lepton_compiler.ir import Node, TensorType, Value
from lepton_compiler.pass_manager import register_pass
from lepton_compiler.rewriter import Builder, Const, Match, Op, RewritePass, Rule, Var

#: How far the scale may be from 1/√d (exporters round √d to float32).
SCALE_RTOL = 1e-3


def _perm(node: Node) -> list[int] | None:
    shape = node.inputs[0].shape if node.inputs[0] is not None else None
    perm = node.attrs.get("perm")
    if perm is None:
        return None if shape is None else list(reversed(range(len(shape))))
    return [int(p) for p in perm]


def _is_transpose_of_rank_2_plus(node: Node) -> bool:
    perm = _perm(node)
    return perm is not None and len(perm) >= 2


def _softmax_last(node: Node) -> bool:
    shape = node.inputs[0].shape if node.inputs[0] is not None else None
    return shape is not None and node.attrs.get("axis", -1) in (-1, len(shape) - 1)


def _scale(m: Match) -> float:
    c = float(m.const("scale_c").reshape(-1)[0])
    return 1.0 / c if m.node("scale").op == "Div" else c


def _check(m: Match) -> str | None:
    for name in ("q", "k_in", "v"):
        t = m[name].type
        if not (isinstance(t, TensorType) and t.dtype.is_float and t.shape is not None
                and len(t.shape) >= 2):  # fmt: skip
            return f"%{m[name].name} is not a float tensor of known rank >= 2"
    c = m.const("scale_c")
    if c.size != 1 or not np.isfinite(c).all() or float(c.reshape(-1)[0]) == 0.0:
        return f"the scale %{m['scale_c'].name} is not one finite non-zero number"
    d = m["q"].shape[-1]
    scale = _scale(m)
    if isinstance(d, int) and not math.isclose(scale, 1 / math.sqrt(d), rel_tol=SCALE_RTOL):
        return (f"scale {scale:.6g} is not 1/sqrt(d) = {1 / math.sqrt(d):.6g} for head size "
                f"d = {d}")  # fmt: skip
    if "mask_add" in m.nodes:
        scores = m.node("qk").outputs[0].shape
        if scores is None or m.node("mask_add").outputs[0].shape != scores:
            return "the mask broadcasts the scores to a larger shape"
    return None


def _rewrite(m: Match, b: Builder) -> list[Value]:
    perm = _perm(m.node("k_transpose"))
    assert perm is not None
    k_perm = [*perm[:-2], perm[-1], perm[-2]]
    k = m["k_in"] if k_perm == sorted(k_perm) else b.op("Transpose", m["k_in"], perm=k_perm)
    ins = [m["q"], k, m["v"]]
    if "mask_add" in m.nodes:
        ins.append(m["mask"])
    return [b.op("lepton.Attention", *ins, scale=_scale(m))]


def _rules() -> list[Rule]:
    q, v, mask = Var("q"), Var("v"), Var("mask")
    kt = Op("Transpose", Var("k_in"), name="k_transpose", where=_is_transpose_of_rank_2_plus)
    c = Const("scale_c")
    scored = {
        "div": Op("Div", Op("MatMul", q, kt, name="qk"), c, name="scale"),
        "mul": Op("Mul", Op("MatMul", q, kt, name="qk"), c, name="scale"),
        "q_div": Op("MatMul", Op("Div", q, c, name="scale"), kt, name="qk"),
        "q_mul": Op("MatMul", Op("Mul", q, c, name="scale"), kt, name="qk"),
    }
    rules = []
    for sname, scores in scored.items():
        for masked in (True, False):
            logits = Op("Add", scores, mask, name="mask_add") if masked else scores
            probs = Op("Softmax", logits, name="softmax", where=_softmax_last)
            rules.append(Rule(f"attention_{sname}{'_mask' if masked else ''}",
                              Op("MatMul", probs, v, name="out"), _rewrite, check=_check))
    return rules


@register_pass
class FuseAttentionPass(RewritePass):
    """Fuse scaled dot-product attention (QKᵀ, scale, mask, Softmax, ·V) into lepton.Attention.

    Forms matched, with ``Kᵀ = Transpose(k_in, perm)`` for any perm of rank >= 2:

    - ``MatMul(Softmax(Add(Div(MatMul(q, Kᵀ), c), mask)), v)`` and the same with
      ``Mul(·, c)`` → ``lepton.Attention(q, k, v, mask, scale=1/c | c)``;
    - the scale applied to q instead: ``MatMul(Div(q, c) | Mul(q, c), Kᵀ)``;
    - each of these without the mask Add (then no mask input).

    The Softmax must be over the last axis, the scale a scalar constant equal to 1/√d for
    the head size d = q.shape[-1] (rtol 1e-3; any scale when d is not static), and the mask
    must not broadcast the scores to a larger shape. ``k`` is q-shaped: Kᵀ's transpose is
    replaced by one with the last two perm entries swapped (none when that is the identity).
    """

    name = "fuse_attention"

    def rules(self) -> list[Rule]:
        return _rules()
