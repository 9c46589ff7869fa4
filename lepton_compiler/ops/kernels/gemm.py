"""ONNX MatMul and Gemm through numpy's BLAS-backed matmul.

numpy's matmul already has ONNX MatMul's semantics (1-D operands promoted and the added axis
removed again, batch axes broadcast); these kernels add what numpy does not do by itself:
float16 (which numpy multiplies without BLAS) is computed in float32 and cast back, a batched
``[..., M, K] @ [K, N]`` becomes one large GEMM, and Gemm's ``alpha``/``beta``/``transA``/
``transB`` and its unidirectionally broadcast C follow the spec (``beta == 0`` ignores C, as
BLAS, onnx.reference and ONNX Runtime do).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["gemm", "matmul"]


def _narrow_float(dtype: np.dtype) -> bool:
    """Floating types narrower than float32 (float16, bfloat16, float8): computed in float32."""
    return (dtype.kind == "f" and dtype.itemsize < 4) or dtype.kind == "V"


def _product(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` with numpy semantics, one GEMM for a batched ``a`` against a matrix ``b``."""
    if a.ndim > 2 and b.ndim == 2:
        lead = a.shape[:-1]
        flat = np.matmul(a.reshape(math.prod(lead), a.shape[-1]), b)
        return flat.reshape(*lead, b.shape[-1])
    return np.asarray(np.matmul(a, b))


def matmul(
    inputs: Sequence[np.ndarray | None], attrs: Mapping[str, Any], opset: int
) -> list[np.ndarray]:
    """ONNX MatMul: ``numpy.matmul`` semantics (1-D operands, broadcast batch axes).

    Args:
        inputs: ``[A, B]`` of the same dtype (float16/32/64, int32/64, uint32/64).
        attrs: none.
        opset: the model's ai.onnx opset (MatMul's semantics are the same in every version).

    Returns:
        ``[Y]`` with A's dtype; a 1-D x 1-D product is a 0-d array.
    """
    a, b = inputs[0], inputs[1]
    if a is None or b is None:
        raise ValueError("MatMul needs A and B")
    dtype = a.dtype
    if _narrow_float(dtype):
        y = _product(a.astype(np.float32), b.astype(np.float32))
        return [y.astype(dtype)]
    return [_product(a, b).astype(dtype, copy=False)]


def gemm(
    inputs: Sequence[np.ndarray | None], attrs: Mapping[str, Any], opset: int
) -> list[np.ndarray]:
    """ONNX Gemm: ``Y = alpha * A' @ B' + beta * C``.

    Args:
        inputs: ``[A, B]`` or ``[A, B, C]`` (C is optional from opset 11; None when omitted).
            A is ``[M, K]`` (``[K, M]`` with transA), B is ``[K, N]`` (``[N, K]`` with transB),
            C broadcasts unidirectionally to ``[M, N]``.
        attrs: ``alpha`` (1.0), ``beta`` (1.0), ``transA`` (0), ``transB`` (0); opsets before
            7 also have ``broadcast``, which only allowed what numpy broadcasting does anyway.
        opset: the model's ai.onnx opset.

    Returns:
        ``[Y]`` of shape ``[M, N]`` and A's dtype. Integer Gemm multiplies exactly; a
        non-unit alpha or beta is applied in float64 and truncated back, as onnx.reference does.
    """
    a, b = inputs[0], inputs[1]
    c = inputs[2] if len(inputs) > 2 else None
    if a is None or b is None:
        raise ValueError("Gemm needs A and B")
    dtype = a.dtype
    alpha = float(attrs.get("alpha", 1.0))
    beta = float(attrs.get("beta", 1.0))
    if int(attrs.get("transA", 0)):
        a = a.T
    if int(attrs.get("transB", 0)):
        b = b.T
    if beta == 0.0:
        c = None
    if dtype.kind in "iu":
        y = np.matmul(a, b)
        if alpha == 1.0 and (c is None or beta == 1.0):
            if c is not None:
                y = y + c.astype(dtype, copy=False)
            return [y.astype(dtype, copy=False)]
        yf = y * alpha
        if c is not None:
            yf = yf + c * beta
        return [yf.astype(dtype)]
    ct = np.dtype(np.float32) if _narrow_float(dtype) else dtype
    y = np.matmul(a.astype(ct, copy=False), b.astype(ct, copy=False))
    if alpha != 1.0:
        y *= ct.type(alpha)
    if c is not None:
        cc = c.astype(ct, copy=False)
        if beta != 1.0:
            cc = cc * ct.type(beta)
        y += cc
    return [y.astype(dtype, copy=False)]
