"""Canonicalize QOperator graphs into QDQ form: each quantized operator becomes
``DequantizeLinear`` on its quantized inputs → the float op → ``QuantizeLinear`` on its output,
with the node's own scales and zero points.

That is the QOperator op's definition (it computes on dequantized values and requantizes), so
the rewrite changes results only by float rounding: at most one quantization step where the
integer kernel and the float op round a tie differently. Afterwards the graph speaks one
quantized dialect, the one ``quantize_int8`` produces and ``lower_qdq`` lowers into the
integer kernels (``lepton.QConv``/``lepton.QMatMul``). First pass of the cleanup stage, so
that every later pass sees QDQ only.

Rewritten (per-tensor, and per-channel where the op allows it; uint8 and int8):

- ai.onnx ``QLinearConv`` → ``Conv(DQ(x), DQ(w), DQ(bias))`` (bias scale ``x_scale * w_scale``),
  ``QLinearMatMul`` → ``MatMul``;
- ai.onnx ``MatMulInteger``/``ConvInteger`` (int32 results) →
  ``Cast<int32>(MatMul/Conv(DQ(a, 1, a_zero_point), DQ(b, 1, b_zero_point)))``: the float op
  sums exact integers, which float32 holds exactly while every partial sum stays within 2^24.
  The pass proves that bound from the operand types and zero points (and the weight's values
  when it is constant: ``max|a - a_zp| * max over outputs of sum |b - b_zp|``) and leaves the
  node as it is when it cannot;
- com.microsoft ``QLinearAdd``/``QLinearMul``/``QLinearLeakyRelu``/``QLinearSigmoid``/
  ``QLinearSoftmax``/``QLinearGlobalAveragePool``/``QLinearAveragePool``/``QLinearConcat``/
  ``QLinearWhere`` → the float op of the same name (NHWC ``QLinearGlobalAveragePool``: a
  ``ReduceMean`` over the spatial axes); ``QGemm`` → ``Gemm`` (bias scale
  ``alpha * a_scale * b_scale``; a float output when it has no output scale);
  ``DynamicQuantizeMatMul`` → ``DynamicQuantizeLinear`` → ``DQ`` → ``MatMul`` (+ ``Add``);
  ``MatMulIntegerToFloat`` → ``MatMul`` of two DQs (+ ``Add``).

Left as they are (their reference kernels run): ``DynamicQuantizeLinear`` (a standard op that
already is the quantize step of QDQ form), NHWC pooling (``channels_last = 1`` on
``QLinearAveragePool``), ``QLinearSoftmax`` with pre-13 semantics on a non-last axis, scales
that are neither per tensor nor one vector along the op's channel axis, and any op not listed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from lepton_compiler.ir import DType, Graph, Node, TensorType, Value
from lepton_compiler.ops.infer import refresh_types
from lepton_compiler.pass_manager import NodePass, PassContext, PassResult, register_pass
from lepton_compiler.rewriter import Builder

_MS = "com.microsoft."
#: Float32 holds every integer up to this magnitude exactly.
_EXACT_INT = 2**24


class _Keep(Exception):
    """The node cannot be rewritten exactly; it stays as it is."""


# -- building blocks ----------------------------------------------------------------------------


def _in(node: Node, i: int) -> Value | None:
    """Input `i`, or None when it is omitted."""
    return node.inputs[i] if i < len(node.inputs) else None


def _req(node: Node, *indices: int) -> list[Value]:
    """Required inputs; a node without one is malformed (an error, not a node to keep)."""
    out = []
    for i in indices:
        v = _in(node, i)
        if v is None:
            raise ValueError(f"{node.op} node {node.name!r} lacks its required input {i}")
        out.append(v)
    return out


def _size(v: Value) -> int | None:
    """Element count of a value (from its payload or a static type), None when unknown."""
    if v.const is not None:
        return int(np.asarray(v.const).size)
    t = v.type
    return t.numel if isinstance(t, TensorType) and t.is_static else None


def _rank(v: Value | None) -> int | None:
    t = None if v is None else v.type
    if v is not None and v.const is not None:
        return np.asarray(v.const).ndim
    return t.rank if isinstance(t, TensorType) else None


def _dtype(v: Value | None) -> DType | None:
    if v is None:
        return None
    if v.const is not None:
        return DType.from_numpy(np.asarray(v.const).dtype)
    return v.type.dtype if isinstance(v.type, TensorType) else None


def _params(b: Builder, scale: Value, zp: Value | None) -> tuple[Value, Value | None, bool]:
    """Scale and zero point as DequantizeLinear/QuantizeLinear take them, and whether they run
    along an axis. One-element constants become scalars; a one-element constant next to a
    vector is spread to the vector's length (both must have the same shape)."""
    sizes = [_size(v) for v in (scale, zp) if v is not None]
    if any(n is None for n in sizes):
        raise _Keep("a scale or zero point of unknown size")
    length = max(n for n in sizes if n is not None)
    out: list[Value | None] = []
    for v in (scale, zp):
        if v is None:
            out.append(None)
        elif _size(v) == 1 and v.const is not None:
            c = np.asarray(v.const).reshape(())
            keep = length == 1 and np.asarray(v.const).ndim == 0
            out.append(v if keep else b.const(np.full(length, c) if length > 1 else c, "qparam"))
        elif _rank(v) != (1 if length > 1 else 0):
            raise _Keep("a scale or zero point that is neither a scalar nor a vector")
        else:
            out.append(v)
    assert out[0] is not None
    return out[0], out[1], length > 1


