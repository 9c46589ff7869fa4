"""The int8 quantization scheme as arithmetic: activation parameters from a real range, and
symmetric per-channel int8 weights with int32 biases.

``real = (q - zero_point) * scale`` throughout (ONNX's QuantizeLinear/DequantizeLinear).
Activations: uint8 asymmetric (``[0, 255]``, zero point chosen so that 0.0 is exact) or int8
symmetric (``[-127, 127]``, zero point 0; −128 is left unused so that ``-x`` never saturates).
Weights: int8 symmetric, ``[-127, 127]``, zero point 0, one scale per output channel.
Biases: int32 in units of ``activation scale × weight scale`` (the accumulator's units).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Integer grids by type: (qmin, qmax).
GRIDS = {"uint8": (0, 255), "int8": (-127, 127)}
#: Smallest scale used (a tensor that is all zeros still gets a valid, tiny scale).
MIN_SCALE = 1e-12


@dataclass(frozen=True)
class ActivationParams:
    """Per-tensor activation quantization: scale (float32) and zero point (uint8/int8)."""

    scale: np.float32
    zero_point: np.ndarray  # a 0-d array of the quantized dtype

    @property
    def dtype(self) -> np.dtype:
        """The quantized dtype."""
        return self.zero_point.dtype


def activation_params(lo: float, hi: float, dtype: str) -> ActivationParams:
    """Scale and zero point mapping the real range ``[lo, hi]`` onto the `dtype` grid.

    The range is first widened to hold 0.0, so that 0.0 (padding, ReLU's floor) is exactly
    representable. ``dtype="int8"`` is symmetric: ``scale = max(|lo|, |hi|) / 127``.
    """
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    qmin, qmax = GRIDS[dtype]
    if dtype == "int8":
        scale = max(abs(lo), abs(hi)) / qmax
        return ActivationParams(np.float32(max(scale, MIN_SCALE)), np.array(0, np.int8))
    scale = max((hi - lo) / (qmax - qmin), MIN_SCALE)
    zp = int(np.clip(np.rint(qmin - lo / scale), qmin, qmax))
    return ActivationParams(np.float32(scale), np.array(zp, np.uint8))


def quantize_weights(w: np.ndarray, axis: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 weights: ``(w_q, scale)`` with ``w ≈ w_q * scale``.

    Args:
        w: float weights.
        axis: the output-channel axis (one scale per channel), or None for one scale.

    Returns:
        ``w_q`` (int8, w's shape) and ``scale`` (float32, ``[w.shape[axis]]`` or a scalar).
    """
    w = np.asarray(w, dtype=np.float32)
    if axis is None:
        amax = np.abs(w).max(initial=0.0)
        scale = np.float32(max(amax / 127.0, MIN_SCALE))
        q = np.clip(np.rint(w / scale), -127, 127).astype(np.int8)
        return q, np.asarray(scale, np.float32)
    axis = axis % w.ndim
    moved = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)
    amax = np.abs(moved).max(axis=1, initial=0.0)
    scale = np.maximum(amax / 127.0, MIN_SCALE).astype(np.float32)
    shape = [1] * w.ndim
    shape[axis] = -1
    q = np.clip(np.rint(w / scale.reshape(shape)), -127, 127).astype(np.int8)
    return q, scale


def quantize_bias(
    b: np.ndarray, x_scale: np.float32, w_scale: np.ndarray
) -> tuple[np.ndarray, np.ndarray] | None:
    """int32 bias in accumulator units: ``(b_q, b_scale)`` with ``b_scale = x_scale *
    w_scale`` (float32, per channel), or None when a value would not fit in int32 (the bias
    then stays in float)."""
    b = np.asarray(b, dtype=np.float64).reshape(-1)
    scale = (np.float32(x_scale) * np.asarray(w_scale, np.float32).reshape(-1)).astype(np.float32)
    if scale.size == 1 and b.size > 1:
        scale = np.full(b.shape, scale[0], np.float32)
    q = np.rint(b / scale.astype(np.float64))
    if q.size and np.abs(q).max() > 2**31 - 1:
        return None
    return q.astype(np.int32), scale
