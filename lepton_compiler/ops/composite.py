"""Composite `lepton.*` ops: what pattern fusions turn multi-op subgraphs into.

Exporters write GELU, SiLU, RMSNorm, residual + LayerNorm, scaled dot-product attention and
MatMul + bias as chains of primitive ops (our canonical opset 18 has no Gelu, RMSNormalization
or Attention). The fusion passes in ``passes/fusion/`` recognise those chains and replace each by
one op defined here, so a backend sees one kernel-sized unit with its semantics in one place:

- ``lepton.Gelu(x)`` {approximate: "none" | "tanh"}: ``0.5 x (1 + erf(x/√2))`` or its tanh
  approximation (ONNX Gelu-20);
- ``lepton.SiLU(x)``: ``x * sigmoid(x)`` (Swish with β = 1);
- ``lepton.RMSNorm(x, scale)`` {axis, epsilon}: ``x / sqrt(mean(x², axes ≥ axis) + ε) * scale``
  (ONNX RMSNormalization-23);
- ``lepton.SkipLayerNorm(x, skip, gamma, beta?, bias?)`` {epsilon}: LayerNormalization over the
  last axis of ``x + skip (+ bias)`` (ONNX Runtime's SkipLayerNormalization, first output);
- ``lepton.Attention(q, k, v, mask?)`` {scale}: ``softmax(q kᵀ · scale + mask) v`` on head-split
  ``[..., s, d]`` tensors, computed in float32 at least;
- ``lepton.MatMulAdd(a, b, bias?)`` {transA, transB}: ``op(a) @ op(b) + bias`` for operands of
  any rank ≥ 2 (Gemm generalised to batched products: a bias epilogue and free transposes).

Each definition holds its fusion category, type inference (symbolic dims kept) and numpy
reference; none imports onnx.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import ShapeInferenceError
from ..ir import Dim, Node, Shape, TensorType, Value, ValueType
from . import kernels
from .registry import define

# -- shape helpers ------------------------------------------------------------------------------


def _tensor(v: Value | None) -> TensorType | None:
    return v.type if v is not None and isinstance(v.type, TensorType) else None


def _broadcast_dim(a: Dim, b: Dim) -> Dim:
    if a == 1:
        return b
    if b == 1 or a == b:
        return a
    if isinstance(a, int):
        return a  # a known size wins over a symbolic one (broadcasting requires them equal)
    if isinstance(b, int):
        return b
    return a if b is None else b if a is None else None


def broadcast_shapes(*shapes: Shape | None) -> Shape | None:
    """Numpy broadcasting of shapes with symbolic dims; None when a rank is unknown."""
    if any(s is None for s in shapes):
        return None
    rank = max((len(s) for s in shapes), default=0)  # type: ignore[arg-type]
    out: list[Dim] = [1] * rank
    for s in shapes:
        assert s is not None
        for i, d in enumerate(s, start=rank - len(s)):
            out[i] = _broadcast_dim(out[i], d)
    return tuple(out)


def _same_as_first(node: Node) -> Sequence[ValueType | None]:
    return [node.inputs[0].type if node.inputs and node.inputs[0] is not None else None]


def _compute_dtype(x: np.ndarray) -> np.dtype:
    """float32 for half-precision inputs (as ONNX's stash_type = 1), the input's type else."""
    return np.promote_types(x.dtype, np.float32)


# -- activations --------------------------------------------------------------------------------


def _gelu(node: Node, inputs: list[Any], scope: Mapping[Value, Any]) -> list[Any]:
    x = np.asarray(inputs[0])
    t = x.astype(np.float64)
    if node.attrs.get("approximate", "none") == "tanh":
        y = 0.5 * t * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (t + 0.044715 * t**3)))
    else:
        # erf in x's own precision, as the decomposed graph (Div, Erf) computes it
        scaled = (t / math.sqrt(2.0)).astype(x.dtype)
        y = 0.5 * t * (1.0 + kernels.erf([scaled], {}, 0)[0].astype(np.float64))
    return [y.astype(x.dtype)]


def _infer_gelu(node: Node) -> Sequence[ValueType | None]:
    approximate = node.attrs.get("approximate", "none")
    if approximate not in ("none", "tanh"):
        raise ShapeInferenceError(f"lepton.Gelu node {node.name!r}: approximate={approximate!r}, "
                                  "expected 'none' or 'tanh'")  # fmt: skip
    return _same_as_first(node)


def _sigmoid(t: np.ndarray) -> np.ndarray:
    e = np.exp(-np.abs(t))  # never overflows
    return np.where(t >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _silu(node: Node, inputs: list[Any], scope: Mapping[Value, Any]) -> list[Any]:
    x = np.asarray(inputs[0])
    t = x.astype(np.float64)
    return [(t * _sigmoid(t)).astype(x.dtype)]


# -- normalization ------------------------------------------------------------------------------


def _rms_norm(node: Node, inputs: list[Any], scope: Mapping[Value, Any]) -> list[Any]:
    x, scale = np.asarray(inputs[0]), np.asarray(inputs[1])
    axis = int(node.attrs.get("axis", -1)) % x.ndim
    eps = float(node.attrs.get("epsilon", 1e-5))
    t = x.astype(_compute_dtype(x))
    ms = np.mean(t * t, axis=tuple(range(axis, x.ndim)), keepdims=True)
    return [(t / np.sqrt(ms + eps) * scale).astype(x.dtype)]


def _skip_layer_norm(node: Node, inputs: list[Any], scope: Mapping[Value, Any]) -> list[Any]:
    x, skip, gamma = (np.asarray(a) for a in inputs[:3])
    beta = inputs[3] if len(inputs) > 3 else None
    bias = inputs[4] if len(inputs) > 4 else None
    eps = float(node.attrs.get("epsilon", 1e-5))
    s = x + skip if bias is None else x + np.asarray(bias) + skip  # the exporter's order
    t = s.astype(_compute_dtype(s))
    mean = t.mean(axis=-1, keepdims=True)
    d = t - mean
    y = d / np.sqrt((d * d).mean(axis=-1, keepdims=True) + eps) * gamma
    if beta is not None:
        y = y + beta
    return [y.astype(x.dtype)]


def _infer_skip_layer_norm(node: Node) -> Sequence[ValueType | None]:
    x = _tensor(node.inputs[0])
    if x is None:
        return [None]
    others = [_tensor(v) for v in (node.inputs[1], *node.inputs[4:5]) if v is not None]
    shape = broadcast_shapes(x.shape, *(t.shape if t is not None else None for t in others))
    return [x.with_shape(shape)]


# -- attention and products ---------------------------------------------------------------------


def _softmax_last(s: np.ndarray) -> np.ndarray:
    e = np.exp(s - s.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _attention(node: Node, inputs: list[Any], scope: Mapping[Value, Any]) -> list[Any]:
    q, k, v = (np.asarray(a) for a in inputs[:3])
    mask = inputs[3] if len(inputs) > 3 else None
    ct = _compute_dtype(q)
    s = np.matmul(q.astype(ct), np.swapaxes(k.astype(ct), -1, -2)) * ct.type(node.attrs["scale"])
    if mask is not None:
        s = s + np.asarray(mask).astype(ct)
    return [np.matmul(_softmax_last(s), v.astype(ct)).astype(q.dtype)]


def _infer_attention(node: Node) -> Sequence[ValueType | None]:
    q, k, v = (_tensor(x) for x in node.inputs[:3])
    mask = _tensor(node.inputs[3]) if len(node.inputs) > 3 else None
    if q is None or q.shape is None or len(q.shape) < 2:
        return [None]
    tail: Shape = (q.shape[-2], None)
    batch: list[Shape | None] = [q.shape[:-2]]
    for t in (k, v):
        batch.append(t.shape[:-2] if t is not None and t.shape is not None else None)
    if v is not None and v.shape is not None and len(v.shape) >= 2:
        tail = (q.shape[-2], v.shape[-1])
    if mask is not None and mask.shape is not None:
        batch.append(mask.shape[:-2] if len(mask.shape) > 2 else ())
    lead = broadcast_shapes(*batch)
    return [q.with_shape(None if lead is None else (*lead, *tail))]


def _operand(x: np.ndarray, transpose: Any) -> np.ndarray:
    return np.swapaxes(x, -1, -2) if transpose else x


def _matmul_add(node: Node, inputs: list[Any], scope: Mapping[Value, Any]) -> list[Any]:
    a = _operand(np.asarray(inputs[0]), node.attrs.get("transA", 0))
    b = _operand(np.asarray(inputs[1]), node.attrs.get("transB", 0))
    y = np.matmul(a, b)
    if len(inputs) > 2 and inputs[2] is not None:
        y = y + np.asarray(inputs[2])
    return [y.astype(a.dtype)]


def _infer_matmul_add(node: Node) -> Sequence[ValueType | None]:
    a, b = _tensor(node.inputs[0]), _tensor(node.inputs[1])
    if a is None or b is None or a.shape is None or b.shape is None:
        return [None]
    if len(a.shape) < 2 or len(b.shape) < 2:
        raise ShapeInferenceError(f"lepton.MatMulAdd node {node.name!r} needs operands of rank "
                                  f">= 2, got ranks {len(a.shape)} and {len(b.shape)}")
    m = a.shape[-1] if node.attrs.get("transA", 0) else a.shape[-2]
    n = b.shape[-2] if node.attrs.get("transB", 0) else b.shape[-1]
    shape = broadcast_shapes(a.shape[:-2], b.shape[:-2])
    assert shape is not None
    out: Shape | None = (*shape, m, n)
    bias = _tensor(node.inputs[2]) if len(node.inputs) > 2 else None
    if bias is not None:
        out = broadcast_shapes(out, bias.shape)
    return [a.with_shape(out)]


# -- definitions --------------------------------------------------------------------------------

define("lepton.Gelu", category="elementwise", infer=_infer_gelu, reference=_gelu,
       defaults=lambda version: {"approximate": "none"},
       doc="GELU: 0.5·x·(1 + erf(x/√2)), or its tanh approximation (approximate='tanh').")
define("lepton.SiLU", category="elementwise", infer=_same_as_first, reference=_silu,
       doc="SiLU (Swish with beta = 1): x · sigmoid(x).")
define("lepton.RMSNorm", category="reduction", infer=_same_as_first, reference=_rms_norm,
       defaults=lambda version: {"axis": -1, "epsilon": 1e-5},
       doc="RMS normalization over the axes from `axis` on: x / sqrt(mean(x²) + ε) · scale.")
define("lepton.SkipLayerNorm", category="reduction", infer=_infer_skip_layer_norm,
       reference=_skip_layer_norm, defaults=lambda version: {"epsilon": 1e-5},
       doc="LayerNormalization over the last axis of x + skip (+ bias), then · gamma + beta.")
define("lepton.Attention", category="complex", infer=_infer_attention, reference=_attention,
       doc="Scaled dot-product attention on [..., s, d] heads: softmax(q·kᵀ·scale + mask)·v.")
define("lepton.MatMulAdd", category="complex", infer=_infer_matmul_add, reference=_matmul_add,
       defaults=lambda version: {"transA": 0, "transB": 0},
       doc="Batched matrix product with optional transposes and a bias epilogue.")
