"""MatMul fusions: a bias Add becomes the product's epilogue, and a Transpose of the last two
axes of an operand becomes a flag of the product.

``nn.Linear`` on an N-d input exports as ``MatMul(x, Wᵀ) + b``: two kernels and a full write
and read of the product. ``Gemm`` (2-D) and ``lepton.MatMulAdd`` (any rank ≥ 2, see
`lepton_compiler.ops.composite`) add the bias while the result is still in registers. A
Transpose that only swaps the last two axes of an operand costs a copy; products read either
layout for free (``transA``/``transB``), and a transposed constant is simply stored transposed.

Two passes, run in this order at the end of the pattern fusions (after ``fuse_attention``,
whose Kᵀ transpose must still be visible): ``fold_matmul_transpose`` then
``fuse_matmul_bias``. Both keep canonicalize's weight layout: constant B stays ``[K, N]``.
"""

from __future__ import annotations

import numpy as np

from lepton_compiler.ir import Node, TensorType, Value
from lepton_compiler.pass_manager import register_pass
from lepton_compiler.rewriter import Builder, Const, Match, Op, RewritePass, Rule, Var

_FLAGS = ("transA", "transB")


def _rank(v: Value | None) -> int | None:
    return len(v.shape) if v is not None and v.shape is not None else None


def _is_float(v: Value) -> bool:
    return isinstance(v.type, TensorType) and v.type.dtype.is_float


def _swaps_last_two(node: Node) -> bool:
    """A Transpose whose perm only swaps the last two axes (rank >= 2)."""
    rank = _rank(node.inputs[0])
    if rank is None or rank < 2:
        return False
    perm = node.attrs.get("perm")
    perm = list(reversed(range(rank))) if perm is None else [int(p) for p in perm]
    return perm == [*range(rank - 2), rank - 1, rank - 2]


def _product(b: Builder, old: Node, a: Value, w: Value, bias: Value | None,
             flags: dict[str, int], beta: float = 1.0) -> Value:
    """The product again: MatMul when nothing is left to fuse, Gemm when `old` was a Gemm or
    both operands are 2-D, else lepton.MatMulAdd."""
    alpha = float(old.attrs.get("alpha", 1.0)) if old.op == "Gemm" else 1.0
    if bias is None and not any(flags.values()) and alpha == 1.0:
        return b.op("MatMul", a, w)
    ins = [a, w] if bias is None else [a, w, bias]
    if old.op == "Gemm" or (_rank(a) == 2 and _rank(w) == 2):
        return b.op("Gemm", *ins, alpha=alpha, beta=beta, **flags)
    return b.op("lepton.MatMulAdd", *ins, **flags)


def _flags(node: Node) -> dict[str, int]:
    return {f: int(node.attrs.get(f, 0)) for f in _FLAGS}


# -- Transpose folding ----------------------------------------------------------------------------


def _transpose_rules() -> list[Rule]:
    rules = []
    for op in ("MatMul", "Gemm", "lepton.MatMulAdd"):
        for i in (0, 1):

            def check(m: Match, _i: int = i) -> str | None:
                mm = m.node("mm")
                if not all(_is_float(v) for v in mm.inputs if v is not None):
                    return "not a float product"
                other = mm.inputs[1 - _i]
                if _rank(other) is None or _rank(other) < 2:  # type: ignore[operator]
                    return "the other operand is not of known rank >= 2 (1-D MatMul semantics)"
                if mm.op == "Gemm" and _rank(m["t"]) != 2:
                    return "Gemm operands are 2-D"
                return None

            def rewrite(m: Match, b: Builder, _i: int = i) -> list[Value]:
                mm, t = m.node("mm"), m["t"]
                ins = list(mm.inputs)
                flags = _flags(mm)
                if t.const is not None:  # store the constant transposed instead
                    ins[_i] = b.const(np.ascontiguousarray(np.swapaxes(t.const, -1, -2)),
                                      "transposed")  # fmt: skip
                else:
                    ins[_i] = t
                    flags[_FLAGS[_i]] ^= 1
                bias = ins[2] if len(ins) > 2 else None
                beta = float(mm.attrs.get("beta", 1.0)) if bias is not None else 1.0
                return [_product(b, mm, ins[0], ins[1], bias, flags, beta)]

            transposed = Op("Transpose", Var("t"), name="transpose", where=_swaps_last_two)
            operands = [Var("a"), transposed] if i == 1 else [transposed, Var("b")]
            pattern = Op(op, *operands, name="mm", exact_arity=op == "MatMul")
            short = op.rpartition(".")[2].lower()
            rules.append(Rule(f"fold_transpose_into_{short}_{'ab'[i]}", pattern, rewrite,
                              check=check))
    return rules


