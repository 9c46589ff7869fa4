"""Quantization ops: QuantizeLinear/DequantizeLinear, the QOperator family, and our integer
ops.

QuantizeLinear/DequantizeLinear have numpy kernels here for the 8- and 16-bit integer types
(per tensor and per axis; ``onnx.reference`` has no kernel for every opset version and is
slow); other element types and blocked quantization use ``onnx.reference``.

The quantization passes (``passes/quant/``) canonicalize QOperator graphs into QDQ form and
lower ``DequantizeLinear → Conv/MatMul`` patterns into the two integer ops
defined here, which the backends compile as int8 kernels:

- ``lepton.QConv(x, x_scale, x_zero_point, w, w_scale, bias?)`` {Conv's attributes}: an
  integer convolution. ``x`` is uint8 or int8 (per-tensor ``x_scale``/``x_zero_point``
  scalars), ``w`` is int8 ``[M, C/group, *kernel]`` with symmetric per-channel (``[M]``) or
  per-tensor scales, ``bias`` is int32 ``[M]`` in units of ``x_scale * w_scale``. The output is
  float32::

      acc[n, m, ...] = sum (x - x_zero_point) * w  (+ bias[m])        exact, in int32
      y = float32(acc) * (float32(x_scale) * float32(w_scale[m]))

  i.e. exactly ``Conv(DQ(x), DQ(w), DQ(bias))`` but with the sum computed exactly. Padding
  reads ``x_zero_point`` (the quantized 0.0). A following ReLU/Add/QuantizeLinear is its
  float epilogue: the fused group becomes one integer kernel whose requantization happens in
  the store.
- ``lepton.QMatMul(a, a_scale, a_zero_point, b, b_scale, bias?)``: the same for a matrix
  product ``a @ b`` with ``a`` uint8/int8 ``[..., K]`` and constant int8 ``b`` ``[K, N]``
  (per-column ``b_scale`` ``[N]`` or a scalar); ``bias`` is int32 ``[N]``; float32 output
  ``[..., N]``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import ShapeInferenceError
from ..ir import DType, Node, TensorType, Value, ValueType
from . import kernels, onnx_bridge
from .kernels._padding import auto_pad_of, pads_for, window_attrs
from .registry import define, override

#: Quantized dtypes the numpy kernels below take (others — int4, float8 — and blocked
#: quantization go to onnx.reference).
_FAST = {"uint8": (0, 255), "int8": (-128, 127), "uint16": (0, 65535), "int16": (-32768, 32767)}


def _axis_shape(ndim: int, axis: int, param: np.ndarray) -> tuple[int, ...] | None:
    """How a scale/zero point broadcasts over an ndim tensor: () for per-tensor, a shape with
    -1 at `axis` for 1-D per-axis parameters."""
    if param.size == 1 and param.ndim <= 1:
        return ()
    if param.ndim != 1 or ndim == 0:
        return None
    shape = [1] * ndim
    shape[axis % ndim] = -1
    return tuple(shape)


def _quantize_linear(node: Node, inputs: list[Any], scope: Mapping[Value, Any]) -> list[Any]:
    x, scale = np.asarray(inputs[0]), np.asarray(inputs[1])
    zp = np.asarray(inputs[2]) if len(inputs) > 2 and inputs[2] is not None else None
    out_dtype = zp.dtype.name if zp is not None else _output_dtype(node)
    shape = _axis_shape(x.ndim, int(node.attrs.get("axis", 1)), scale)
    if (out_dtype not in _FAST or shape is None or int(node.attrs.get("block_size", 0) or 0)
            or scale.dtype != np.float32 or x.dtype != np.float32):  # fmt: skip
        return onnx_bridge.run_node(node, inputs, scope)
    lo, hi = _FAST[out_dtype]
    q = np.rint(x / scale.reshape(shape))
    if zp is not None:
        q = q + zp.astype(np.float32).reshape(shape)
    return [np.clip(q, lo, hi).astype(out_dtype)]


def _output_dtype(node: Node) -> str:
    code = int(node.attrs.get("output_dtype", 0) or 0)
    return {0: "uint8", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16"}.get(code, "other")


def _dequantize_linear(node: Node, inputs: list[Any], scope: Mapping[Value, Any]) -> list[Any]:
    x, scale = np.asarray(inputs[0]), np.asarray(inputs[1])
    zp = np.asarray(inputs[2]) if len(inputs) > 2 and inputs[2] is not None else None
    shape = _axis_shape(x.ndim, int(node.attrs.get("axis", 1)), scale)
    if ((x.dtype.name not in _FAST and x.dtype != np.int32) or shape is None
            or int(node.attrs.get("block_size", 0) or 0) or scale.dtype != np.float32):  # fmt: skip
        return onnx_bridge.run_node(node, inputs, scope)
    y = x.astype(np.float32)
    if zp is not None:
        y = y - zp.astype(np.float32).reshape(shape)
    return [(y * scale.reshape(shape)).astype(np.float32)]


override("QuantizeLinear", category="elementwise", reference=_quantize_linear)
override("DequantizeLinear", category="elementwise", reference=_dequantize_linear)
override("DynamicQuantizeLinear", category="elementwise")
for _op in ("QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger"):
    override(_op, category="complex")

#: Integer ops and the index of their weight, weight-scale and bias inputs.
INTEGER_OPS = ("lepton.QConv", "lepton.QMatMul")
W_INPUT, W_SCALE_INPUT, BIAS_INPUT = 3, 4, 5


def _tensor(v: Value | None) -> TensorType | None:
    return v.type if v is not None and isinstance(v.type, TensorType) else None


def combined_scale(x_scale: Any, w_scale: Any, channels: int) -> np.ndarray:
    """``float32(x_scale) * float32(w_scale)`` per output channel (the kernels' requantization
    multiplier), shape ``[channels]``."""
    xs = np.float32(np.asarray(x_scale, dtype=np.float32).reshape(()))
    ws = np.asarray(w_scale, dtype=np.float32).reshape(-1)
    if ws.size == 1:
        ws = np.full(channels, ws[0], dtype=np.float32)
    return (xs * ws).astype(np.float32)


def _centered(x: Any, zero_point: Any) -> np.ndarray:
    if zero_point is None:
        return np.asarray(x).astype(np.float64)
    zp = np.asarray(zero_point).reshape(()).astype(np.float64)
    return np.asarray(x).astype(np.float64) - zp


def _finish(acc: np.ndarray, bias: Any, scale: np.ndarray, channel_axis: int) -> np.ndarray:
    """Add the int32 bias and scale the exact accumulator into float32."""
    shape = [1] * acc.ndim
    shape[channel_axis] = -1
    acc = np.rint(acc)
    if bias is not None:
        acc = acc + np.asarray(bias).astype(np.float64).reshape(shape)
    if np.abs(acc).max(initial=0) >= 2**31:
        raise ValueError("the int32 accumulator overflows")
    return acc.astype(np.int32).astype(np.float32) * scale.reshape(shape)


def _qconv(node: Node, inputs: list[Any], scope: Mapping[Value, Any]) -> list[Any]:
    x, xs, xzp, w, ws = inputs[:5]
    bias = inputs[5] if len(inputs) > 5 else None
    w = np.asarray(w)
    attrs = {k: v for k, v in node.attrs.items() if k != "kernel_shape"}
    acc = kernels.conv([_centered(x, xzp), w.astype(np.float64)], attrs, 18)[0]
    return [_finish(acc, bias, combined_scale(xs, ws, w.shape[0]), 1)]


def _qmatmul(node: Node, inputs: list[Any], scope: Mapping[Value, Any]) -> list[Any]:
    a, az, azp, b, bs = inputs[:5]
    bias = inputs[5] if len(inputs) > 5 else None
    b = np.asarray(b)
    acc = np.matmul(_centered(a, azp), b.astype(np.float64))
    return [_finish(acc, bias, combined_scale(az, bs, b.shape[-1]), -1)]


def _check_operands(node: Node, x: TensorType | None, w: TensorType | None) -> None:
    if x is not None and x.dtype not in (DType.UINT8, DType.INT8):
        raise ShapeInferenceError(
            f"{node.op} node {node.name!r}: input must be uint8 or int8, got {x.dtype.value}"
        )
    if w is not None and w.dtype != DType.INT8:
        raise ShapeInferenceError(
            f"{node.op} node {node.name!r}: weights must be int8, got {w.dtype.value}"
        )


def _infer_qconv(node: Node) -> Sequence[ValueType | None]:
    x, w = _tensor(node.inputs[0]), _tensor(node.inputs[W_INPUT])
    _check_operands(node, x, w)
    if x is None or w is None or x.shape is None or w.shape is None:
        return [TensorType(DType.FLOAT32, None)]
    kernel = [int(k) for k in w.shape[2:]]
    strides, _, eff = window_attrs(node.attrs, kernel)
    spatial = list(x.shape[2:])
    if not all(isinstance(s, int) for s in spatial):
        out: list[Any] = [None] * len(spatial)
    else:
        begin, end = pads_for(
            auto_pad_of(node.attrs), spatial, eff, strides, node.attrs.get("pads")
        )
        out = [
            (s + b + e - k) // st + 1
            for s, b, e, k, st in zip(spatial, begin, end, eff, strides, strict=True)
        ]
    return [TensorType(DType.FLOAT32, (x.shape[0], w.shape[0], *out))]


def _infer_qmatmul(node: Node) -> Sequence[ValueType | None]:
    a, b = _tensor(node.inputs[0]), _tensor(node.inputs[W_INPUT])
    _check_operands(node, a, b)
    if a is None or b is None or a.shape is None or b.shape is None:
        return [TensorType(DType.FLOAT32, None)]
    if len(b.shape) != 2:
        raise ShapeInferenceError(
            f"lepton.QMatMul node {node.name!r}: b must be 2-D [K, N], got shape {b.shape}"
        )
    return [TensorType(DType.FLOAT32, (*a.shape[:-1], b.shape[1]))]


define(
    "lepton.QConv",
    category="complex",
    infer=_infer_qconv,
    reference=_qconv,
    doc="Integer convolution of uint8/int8 x and int8 weights, int32 bias, float32 output.",
)
define(
    "lepton.QMatMul",
    category="complex",
    infer=_infer_qmatmul,
    reference=_qmatmul,
    doc="Integer matrix product of uint8/int8 a and int8 [K, N] b, int32 bias, float32 output.",
)
