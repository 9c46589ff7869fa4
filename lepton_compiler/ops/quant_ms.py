"""Quantized ops of ONNX Runtime's ``com.microsoft`` domain, as its quantizer emits them.

``onnxruntime.quantization.quantize_static(..., quant_format=QuantFormat.QOperator)`` writes
these beside the standard QLinearConv/QLinearMatMul, and ONNX Runtime's graph optimizer saves
DynamicQuantizeMatMul and MatMulIntegerToFloat into optimized models. Defining them here lets
such models import and run; the ``qoperator_to_qdq`` pass (``passes/quant/qoperator.py``) then
rewrites each into our canonical QDQ form. Every reference is that QDQ form's semantics:
dequantize each quantized input (``(x - zero_point) * scale`` in float32), run the float op,
quantize the result (``saturate(rint(y / scale) + zero_point)``, ties to even). ONNX Runtime's
kernels (lookup tables, fixed-point requantization) agree within one quantization step.

- ``QLinearAdd``/``QLinearMul(A, A_scale, A_zp?, B, B_scale, B_zp?, C_scale, C_zp?)``:
  broadcasting Add/Mul, output of A's type;
- ``QLinearLeakyRelu(X, X_scale, X_zp?, Y_scale, Y_zp?)`` {alpha = 0.01},
  ``QLinearSigmoid`` (same inputs), ``QLinearSoftmax`` (same inputs) {axis = -1, opset: the
  Softmax version whose semantics apply; below 13 the input is coerced to 2-D at ``axis``};
- ``QLinearGlobalAveragePool(X, x_scale, x_zp, y_scale, y_zp)`` {channels_last = 0} and
  ``QLinearAveragePool`` (same inputs) {AveragePool's attributes, channels_last = 0};
- ``QLinearConcat(Y_scale, Y_zp, X1, X1_scale, X1_zp, X2, ...)`` {axis};
- ``QLinearWhere(cond, X, x_scale, x_zp, Y, y_scale, y_zp, z_scale, z_zp)``;
- ``QGemm(A, a_scale, a_zp, B, b_scale, b_zp, C?, y_scale?, y_zp?)`` {alpha = 1, transA,
  transB}: ``alpha * A' B' + C`` where the int32 ``C`` has scale ``alpha * a_scale * b_scale``
  (per column with ``b_scale``); quantized output when ``y_scale`` is given, float32 else;
- ``DynamicQuantizeMatMul(A, B, b_scale, b_zp?, bias?)``: ``A`` (float) quantized to uint8 as
  DynamicQuantizeLinear does, then ``DQ(A) @ DQ(B) + bias`` in float32;
- ``MatMulIntegerToFloat(A, B, a_scale, b_scale, a_zp?, b_zp?, bias?)``:
  ``DQ(A) @ DQ(B) + bias`` in float32.

Scales of ``b`` may be per column (``[N]``); every other scale and zero point is per tensor.
All of these are "opaque" to fusion: they exist to be canonicalized, and one that stays runs
alone by its reference kernel.

Nothing here imports onnx.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ..ir import DType, Node, TensorType, Value, ValueType
from . import kernels
from .composite import broadcast_shapes
from .kernels.pool import _Geometry
from .registry import define

#: ONNX Runtime's contrib-op domain.
MS_DOMAIN = "com.microsoft"

Reference = Callable[[Node, list[Any], Mapping[Value, Any]], list[Any]]


# -- arithmetic shared by the references --------------------------------------------------------


def dequantize(x: Any, scale: Any, zero_point: Any = None) -> np.ndarray:
    """``(x - zero_point) * scale`` in float32 (numpy broadcasting; per-column scales of a
    ``[.., K, N]`` operand broadcast as they are)."""
    dx = np.asarray(x).astype(np.float32)
    if zero_point is not None:
        dx = dx - np.asarray(zero_point).astype(np.float32)
    return (dx * np.asarray(scale, dtype=np.float32)).astype(np.float32)


def quantize(y: Any, scale: Any, zero_point: Any, dtype: np.dtype) -> np.ndarray:
    """``saturate(rint(y / scale) + zero_point)`` into `dtype` (uint8 or int8)."""
    q = np.rint(np.asarray(y, dtype=np.float32) / np.asarray(scale, dtype=np.float32))
    if zero_point is not None:
        q = q + np.asarray(zero_point).astype(np.float32)
    info = np.iinfo(dtype)
    return np.clip(q, info.min, info.max).astype(dtype)


def dynamic_quantize(x: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """DynamicQuantizeLinear: uint8 data, scale and zero point from the range of `x` (with 0)."""
    x = np.asarray(x, dtype=np.float32)
    hi = np.float32(max(0.0, float(x.max(initial=0.0))))
    lo = np.float32(min(0.0, float(x.min(initial=0.0))))
    scale = np.float32(1.0 if hi == lo else hi - lo) / np.float32(255)
    zp = np.rint(np.clip(np.float32(0) - lo / scale, 0, 255))
    q = np.clip(np.rint(x / scale) + zp, 0, 255).astype(np.uint8)
    return q, np.array(scale, dtype=np.float32), np.array(zp, dtype=np.uint8)


def _arg(inputs: Sequence[Any], i: int) -> Any:
    return inputs[i] if i < len(inputs) else None


def _dtype_of(*candidates: Any) -> np.dtype:
    """The dtype of the first candidate that is given."""
    for c in candidates:
        if c is not None:
            return np.asarray(c).dtype
    return np.dtype(np.uint8)


# -- type inference -----------------------------------------------------------------------------


def _tensor(node: Node, i: int) -> TensorType | None:
    v = node.inputs[i] if i < len(node.inputs) else None
    return v.type if v is not None and isinstance(v.type, TensorType) else None


def _dtype_from(node: Node, *indices: int) -> DType | None:
    for i in indices:
        t = _tensor(node, i)
        if t is not None:
            return t.dtype
    return None


def _typed(dtype: DType | None, shape: Any) -> list[ValueType | None]:
    return [None if dtype is None else TensorType(dtype, shape)]


def _shape(node: Node, i: int) -> Any:
    t = _tensor(node, i)
    return None if t is None else t.shape


def _infer_unary(node: Node) -> Sequence[ValueType | None]:
    return _typed(_dtype_from(node, 4, 0), _shape(node, 0))


def _infer_binary(node: Node) -> Sequence[ValueType | None]:
    return _typed(_dtype_from(node, 7, 0), broadcast_shapes(_shape(node, 0), _shape(node, 3)))


def _infer_where(node: Node) -> Sequence[ValueType | None]:
    shape = broadcast_shapes(_shape(node, 0), _shape(node, 1), _shape(node, 4))
    return _typed(_dtype_from(node, 8, 1), shape)


def _infer_global_pool(node: Node) -> Sequence[ValueType | None]:
    shape = _shape(node, 0)
    if shape is not None:
        if node.attrs.get("channels_last", 0):
            shape = (shape[0], *[1] * (len(shape) - 2), shape[-1])
        else:
            shape = (*shape[:2], *[1] * (len(shape) - 2))
    return _typed(_dtype_from(node, 4, 0), shape)


def _infer_average_pool(node: Node) -> Sequence[ValueType | None]:
    shape = _shape(node, 0)
    last = bool(node.attrs.get("channels_last", 0))
    if shape is not None:
        spatial = shape[1:-1] if last else shape[2:]
        if all(isinstance(s, int) for s in spatial):
            out = _Geometry(spatial, node.attrs).out
            shape = (shape[0], *out, shape[-1]) if last else (*shape[:2], *out)
        else:
            shape = (shape[0], *[None] * len(spatial), shape[-1]) if last else (
                *shape[:2], *[None] * len(spatial))  # fmt: skip
    return _typed(_dtype_from(node, 4, 0), shape)


def _infer_concat(node: Node) -> Sequence[ValueType | None]:
    shapes = [_shape(node, i) for i in range(2, len(node.inputs), 3)]
    dtype = _dtype_from(node, 1, 2)
    if not shapes or any(s is None for s in shapes):
        return _typed(dtype, None)
    axis = int(node.attrs.get("axis", 0)) % len(shapes[0])
    sizes = [s[axis] for s in shapes]
    total = sum(sizes) if all(isinstance(d, int) for d in sizes) else None
    return _typed(dtype, (*shapes[0][:axis], total, *shapes[0][axis + 1 :]))


def _infer_qgemm(node: Node) -> Sequence[ValueType | None]:
    a, b = _shape(node, 0), _shape(node, 3)
    shape = None
    if a is not None and b is not None:
        m = a[1] if node.attrs.get("transA", 0) else a[0]
        n = b[0] if node.attrs.get("transB", 0) else b[1]
        shape = (m, n)
    has_y = len(node.inputs) > 7 and node.inputs[7] is not None
    return _typed(_dtype_from(node, 8, 0) if has_y else DType.FLOAT32, shape)


def _infer_matmul_to_float(node: Node) -> Sequence[ValueType | None]:
    a, b = _shape(node, 0), _shape(node, 1)
    if a is None or b is None or len(b) != 2:
        return [TensorType(DType.FLOAT32, None)]
    return [TensorType(DType.FLOAT32, (*a[:-1], b[-1]))]


# -- references ---------------------------------------------------------------------------------


def _binary(fn: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> Reference:
    def reference(node: Node, inputs: list[Any], scope: Mapping[Value, Any]) -> list[Any]:
        a = dequantize(inputs[0], inputs[1], _arg(inputs, 2))
        b = dequantize(inputs[3], inputs[4], _arg(inputs, 5))
        zp = _arg(inputs, 7)
        return [quantize(fn(a, b), inputs[6], zp, _dtype_of(zp, inputs[0]))]

    return reference


def _unary(fn: Callable[[Node, np.ndarray], np.ndarray]) -> Reference:
    def reference(node: Node, inputs: list[Any], scope: Mapping[Value, Any]) -> list[Any]:
        x = dequantize(inputs[0], inputs[1], _arg(inputs, 2))
        zp = _arg(inputs, 4)
        return [quantize(fn(node, x), inputs[3], zp, _dtype_of(zp, inputs[0]))]

    return reference


def _leaky_relu(node: Node, x: np.ndarray) -> np.ndarray:
    return np.where(x < 0, x * np.float32(node.attrs.get("alpha", 0.01)), x)


def _sigmoid(node: Node, x: np.ndarray) -> np.ndarray:
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(np.float32)


def _softmax(node: Node, x: np.ndarray) -> np.ndarray:
    axis = int(node.attrs.get("axis", -1)) % max(x.ndim, 1)
    shape = x.shape
    if int(node.attrs.get("opset", 13)) < 13:  # Softmax-1/11: coerced to 2-D at axis
        x = x.reshape(int(np.prod(shape[:axis])), -1)
        axis = 1
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return (e / e.sum(axis=axis, keepdims=True)).reshape(shape)


def _channels_first(node: Node, x: np.ndarray, fn: Callable[[np.ndarray], np.ndarray]) -> Any:
    """Apply a pooling `fn` written for NCHW to an NHWC tensor when ``channels_last`` is set."""
    if not node.attrs.get("channels_last", 0):
        return fn(x)
    to_first = (0, x.ndim - 1, *range(1, x.ndim - 1))
    return np.transpose(fn(np.transpose(x, to_first)), (0, *range(2, x.ndim), 1))


def _global_average_pool(node: Node, x: np.ndarray) -> np.ndarray:
    return _channels_first(node, x, lambda t: kernels.global_average_pool([t], {}, 18)[0])


def _average_pool(node: Node, x: np.ndarray) -> np.ndarray:
    attrs = {k: v for k, v in node.attrs.items() if k != "channels_last"}
    return _channels_first(node, x, lambda t: kernels.average_pool([t], attrs, 18)[0])


def _concat(node: Node, inputs: list[Any], scope: Mapping[Value, Any]) -> list[Any]:
    parts = [dequantize(inputs[i], inputs[i + 1], _arg(inputs, i + 2))
             for i in range(2, len(inputs), 3)]  # fmt: skip
    y = np.concatenate(parts, axis=int(node.attrs.get("axis", 0)))
    return [quantize(y, inputs[0], inputs[1], _dtype_of(inputs[1], inputs[2]))]


def _where(node: Node, inputs: list[Any], scope: Mapping[Value, Any]) -> list[Any]:
    x = dequantize(inputs[1], inputs[2], inputs[3])
    y = dequantize(inputs[4], inputs[5], inputs[6])
    zp = _arg(inputs, 8)
    return [quantize(np.where(inputs[0], x, y), inputs[7], zp, _dtype_of(zp, inputs[1]))]


def _qgemm(node: Node, inputs: list[Any], scope: Mapping[Value, Any]) -> list[Any]:
    alpha = np.float32(node.attrs.get("alpha", 1.0))
    a = dequantize(inputs[0], inputs[1], inputs[2])
    a = a.T if node.attrs.get("transA", 0) else a
    b = np.asarray(inputs[3])
    b = dequantize(b.T if node.attrs.get("transB", 0) else b, inputs[4], inputs[5])  # [K, N]
    y = alpha * np.matmul(a, b)
    c = _arg(inputs, 6)
    if c is not None:
        c_scale = alpha * np.float32(np.asarray(inputs[1]).reshape(())) * np.asarray(
            inputs[4], dtype=np.float32).reshape(-1)  # fmt: skip
        y = y + dequantize(c, c_scale if c_scale.size > 1 else c_scale.reshape(()))
    y = y.astype(np.float32)
    y_scale = _arg(inputs, 7)
    if y_scale is None:
        return [y]
    zp = _arg(inputs, 8)
    return [quantize(y, y_scale, zp, _dtype_of(zp, inputs[0]))]


def _dynamic_quantize_matmul(node: Node, inputs: list[Any], scope: Mapping[Value, Any]) -> list:
    q, scale, zp = dynamic_quantize(inputs[0])
    y = np.matmul(dequantize(q, scale, zp), dequantize(inputs[1], inputs[2], _arg(inputs, 3)))
    bias = _arg(inputs, 4)
    return [(y if bias is None else y + bias).astype(np.float32)]


def _matmul_integer_to_float(node: Node, inputs: list[Any], scope: Mapping[Value, Any]) -> list:
    a = dequantize(inputs[0], inputs[2], _arg(inputs, 4))
    y = np.matmul(a, dequantize(inputs[1], inputs[3], _arg(inputs, 5)))
    bias = _arg(inputs, 6)
    return [(y if bias is None else y + bias).astype(np.float32)]


# -- definitions --------------------------------------------------------------------------------


_POOL_DEFAULTS = {"auto_pad": "NOTSET", "ceil_mode": 0, "count_include_pad": 0,
                  "channels_last": 0}  # fmt: skip


def _ms(op: str, infer: Any, reference: Reference, doc: str, **defaults: Any) -> None:
    define(op, domain=MS_DOMAIN, category="opaque", infer=infer, reference=reference, doc=doc,
           defaults=(lambda version, d=dict(defaults): dict(d)) if defaults else None)  # fmt: skip


_ms("QLinearAdd", _infer_binary, _binary(np.add), "Quantized broadcasting Add.")
_ms("QLinearMul", _infer_binary, _binary(np.multiply), "Quantized broadcasting Mul.")
_ms("QLinearLeakyRelu", _infer_unary, _unary(_leaky_relu), "Quantized LeakyRelu.", alpha=0.01)
_ms("QLinearSigmoid", _infer_unary, _unary(_sigmoid), "Quantized Sigmoid.")
_ms("QLinearSoftmax", _infer_unary, _unary(_softmax), "Quantized Softmax.", axis=-1)
_ms(
    "QLinearGlobalAveragePool",
    _infer_global_pool,
    _unary(_global_average_pool),
    "Quantized GlobalAveragePool (NCHW, or NHWC with channels_last).",
    channels_last=0,
)
_ms(
    "QLinearAveragePool",
    _infer_average_pool,
    _unary(_average_pool),
    "Quantized AveragePool (NCHW, or NHWC with channels_last).",
    **_POOL_DEFAULTS,
)
_ms("QLinearConcat", _infer_concat, _concat, "Concat of quantized inputs, requantized.")
_ms("QLinearWhere", _infer_where, _where, "Where over two quantized inputs, requantized.")
_ms(
    "QGemm",
    _infer_qgemm,
    _qgemm,
    "Quantized Gemm with int32 bias; quantized or float output.",
    alpha=1.0,
    transA=0,
    transB=0,
)
_ms(
    "DynamicQuantizeMatMul",
    _infer_matmul_to_float,
    _dynamic_quantize_matmul,
    "MatMul of a float A (quantized to uint8 on the fly) and a quantized B; float output.",
)
_ms(
    "MatMulIntegerToFloat",
    _infer_matmul_to_float,
    _matmul_integer_to_float,
    "MatMul of quantized A and B, scaled into float32, plus an optional bias.",
)