def _dq(b: Builder, x: Value, scale: Value, zp: Value | None, axis: int | None = None) -> Value:
    """``DequantizeLinear(x, scale, zp)``; `axis` is the channel axis used when the parameters
    are vectors (None: they must be per tensor)."""
    scale, zp, per_axis = _params(b, scale, zp)
    if per_axis and axis is None:
        raise _Keep("per-axis parameters where the op allows only per-tensor ones")
    rank = _rank(x)
    attrs = {"axis": axis % rank if rank else axis} if per_axis else {}
    args = (x, scale) if zp is None else (x, scale, zp)
    return b.op("DequantizeLinear", *args, **attrs)


def _q(b: Builder, y: Value, scale: Value, zp: Value | None, dtype: DType | None) -> Value:
    """``QuantizeLinear(y, scale, zp)`` into `dtype` (a zero point is made when it is absent,
    since QuantizeLinear without one produces uint8)."""
    if zp is None:
        zp = b.const(np.zeros((), (dtype or DType.UINT8).numpy), "zero_point")
    scale, zp, per_axis = _params(b, scale, zp)
    if per_axis:
        raise _Keep("a per-axis output scale")
    return b.op("QuantizeLinear", y, scale, zp)


def _scale_product(b: Builder, *parts: Value | float) -> Value:
    """The float32 product of scales (folded when all are constants, a Mul chain else), in
    the order ONNX Runtime multiplies them."""
    if all(not isinstance(p, Value) or p.const is not None for p in parts):
        acc = np.float32(1.0)
        for p in parts:
            arr = np.asarray(p.const if isinstance(p, Value) else p, dtype=np.float32)
            acc = (acc * (arr.reshape(()) if arr.size == 1 else arr)).astype(np.float32)
        return b.const(np.asarray(acc, dtype=np.float32), "bias_scale")
    values = [p if isinstance(p, Value) else b.const(np.float32(p), "alpha") for p in parts]
    out = values[0]
    for v in values[1:]:
        out = b.op("Mul", out, v)
    return out


# -- the rewrites -------------------------------------------------------------------------------


def _qlinear_conv(node: Node, b: Builder) -> list[Value]:
    x, xs, w, ws, ys = _req(node, 0, 1, 3, 4, 6)
    xz, wz, yz = _in(node, 2), _in(node, 5), _in(node, 7)
    ins = [_dq(b, x, xs, xz), _dq(b, w, ws, wz, axis=0)]
    bias = _in(node, 8)
    if bias is not None:
        ins.append(_dq(b, bias, _scale_product(b, xs, ws), None, axis=0))
    y = b.op("Conv", *ins, **dict(node.attrs))
    return [_q(b, y, ys, yz, _dtype(yz) or _dtype(x))]


