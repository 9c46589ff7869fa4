"""MatMul and Gemm through numpy's BLAS-backed matmul."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def matmul(inputs: Sequence[np.ndarray | None], attrs: Mapping[str, Any], opset: int) -> list[np.ndarray]:
    """ONNX MatMul: numpy matmul semantics (1-D operands, broadcasting batch dims)."""
    a, b = inputs[0], inputs[1]
    assert a is not None and b is not None
    if _narrow_float(a.dtype):
        return [np.matmul(a.astype(np.float32), b.astype(np.float32)).astype(a.dtype)]
    return [np.matmul(a, b)]


def _narrow_float(dtype: np.dtype) -> bool:
    """float16, bfloat16 and the float8 types: accumulate those in float32."""
    return dtype.kind not in "iubc" and dtype not in (np.float32, np.float64)


def gemm(inputs: Sequence[np.ndarray | None], attrs: Mapping[str, Any], opset: int) -> list[np.ndarray]:
    """ONNX Gemm: ``alpha * A' @ B' + beta * C`` with optional transposes and broadcast C."""
    a, b = inputs[0], inputs[1]
    c = inputs[2] if len(inputs) > 2 else None
    assert a is not None and b is not None
    dtype = a.dtype
    if attrs.get("transA", 0):
        a = a.T
    if attrs.get("transB", 0):
        b = b.T
    ct = np.float32 if _narrow_float(dtype) else dtype
    y = np.matmul(a.astype(ct, copy=False), b.astype(ct, copy=False))
    alpha = attrs.get("alpha", 1.0)
    if alpha != 1.0:
        y = y * np.asarray(alpha, dtype=ct)
    if c is not None:
        beta = attrs.get("beta", 1.0)
        y = y + (c.astype(ct) if beta == 1.0 else c.astype(ct) * np.asarray(beta, dtype=ct))
    return [y.astype(dtype, copy=False)]