@register_pass
class FoldMatMulTransposePass(RewritePass):
    """Fold a last-two-axes Transpose of a MatMul/Gemm/MatMulAdd operand into the product.

    Forms matched: ``MatMul(a, Transpose(b))``, ``MatMul(Transpose(a), b)`` and the same
    operands of ``Gemm`` and ``lepton.MatMulAdd``, where the perm swaps only the last two axes.
    A constant operand is stored transposed (a MatMul stays a MatMul); otherwise the flag
    ``transA``/``transB`` flips, and a MatMul becomes ``Gemm`` (both operands 2-D) or
    ``lepton.MatMulAdd`` (rank >= 3). The driver refuses when the transposed value has another
    reader (the Transpose would stay, so nothing is saved).
    """

    name = "fold_matmul_transpose"

    def rules(self) -> list[Rule]:
        return _transpose_rules()


# -- bias epilogue --------------------------------------------------------------------------------


def _bias(m: Match) -> np.ndarray | None:
    """The Add's constant as a [n] bias of the product, or None when it is something else."""
    out = m.node("mm").outputs[0]
    n = out.shape[-1] if out.shape else None
    c = m.const("bias")
    if not isinstance(n, int) or m.node("add").outputs[0].shape != out.shape:
        return None
    if c.ndim > len(out.shape) or any(d != 1 for d in c.shape[:-1]):  # type: ignore[arg-type]
        return None
    if c.ndim and c.shape[-1] not in (1, n):
        return None
    return np.ascontiguousarray(np.broadcast_to(c.reshape(-1), (n,)))


def _bias_check(m: Match) -> str | None:
    mm = m.node("mm")
    if not all(_is_float(v) for v in mm.inputs if v is not None) or not _is_float(m["bias"]):
        return "not a float product"
    if any(_rank(v) is None or _rank(v) < 2 for v in mm.inputs[:2]):  # type: ignore[operator]
        return "an operand is not of known rank >= 2 (1-D MatMul semantics)"
    if _bias(m) is None:
        return "the constant is not one value per output column (or its size is unknown)"
    return None


def _bias_rewrite(m: Match, b: Builder) -> list[Value]:
    mm, bias = m.node("mm"), _bias(m)
    assert bias is not None
    a, w = mm.inputs[0], mm.inputs[1]
    assert a is not None and w is not None
    return [_product(b, mm, a, w, b.const(bias.astype(m.const("bias").dtype), "bias"),
                     _flags(mm))]


@register_pass
class FuseMatMulBiasPass(RewritePass):
    """Fuse MatMul + Add(constant bias) into Gemm (2-D) or lepton.MatMulAdd (rank >= 3).

    Forms matched (Add operands in either order): ``Add(MatMul(a, b), c)``, and
    ``Add(Gemm(a, b), c)`` / ``Add(lepton.MatMulAdd(a, b), c)`` without a bias yet, where c is
    a constant holding one value per output column (shape ``[n]``, ``[1, n]``, a scalar...) that
    does not broadcast the product to a larger shape. 2-D operands give
    ``Gemm(a, b, c, transA, transB)``, others ``lepton.MatMulAdd(a, b, c)``.
    """

    name = "fuse_matmul_bias"

    def rules(self) -> list[Rule]:
        a, w = Var("a"), Var("w")
        return [
            Rule(f"fuse_bias_into_{op.rpartition('.')[2].lower()}",
                 Op("Add", Op(op, a, w, name="mm"), Const("bias"), name="add"),
                 _bias_rewrite, check=_bias_check)
            for op in ("MatMul", "Gemm", "lepton.MatMulAdd")
        ]