def _qlinear_matmul(node: Node, b: Builder) -> list[Value]:
    a, as_, w, ws, ys = _req(node, 0, 1, 3, 4, 6)
    az, wz, yz = _in(node, 2), _in(node, 5), _in(node, 7)
    y = b.op("MatMul", _dq(b, a, as_, az, axis=-2), _dq(b, w, ws, wz, axis=-1))
    return [_q(b, y, ys, yz, _dtype(yz) or _dtype(a))]


def _span(v: Value, zp: Value | None) -> float:
    """``max |v - zp|`` over every value v's dtype allows (and every zero point it may have)."""
    dt = _dtype(v)
    if dt not in (DType.UINT8, DType.INT8):
        raise _Keep("integer operands must be uint8 or int8")
    info = np.iinfo(dt.numpy)
    if zp is None:
        z = np.zeros(1)
    elif zp.const is not None:
        z = np.asarray(zp.const, dtype=np.float64).reshape(-1)
    else:
        z = np.array([info.min, info.max], dtype=np.float64)
    return float(np.maximum(np.abs(info.min - z), np.abs(info.max - z)).max())


def _weight_l1(w: Value, zp: Value | None, axis: int) -> float | None:
    """The largest ``sum |w - zp|`` over one output slice (`axis` indexes the slices) of a
    constant weight with constant zero points; None when either is not constant."""
    if w.const is None or (zp is not None and zp.const is None):
        return None
    c = np.moveaxis(np.asarray(w.const, dtype=np.float64), axis, 0).reshape(
        np.asarray(w.const).shape[axis], -1)  # fmt: skip
    z = 0.0 if zp is None else np.asarray(zp.const, dtype=np.float64).reshape(-1, 1)
    return float(np.abs(c - z).sum(axis=1).max(initial=0.0))


def _check_exact(a_span: float, w: Value, wz: Value | None, axis: int, reduce_axes: Any) -> None:
    """Refuse when an integer sum might leave float32's exact range: the bound is the
    activation's span times the weight's largest L1 norm per output (its dtype span times
    the reduction length when the weight is not constant)."""
    l1 = _weight_l1(w, wz, axis)
    if l1 is None:
        shape = w.type.shape if isinstance(w.type, TensorType) else None
        dims = None if shape is None else [shape[i] for i in reduce_axes(len(shape))]
        if dims is None or not all(isinstance(d, int) for d in dims):
            raise _Keep("the reduction length is unknown")
        l1 = _span(w, wz) * float(np.prod(dims))
    if a_span * l1 > _EXACT_INT:
        raise _Keep(f"sums up to {a_span * l1:.0f} may exceed float32's exact integers")


def _int_to_float(b: Builder, x: Value, zp: Value | None, axis: int | None) -> Value:
    """``DequantizeLinear(x, 1.0, zp)``: ``x - zp`` exactly, as float32."""
    n = 1 if zp is None else _size(zp)
    if n is None:
        raise _Keep("zero point of unknown size")
    ones = b.const(np.ones(n if n > 1 else (), np.float32), "unit_scale")
    return _dq(b, x, ones, zp, axis=axis)


def _matmul_integer(node: Node, b: Builder) -> list[Value]:
    a, w = _req(node, 0, 1)
    az, wz = _in(node, 2), _in(node, 3)
    if _rank(w) != 2:
        raise _Keep("a batched integer product")
    _check_exact(_span(a, az), w, wz, 1, lambda r: [0])
    y = b.op("MatMul", _int_to_float(b, a, az, -2), _int_to_float(b, w, wz, -1))
    return [b.op("Cast", y, to=DType.INT32.onnx_code)]


def _conv_integer(node: Node, b: Builder) -> list[Value]:
    x, w = _req(node, 0, 1)
    xz, wz = _in(node, 2), _in(node, 3)
    _check_exact(_span(x, xz), w, wz, 0, lambda r: range(1, r))
    y = b.op("Conv", _int_to_float(b, x, xz, None), _int_to_float(b, w, wz, 0), **dict(node.attrs))
    return [b.op("Cast", y, to=DType.INT32.onnx_code)]


