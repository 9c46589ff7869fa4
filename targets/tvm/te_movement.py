"""Data-movement ops as TE computes: ``Transpose`` (any permutation), ``Slice`` (constant
starts/ends/axes/steps) and ``Concat``, so that `te_ops.lower_group` can lower them like an
element-wise op and the element-wise family runs them as one parallel copy loop.

Each output element reads exactly one input element: a permuted index, a strided offset, or,
for ``Concat``, the input whose range along the axis holds the index. ``Concat`` chooses with
``if_then_else`` (which branches: only the chosen input is read), never ``Select``, which
evaluates both sides and would read out of bounds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from tvm import te, tirx

from lepton_compiler.errors import LoweringError
from lepton_compiler.ir import Node, Value

__all__ = ["MOVEMENT_OPS", "lower_movement"]

#: Ops `lower_movement` takes.
MOVEMENT_OPS = ("Transpose", "Slice", "Concat")


def lower_movement(
    node: Node,
    tensor: Callable[[Value | None], te.Tensor],
    const_of: Callable[[Value | None], np.ndarray | None],
    out_shape: tuple[int, ...],
    name: str,
) -> tuple[te.Tensor, tuple[Any, ...]]:
    """The TE compute of `node` (one of `MOVEMENT_OPS`) and its part of the cache key.

    Args:
        node: the node.
        tensor: the TE tensor of a value (a placeholder for a group input).
        const_of: the constant value of an input, or None when it is not a constant.
        out_shape: the node's static output shape (checked against the op's own rule).
        name: the compute's name.

    Raises:
        LoweringError: a non-constant Slice parameter, or a shape that disagrees.
    """
    if node.op == "Transpose":
        res, key = _transpose(node, tensor(node.inputs[0]), name)
    elif node.op == "Slice":
        res, key = _slice(node, tensor(node.inputs[0]), const_of, name)
    elif node.op == "Concat":
        res, key = _concat(node, [tensor(v) for v in node.inputs], name)
    else:
        raise LoweringError(f"{node!r}: {node.op} is not a data-movement op")
    got = tuple(int(d) for d in res.shape)
    if got != out_shape:
        raise LoweringError(f"{node!r}: computes {got}, the IR says {out_shape}")
    return res, key


def _shape(t: te.Tensor) -> tuple[int, ...]:
    return tuple(int(d) for d in t.shape)


def _transpose(node: Node, a: te.Tensor, name: str) -> tuple[te.Tensor, tuple[Any, ...]]:
    x = _shape(a)
    rank = len(x)
    perm = [int(p) for p in node.attrs.get("perm") or reversed(range(rank))]
    if sorted(perm) != list(range(rank)):
        raise LoweringError(f"{node!r}: perm {perm} is not a permutation of {rank} axes")
    inverse = [perm.index(d) for d in range(rank)]

    def fcompute(*i: Any) -> Any:
        return a[tuple(i[inverse[d]] for d in range(rank))]

    res = te.compute(tuple(x[p] for p in perm), fcompute, name=name)
    return res, ("Transpose", tuple(perm))


def _slice(
    node: Node,
    a: te.Tensor,
    const_of: Callable[[Value | None], np.ndarray | None],
    name: str,
) -> tuple[te.Tensor, tuple[Any, ...]]:
    x = _shape(a)
    rank = len(x)
    ins = list(node.inputs) + [None] * (5 - len(node.inputs))
    params: list[np.ndarray | None] = []
    for what, v in zip(("starts", "ends", "axes", "steps"), ins[1:5], strict=True):
        value = const_of(v)
        if v is not None and value is None:
            raise LoweringError(f"{node!r}: {what} must be a constant")
        params.append(None if value is None else np.asarray(value).astype(np.int64).ravel())
    starts, ends, axes, steps = params
    if starts is None or ends is None:
        raise LoweringError(f"{node!r}: needs starts and ends")
    axes = np.arange(len(starts)) if axes is None else axes
    steps = np.ones(len(starts), np.int64) if steps is None else steps
    begin, step = [0] * rank, [1] * rank
    out = list(x)
    for s, e, ax, st in zip(starts, ends, axes, steps, strict=True):
        d = int(ax) + rank if ax < 0 else int(ax)
        if not 0 <= d < rank or st == 0:
            raise LoweringError(f"{node!r}: axis {ax} or step {st} is invalid")
        # ONNX clamps like Python slicing (ends beyond the dim, INT_MAX, negatives)
        lo, hi, stride = slice(int(s), int(e), int(st)).indices(x[d])
        begin[d], step[d], out[d] = lo, stride, len(range(lo, hi, stride))

    def fcompute(*i: Any) -> Any:
        return a[tuple(begin[d] + i[d] * step[d] for d in range(rank))]

    res = te.compute(tuple(out), fcompute, name=name)
    return res, ("Slice", tuple(begin), tuple(step), tuple(out))


def _concat(
    node: Node, parts: Sequence[te.Tensor], name: str
) -> tuple[te.Tensor, tuple[Any, ...]]:
    shapes = [_shape(t) for t in parts]
    rank = len(shapes[0])
    axis = int(node.attrs.get("axis", 0))
    axis = axis + rank if axis < 0 else axis
    if not 0 <= axis < rank or any(
        len(s) != rank or s[:axis] + s[axis + 1 :] != shapes[0][:axis] + shapes[0][axis + 1 :]
        for s in shapes
    ):
        raise LoweringError(f"{node!r}: shapes {shapes} do not concatenate on axis {axis}")
    offsets = np.cumsum([0] + [s[axis] for s in shapes]).tolist()
    out = (*shapes[0][:axis], int(offsets[-1]), *shapes[0][axis + 1 :])
    live = [(t, int(offsets[k])) for k, t in enumerate(parts) if shapes[k][axis] > 0]

    def fcompute(*i: Any) -> Any:
        def read(t: te.Tensor, start: int) -> Any:
            return t[(*i[:axis], i[axis] - start, *i[axis + 1 :])]

        value = read(*live[-1])
        for t, start in reversed(live[:-1]):
            end = start + int(t.shape[axis])
            value = tirx.if_then_else(i[axis] < end, read(t, start), value)
        return value

    if not live:
        raise LoweringError(f"{node!r}: every input is empty")
    res = te.compute(out, fcompute, name=name)
    return res, ("Concat", axis, tuple(shapes))
