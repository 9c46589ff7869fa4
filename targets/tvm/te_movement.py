"""Data-movement ops as TE computes: ``Transpose`` (any permutation), ``Slice`` (constant
starts/ends/axes/steps), ``Concat``, ``Split`` (`lower_split`, one compute per output),
``Pad`` (constant, edge and reflect modes, constant
pads), ``Expand`` and ``Tile`` (constant shape / repeats) and ``Resize`` (nearest or linear,
constant scales or sizes), so that `te_ops.lower_group` can
lower them like an element-wise op and the element-wise family runs them as one parallel copy
loop.

Each output element reads exactly one input element: a permuted index, a strided offset, a
clamped or reflected index, a broadcast or wrapped index, or, for ``Concat``, the input whose
range along the axis holds the index. Choices use ``if_then_else`` (which branches: only the
chosen input is read) over indices that are in bounds anyway, never a ``Select`` around a
clamped load (TVM simplifies a Select's branches under its condition yet evaluates both).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from tvm import te, tirx

from lepton_compiler.errors import LoweringError
from lepton_compiler.ir import Node, Value

__all__ = ["MOVEMENT_OPS", "lower_movement", "lower_split"]

#: Ops `lower_movement` takes.
MOVEMENT_OPS = ("Transpose", "Slice", "Concat", "Pad", "Expand", "Tile", "Resize")


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
    elif node.op == "Pad":
        res, key = _pad(node, tensor(node.inputs[0]), const_of, name)
    elif node.op in ("Expand", "Tile"):
        res, key = _repeat(node, tensor(node.inputs[0]), const_of, out_shape, name)
    elif node.op == "Resize":
        res, key = _resize(node, tensor(node.inputs[0]), const_of, name)
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


def _const_ints(
    node: Node, v: Value | None, what: str, const_of: Callable[[Value | None], np.ndarray | None]
) -> list[int] | None:
    """The integer values of constant input `v` (None when absent)."""
    if v is None:
        return None
    value = const_of(v)
    if value is None:
        raise LoweringError(f"{node!r}: {what} must be a constant")
    return [int(x) for x in np.asarray(value).ravel()]


def _pad(
    node: Node,
    a: te.Tensor,
    const_of: Callable[[Value | None], np.ndarray | None],
    name: str,
) -> tuple[te.Tensor, tuple[Any, ...]]:
    x = _shape(a)
    rank = len(x)
    ins = list(node.inputs) + [None] * (4 - len(node.inputs))
    pads = _const_ints(node, ins[1], "pads", const_of)
    if pads is None:
        raise LoweringError(f"{node!r}: needs pads")
    axes = _const_ints(node, ins[3], "axes", const_of)
    axes = [d + rank if d < 0 else d for d in (axes if axes is not None else range(rank))]
    if len(pads) != 2 * len(axes) or any(not 0 <= d < rank for d in axes):
        raise LoweringError(f"{node!r}: pads {pads} for axes {axes}")
    mode = node.attrs.get("mode", "constant")
    mode = mode.decode() if isinstance(mode, bytes) else str(mode)
    if mode not in ("constant", "edge", "reflect"):
        raise LoweringError(f"{node!r}: mode {mode!r} is not supported")
    value = const_of(ins[2]) if ins[2] is not None else np.zeros((), np.float32)
    if value is None:
        raise LoweringError(f"{node!r}: constant_value must be a constant")
    begin, end = [0] * rank, [0] * rank
    for j, d in enumerate(axes):
        begin[d], end[d] = pads[j], pads[len(axes) + j]
    if min(begin + end) < 0:
        raise LoweringError(f"{node!r}: negative pads (a crop) are not supported")
    if mode == "reflect" and any((begin[d] or end[d]) and (x[d] < 2 or max(begin[d], end[d])
                                 >= x[d]) for d in range(rank)):  # fmt: skip
        raise LoweringError(f"{node!r}: reflect padding as wide as the input")
    out = tuple(x[d] + begin[d] + end[d] for d in range(rank))
    fill = tirx.const(np.asarray(value).ravel()[0].item(), str(a.dtype))

    def source(d: int, i: Any) -> Any:
        j = i - begin[d]
        if not begin[d] and not end[d]:
            return j
        if mode == "reflect":
            j = tirx.abs(j)  # before the start: mirrored about 0
            j = tirx.min(j, 2 * (x[d] - 1) - j)  # past the end: mirrored about n - 1
        return tirx.min(tirx.max(j, 0), x[d] - 1)

    def fcompute(*i: Any) -> Any:
        value = a[tuple(source(d, i[d]) for d in range(rank))]
        if mode != "constant":
            return value
        inside = [tirx.all(i[d] >= begin[d], i[d] < begin[d] + x[d])
                  for d in range(rank) if begin[d] or end[d]]  # fmt: skip
        return tirx.if_then_else(tirx.all(*inside), value, fill) if inside else value

    res = te.compute(out, fcompute, name=name)
    key = ("Pad", mode, tuple(begin), tuple(end), repr(np.asarray(value).tolist()))
    return res, key


def _repeat(
    node: Node,
    a: te.Tensor,
    const_of: Callable[[Value | None], np.ndarray | None],
    out_shape: tuple[int, ...],
    name: str,
) -> tuple[te.Tensor, tuple[Any, ...]]:
    """``Expand`` (NumPy broadcasting to a constant shape) or ``Tile`` (constant repeats):
    each output element reads the input at its index, broadcast or wrapped."""
    x = _shape(a)
    what = "shape" if node.op == "Expand" else "repeats"
    param = _const_ints(node, node.inputs[1] if len(node.inputs) > 1 else None, what, const_of)
    if param is None:
        raise LoweringError(f"{node!r}: needs {what}")
    rank = len(out_shape)
    off = rank - len(x)
    if off < 0:
        raise LoweringError(f"{node!r}: output rank {rank} below the input's {len(x)}")

    def fcompute(*i: Any) -> Any:
        idx = []
        for d, n in enumerate(x):
            o = i[off + d]
            if node.op == "Tile":
                idx.append(tirx.floormod(o, n) if out_shape[off + d] != n else o)
            else:
                idx.append(0 if n == 1 else o)
        return a[tuple(idx)]

    if node.op == "Tile":
        same = len(param) == len(x)
        want = tuple(n * r for n, r in zip(x, param, strict=False)) if same else None
    else:
        try:
            want = tuple(int(d) for d in np.broadcast_shapes(x, tuple(param)))
        except ValueError:
            want = None
    if want != out_shape:
        raise LoweringError(f"{node!r}: {what} {param} for input {x} do not give {out_shape}")
    res = te.compute(out_shape, fcompute, name=name)
    return res, (node.op, x, out_shape)


def lower_split(
    node: Node,
    a: te.Tensor,
    const_of: Callable[[Value | None], np.ndarray | None],
    out_shapes: Sequence[tuple[int, ...]],
    name: str,
) -> tuple[list[te.Tensor], tuple[Any, ...]]:
    """``Split`` as one compute per output (each a strided copy of its range along the
    axis), and its part of the cache key.

    Raises:
        LoweringError: computed split sizes, or sizes that disagree with the outputs.
    """
    x = _shape(a)
    rank = len(x)
    axis = int(node.attrs.get("axis", 0))
    axis = axis + rank if axis < 0 else axis
    if not 0 <= axis < rank:
        raise LoweringError(f"{node!r}: axis {axis} out of range")
    sizes = _const_ints(node, node.inputs[1] if len(node.inputs) > 1 else None, "split",
                        const_of)  # fmt: skip
    if sizes is None:
        sizes = [int(s[axis]) for s in out_shapes]  # equal parts or the `split` attribute
    if sum(sizes) != x[axis] or len(sizes) != len(out_shapes) or any(
        tuple(s) != (*x[:axis], n, *x[axis + 1 :]) for s, n in zip(out_shapes, sizes, strict=True)
    ):
        raise LoweringError(f"{node!r}: sizes {sizes} of axis {axis} for outputs {out_shapes}")
    starts = np.cumsum([0, *sizes]).tolist()

    def part(start: int) -> Callable[..., Any]:
        return lambda *i: a[(*i[:axis], i[axis] + start, *i[axis + 1 :])]

    parts = [
        te.compute(tuple(shape), part(start), name=f"{name}_{k}")
        for k, (shape, start) in enumerate(zip(out_shapes, starts, strict=False))
    ]
    return parts, ("Split", axis, tuple(sizes), x)


#: Resize's coordinate transforms: (output index, in size, out size, scale) -> input coordinate.
_COORDS: dict[str, Callable[[Any, int, int, float], Any]] = {
    "half_pixel": lambda o, n, m, s: (o + 0.5) / s - 0.5,
    "pytorch_half_pixel": lambda o, n, m, s: (o + 0.5) / s - 0.5 if m > 1 else o * 0.0,
    "align_corners": lambda o, n, m, s: o * ((n - 1) / (m - 1)) if m > 1 else o * 0.0,
    "asymmetric": lambda o, n, m, s: o / s,
    "tf_half_pixel_for_nn": lambda o, n, m, s: (o + 0.5) / s,
}
#: Resize's nearest rounding modes (on float64 coordinates).
_ROUND: dict[str, Callable[[Any], Any]] = {
    "round_prefer_floor": lambda x: tirx.ceil(x - 0.5),
    "round_prefer_ceil": lambda x: tirx.floor(x + 0.5),
    "floor": tirx.floor,
    "ceil": tirx.ceil,
}


def _attr_text(node: Node, name: str, default: str) -> str:
    value = node.attrs.get(name, default)
    return value.decode() if isinstance(value, bytes) else str(value)


def _resize(
    node: Node,
    a: te.Tensor,
    const_of: Callable[[Value | None], np.ndarray | None],
    name: str,
) -> tuple[te.Tensor, tuple[Any, ...]]:
    """``Resize`` with nearest or (bi)linear interpolation over any axes, constant scales or
    sizes; coordinates in float64 as the reference computes them."""
    x = _shape(a)
    rank = len(x)
    mode = _attr_text(node, "mode", "nearest")
    ctm = _attr_text(node, "coordinate_transformation_mode", "half_pixel")
    nearest = _attr_text(node, "nearest_mode", "round_prefer_floor")
    if mode not in ("nearest", "linear") or ctm not in _COORDS or nearest not in _ROUND:
        raise LoweringError(f"{node!r}: mode {mode}, {ctm}, {nearest} are not supported")
    if int(node.attrs.get("antialias", 0)) or node.attrs.get("axes") is not None:
        raise LoweringError(f"{node!r}: antialias and axes are not supported")
    if _attr_text(node, "keep_aspect_ratio_policy", "stretch") != "stretch":
        raise LoweringError(f"{node!r}: keep_aspect_ratio_policy is not supported")
    ins = list(node.inputs) + [None] * (4 - len(node.inputs))
    scales_v, sizes_v = const_of(ins[2]), const_of(ins[3])
    if (ins[2] is not None and scales_v is None) or (ins[3] is not None and sizes_v is None):
        raise LoweringError(f"{node!r}: scales and sizes must be constants")
    if sizes_v is not None and sizes_v.size:
        out = [int(d) for d in sizes_v.ravel()]
        scales = [m / n for m, n in zip(out, x, strict=True)]
    elif scales_v is not None and scales_v.size:
        scales = [float(v) for v in scales_v.ravel()]
        out = [int(np.floor(n * sc)) for n, sc in zip(x, scales, strict=True)]
    else:
        raise LoweringError(f"{node!r}: needs scales or sizes")
    if len(out) != rank or min(out) < 1:
        raise LoweringError(f"{node!r}: output {out} for input {x}")
    if mode == "linear" and str(a.dtype) != "float32":
        raise LoweringError(f"{node!r}: linear resize of {a.dtype}")
    f64 = "float64"
    moved = [d for d in range(rank) if out[d] != x[d] or scales[d] != 1.0]

    def coord(d: int, o: Any) -> Any:
        """The input coordinate of output index `o` along axis `d` (float64, clamped)."""
        c = _COORDS[ctm](o.astype(f64), x[d], out[d], scales[d])
        return tirx.min(tirx.max(c, tirx.const(0.0, f64)), tirx.const(float(x[d] - 1), f64))

    def fcompute(*i: Any) -> Any:
        if mode == "nearest":
            idx = list(i)
            for d in moved:
                c = _COORDS[ctm](i[d].astype(f64), x[d], out[d], scales[d])
                k = _ROUND[nearest](c).astype("int64")
                idx[d] = tirx.min(tirx.max(k, tirx.const(0, "int64")), x[d] - 1)
            return a[tuple(idx)]
        # linear: a weighted sum over the 2^k corners of the moved axes
        parts: list[tuple[list[Any], Any]] = [(list(i), None)]
        for d in moved:
            c = coord(d, i[d])
            lo = tirx.floor(c).astype("int64")
            hi = tirx.min(lo + 1, x[d] - 1)
            w = (c - tirx.floor(c)).astype("float32")
            nxt = []
            for idx, wt in parts:
                for k, wk in ((lo, 1.0 - w), (hi, w)):
                    nidx = list(idx)
                    nidx[d] = k
                    nxt.append((nidx, wk if wt is None else wt * wk))
            parts = nxt
        total = None
        for idx, wt in parts:
            term = a[tuple(idx)] if wt is None else a[tuple(idx)] * wt
            total = term if total is None else total + term
        return total

    res = te.compute(tuple(out), fcompute, name=name)
    return res, ("Resize", mode, ctm, nearest, tuple(out), tuple(scales))