def _binary(op: str) -> Callable[[Node, Builder], list[Value]]:
    def rewrite(node: Node, b: Builder) -> list[Value]:
        a, as_, c, cs, ys = _req(node, 0, 1, 3, 4, 6)
        az, cz, yz = _in(node, 2), _in(node, 5), _in(node, 7)
        y = b.op(op, _dq(b, a, as_, az), _dq(b, c, cs, cz))
        return [_q(b, y, ys, yz, _dtype(yz) or _dtype(a))]

    return rewrite


def _unary(op: str, keep: tuple[str, ...] = ()) -> Callable[[Node, Builder], list[Value]]:
    def rewrite(node: Node, b: Builder) -> list[Value]:
        x, xs, ys = _req(node, 0, 1, 3)
        xz, yz = _in(node, 2), _in(node, 4)
        attrs = {k: v for k, v in node.attrs.items() if k in keep}
        y = b.op(op, _dq(b, x, xs, xz), **attrs)
        return [_q(b, y, ys, yz, _dtype(yz) or _dtype(x))]

    return rewrite


def _softmax(node: Node, b: Builder) -> list[Value]:
    rank = _rank(node.inputs[0])
    axis = int(node.attrs.get("axis", -1))
    if int(node.attrs.get("opset", 13)) < 13 and (rank is None or axis % rank != rank - 1):
        raise _Keep("Softmax before opset 13 flattens at a non-last axis")
    return _unary("Softmax", ("axis",))(node, b)


def _global_average_pool(node: Node, b: Builder) -> list[Value]:
    if not node.attrs.get("channels_last", 0):
        return _unary("GlobalAveragePool")(node, b)
    rank = _rank(node.inputs[0])
    if rank is None:
        raise _Keep("NHWC pooling of unknown rank")
    x, xs, ys = _req(node, 0, 1, 3)
    xz, yz = _in(node, 2), _in(node, 4)
    axes = b.const(np.arange(1, rank - 1, dtype=np.int64), "axes")
    y = b.op("ReduceMean", _dq(b, x, xs, xz), axes, keepdims=1)
    return [_q(b, y, ys, yz, _dtype(yz) or _dtype(x))]


def _average_pool(node: Node, b: Builder) -> list[Value]:
    if node.attrs.get("channels_last", 0):
        raise _Keep("NHWC AveragePool")
    pool_attrs = ("auto_pad", "ceil_mode", "count_include_pad", "dilations", "kernel_shape",
                  "pads", "strides")  # fmt: skip
    return _unary("AveragePool", pool_attrs)(node, b)


def _concat(node: Node, b: Builder) -> list[Value]:
    (ys,), yz = _req(node, 0), _in(node, 1)
    parts = []
    for i in range(2, len(node.inputs), 3):
        x, xs = _req(node, i, i + 1)
        parts.append(_dq(b, x, xs, _in(node, i + 2)))
    y = b.op("Concat", *parts, axis=int(node.attrs["axis"]))
    return [_q(b, y, ys, yz, _dtype(yz) or _dtype(node.inputs[2]))]


def _where(node: Node, b: Builder) -> list[Value]:
    cond, x, xs, y, ys, zs = _req(node, 0, 1, 2, 4, 5, 7)
    xz, yz, zz = _in(node, 3), _in(node, 6), _in(node, 8)
    z = b.op("Where", cond, _dq(b, x, xs, xz), _dq(b, y, ys, yz))
    return [_q(b, z, zs, zz, _dtype(zz) or _dtype(x))]


def _qgemm(node: Node, b: Builder) -> list[Value]:
    a, as_, w, ws = _req(node, 0, 1, 3, 4)
    az, wz, c, ys, yz = (_in(node, i) for i in (2, 5, 6, 7, 8))
    alpha = float(node.attrs.get("alpha", 1.0))
    trans_b = int(node.attrs.get("transB", 0))
    ins = [_dq(b, a, as_, az), _dq(b, w, ws, wz, axis=0 if trans_b else 1)]
    if c is not None:
        c_axis = (_rank(c) or 1) - 1
        ins.append(_dq(b, c, _scale_product(b, alpha, as_, ws), None, axis=c_axis))
    y = b.op("Gemm", *ins, alpha=alpha, beta=1.0, transA=int(node.attrs.get("transA", 0)),
             transB=trans_b)  # fmt: skip
    return [y if ys is None else _q(b, y, ys, yz, _dtype(yz) or _dtype(a))]


