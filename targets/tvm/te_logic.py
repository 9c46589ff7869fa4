"""Comparisons, boolean logic and ``Where`` as TE computes with NumPy broadcasting, so that
`te_ops.lower_group` lowers them like any element-wise op (attention-mask arithmetic in
exported transformers: ``Equal(input_ids, 0)``, ``Where(mask, x, -inf)``...).

Booleans are TVM's 1-byte ``bool``, the same memory as NumPy's. ``Where`` is a ``Select``:
both sides are evaluated, which is safe here because every index is a plain broadcast of
the output index (no clamp a simplifier could drop).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from tvm import te, tirx

from lepton_compiler.errors import LoweringError
from lepton_compiler.ir import Node

__all__ = ["LOGIC_OPS", "lower_logic"]

_COMPARE: dict[str, Callable[[Any, Any], Any]] = {
    "Equal": lambda a, b: a == b,
    "Less": lambda a, b: a < b,
    "Greater": lambda a, b: a > b,
    "LessOrEqual": lambda a, b: a <= b,
    "GreaterOrEqual": lambda a, b: a >= b,
}
_LOGIC: dict[str, Callable[[Any, Any], Any]] = {
    "And": tirx.And,
    "Or": tirx.Or,
    "Xor": lambda a, b: tirx.Or(tirx.And(a, tirx.Not(b)), tirx.And(tirx.Not(a), b)),
}

#: Ops `lower_logic` takes.
LOGIC_OPS = (*_COMPARE, *_LOGIC, "Not", "Where")


def _load(t: te.Tensor, idx: Sequence[Any]) -> Any:
    """`t` at output index `idx`, NumPy broadcasting (right-aligned, size-1 dims fixed)."""
    dims = [int(d) for d in t.shape]
    off = len(idx) - len(dims)
    return t[tuple(0 if d == 1 else idx[off + i] for i, d in enumerate(dims))]


def lower_logic(
    node: Node, operands: Sequence[te.Tensor], out_shape: tuple[int, ...], name: str
) -> tuple[te.Tensor, tuple[Any, ...]]:
    """The TE compute of `node` (one of `LOGIC_OPS`) over its input tensors, and its part of
    the cache key.

    Raises:
        LoweringError: operands whose dtypes the op does not take.
    """
    op = node.op
    dts = [str(t.dtype) for t in operands]
    if op in _COMPARE:
        if dts[0] != dts[1] or dts[0] == "bool":
            raise LoweringError(f"{node!r}: compares {dts}")
        fn = _COMPARE[op]
    elif op in _LOGIC:
        if dts != ["bool", "bool"]:
            raise LoweringError(f"{node!r}: {op} needs booleans, got {dts}")
        fn = _LOGIC[op]
    elif op == "Not":
        if dts != ["bool"]:
            raise LoweringError(f"{node!r}: Not needs a boolean, got {dts}")
        a = operands[0]
        return te.compute(out_shape, lambda *i: tirx.Not(_load(a, i)), name=name), ("Not",)
    elif op == "Where":
        if dts[0] != "bool" or dts[1] != dts[2]:
            raise LoweringError(f"{node!r}: Where takes (bool, T, T), got {dts}")
        c, x, y = operands
        res = te.compute(
            out_shape,
            lambda *i: tirx.Select(_load(c, i), _load(x, i), _load(y, i)),
            name=name,
        )
        return res, ("Where", tuple(tuple(int(d) for d in t.shape) for t in operands))
    else:
        raise LoweringError(f"{node!r}: {op} is not a comparison or logic op")
    a, b = operands
    res = te.compute(out_shape, lambda *i: fn(_load(a, i), _load(b, i)), name=name)
    return res, (op, tuple(tuple(int(d) for d in t.shape) for t in operands), dts[0])