def _bias(b: Builder, y: Value, bias: Value | None) -> list[Value]:
    return [y if bias is None else b.op("Add", y, bias)]


def _dynamic_quantize_matmul(node: Node, b: Builder) -> list[Value]:
    a, w, ws = _req(node, 0, 1, 2)
    wz, bias = _in(node, 3), _in(node, 4)
    dql = b.op("DynamicQuantizeLinear", a, num_outputs=3).producer
    assert dql is not None
    aq = _dq(b, *dql.outputs)
    return _bias(b, b.op("MatMul", aq, _dq(b, w, ws, wz, axis=-1)), bias)


def _matmul_integer_to_float(node: Node, b: Builder) -> list[Value]:
    a, w, as_, ws = _req(node, 0, 1, 2, 3)
    az, wz, bias = _in(node, 4), _in(node, 5), _in(node, 6)
    y = b.op("MatMul", _dq(b, a, as_, az), _dq(b, w, ws, wz, axis=-1))
    return _bias(b, y, bias)


def _complete_types(graph: Graph) -> None:
    """Re-infer output types left incomplete: ONNX's shape inference knows no com.microsoft
    op, so at import everything after one often has no shape; the float ops now infer it."""
    for g in [graph, *graph.subgraphs_recursive()]:
        for node in g:
            if not all(isinstance(o.type, TensorType) and o.type.is_static for o in node.outputs):
                refresh_types(node)


#: Qualified op name → its rewrite into QDQ form.
_REWRITES: dict[str, Callable[[Node, Builder], list[Value]]] = {
    "QLinearConv": _qlinear_conv,
    "QLinearMatMul": _qlinear_matmul,
    "MatMulInteger": _matmul_integer,
    "ConvInteger": _conv_integer,
    _MS + "QLinearAdd": _binary("Add"),
    _MS + "QLinearMul": _binary("Mul"),
    _MS + "QLinearLeakyRelu": _unary("LeakyRelu", ("alpha",)),
    _MS + "QLinearSigmoid": _unary("Sigmoid"),
    _MS + "QLinearSoftmax": _softmax,
    _MS + "QLinearGlobalAveragePool": _global_average_pool,
    _MS + "QLinearAveragePool": _average_pool,
    _MS + "QLinearConcat": _concat,
    _MS + "QLinearWhere": _where,
    _MS + "QGemm": _qgemm,
    _MS + "DynamicQuantizeMatMul": _dynamic_quantize_matmul,
    _MS + "MatMulIntegerToFloat": _matmul_integer_to_float,
}


@register_pass
class QOperatorToQDQPass(NodePass):
    """Rewrite QOperator nodes (QLinearConv, QLinearMatMul, MatMulInteger, ConvInteger and
    ONNX Runtime's com.microsoft QLinear*/QGemm/DynamicQuantizeMatMul) into QDQ form."""

    name = "qoperator_to_qdq"

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        result = super().run(graph, ctx)
        if result.modified:
            _complete_types(graph)
        return result

    def visit(self, node: Node, ctx: PassContext) -> bool:
        rewrite = _REWRITES.get(node.op)
        graph = node.graph
        if rewrite is None or graph is None:
            return False
        constants = set(graph.initializers)
        b = Builder(graph, node, self.name)
        try:
            replacement = rewrite(node, b)
        except _Keep as reason:  # undo what the rewrite built before it found out
            if ctx.trace_rules:
                ctx.traces.append(f"[{self.name}] {node.op} {node.name} kept: {reason}")
            graph.remove(list(reversed(b.created)), safe=False)
            for name in set(graph.initializers) - constants:
                if not graph.initializers[name].uses:
                    graph.initializers.pop(name).graph = None
            return False
        for old, new in zip(node.outputs, replacement, strict=True):
            if new.type is None:
                new.type = old.type
            graph.replace_value(old, new)
        graph.remove(node)
        return True
