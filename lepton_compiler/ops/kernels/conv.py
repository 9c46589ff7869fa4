"""ONNX Conv and ConvTranspose as im2col / col2im around one BLAS matmul.

`onnx.reference` loops in Python and is far too slow for real models; these kernels stay exact
(the oracle of the compiler) while spending their time in BLAS:

* Conv gathers the input under every kernel tap into a column matrix (one strided copy per
  tap, never a loop over output pixels) and multiplies it by the weights in one batched matmul
  over ``(batch, group)``. 1x1 kernels skip the gather; depthwise convolutions (one input
  channel per group) skip the matmul and accumulate one vectorized multiply-add per tap.
* ConvTranspose multiplies first (weights^T @ input, per group) and scatters the products back
  with one strided add per tap (col2im), then crops or zero-extends to the requested shape.

float16 inputs are computed in float32 and cast back; float32 and float64 keep their dtype.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ._padding import auto_pad_of, ints, pad_spatial, pads_for, tap_slices, window_attrs

__all__ = ["conv", "conv_transpose"]


def _compute_dtype(*arrays: np.ndarray | None) -> np.dtype:
    """float32 for float16 (and narrower) inputs, else the common float type."""
    dtype = np.result_type(*[a.dtype for a in arrays if a is not None])
    if dtype.kind != "f" or dtype.itemsize < 4:
        return np.dtype(np.float32)
    return dtype


def _prod(values: Sequence[int]) -> int:
    return math.prod(int(v) for v in values)


def _unpack(
    op: str, inputs: Sequence[np.ndarray | None], attrs: Mapping[str, Any]
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.dtype, np.dtype, list[int], int]:
    """X and W in the compute dtype, the optional bias, X's dtype, the compute dtype, the
    kernel shape (from W) and the group count; checks the ranks."""
    x, w = inputs[0], inputs[1]
    b = inputs[2] if len(inputs) > 2 else None
    if x is None or w is None:
        raise ValueError(f"{op} needs X and W")
    dtype = x.dtype
    ct = _compute_dtype(x, w)
    x = x.astype(ct, copy=False)
    w = w.astype(ct, copy=False)
    kernel = list(w.shape[2:])
    if x.ndim != len(kernel) + 2:
        raise ValueError(f"{op}: X has rank {x.ndim}, W has rank {w.ndim}")
    return x, w, b, dtype, ct, kernel, int(attrs.get("group", 1) or 1)


def conv(
    inputs: Sequence[np.ndarray | None], attrs: Mapping[str, Any], opset: int
) -> list[np.ndarray]:
    """ONNX Conv: ``Y = conv(X, W) + B`` over 1, 2 or 3 (or more) spatial axes.

    Args:
        inputs: ``[X, W]`` or ``[X, W, B]``: X is ``[N, C, *spatial]``, W is
            ``[M, C / group, *kernel]``, the optional B is ``[M]``.
        attrs: ``auto_pad``, ``dilations``, ``group``, ``kernel_shape`` (W's shape is used),
            ``pads``, ``strides``; absent ones take their ONNX defaults.
        opset: the model's ai.onnx opset (Conv's semantics are the same in every version).

    Returns:
        ``[Y]`` with Y of shape ``[N, M, *out]`` and X's dtype.
    """
    x, w, b, dtype, ct, kernel, group = _unpack("Conv", inputs, attrs)
    nsp = len(kernel)
    n, c = x.shape[:2]
    m = w.shape[0]
    if c != w.shape[1] * group or m % group:
        raise ValueError(f"Conv: X {x.shape} and W {w.shape} do not fit group={group}")
    cg, mg = c // group, m // group
    strides, dilations, eff = window_attrs(attrs, kernel)
    spatial = list(x.shape[2:])
    begin, end = pads_for(auto_pad_of(attrs), spatial, eff, strides, attrs.get("pads"))
    out = [
        (size + pb + pe - k) // s + 1
        for size, pb, pe, k, s in zip(spatial, begin, end, eff, strides, strict=True)
    ]
    if min(out, default=1) <= 0:
        raise ValueError(f"Conv: empty output {out} for input {spatial}")

    if cg == 1 and group > 1:
        y = _grouped_taps(x, w, group, mg, begin, end, kernel, strides, dilations, out)
    elif all(k == 1 for k in kernel) and not any(begin) and not any(end):
        # 1x1: the (strided) input already is the column matrix.
        xs = x[(slice(None), slice(None), *[slice(0, None, s) for s in strides])]
        y = np.matmul(w.reshape(group, mg, cg), xs.reshape(n, group, cg, _prod(out)))
    else:
        y = _im2col_matmul(pad_spatial(x, begin, end), w, group, strides, dilations, out)
    y = y.reshape(n, m, *out)
    if b is not None:
        y += b.astype(ct, copy=False).reshape(m, *([1] * nsp))
    return [y.astype(dtype, copy=False)]


# Column matrices are built for a few images at a time: one image's worth stays in cache far
# better than a whole batch's (twice as fast at batch 8 on ResNet-sized layers).
_COLS_BUDGET_BYTES = 8 << 20


def _im2col_matmul(
    xp: np.ndarray,
    w: np.ndarray,
    group: int,
    strides: Sequence[int],
    dilations: Sequence[int],
    out: Sequence[int],
) -> np.ndarray:
    """``W @ im2col(xp)`` per group, a chunk of images at a time: ``[N, g, mg, O]``."""
    n, c = xp.shape[:2]
    m, kernel = w.shape[0], w.shape[2:]
    wg = w.reshape(group, m // group, -1)
    per_image = c * _prod(kernel) * _prod(out) * xp.dtype.itemsize
    chunk = max(1, _COLS_BUDGET_BYTES // max(per_image, 1))
    if chunk >= n:
        return np.matmul(wg, _im2col(xp, kernel, strides, dilations, out, group))
    y = np.empty((n, group, m // group, _prod(out)), dtype=xp.dtype)
    for start in range(0, n, chunk):
        part = slice(start, start + chunk)
        np.matmul(wg, _im2col(xp[part], kernel, strides, dilations, out, group), out=y[part])
    return y


def _im2col(
    xp: np.ndarray,
    kernel: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
    out: Sequence[int],
    group: int,
) -> np.ndarray:
    """Column matrix ``[N, g, cg * K, O]`` of the padded input ``xp``.

    ``cols[n, g, (c, k), o] = xp[n, g * cg + c, o * s + k * d]``: one strided copy per tap.
    """
    n, c = xp.shape[:2]
    cols = np.empty((n, c, *kernel, *out), dtype=xp.dtype)
    for tap in np.ndindex(*kernel):
        cols[(slice(None), slice(None), *tap)] = xp[tap_slices(tap, strides, dilations, out)]
    return cols.reshape(n, group, (c // group) * _prod(kernel), _prod(out))


def _grouped_taps(
    x: np.ndarray,
    w: np.ndarray,
    group: int,
    mg: int,
    begin: Sequence[int],
    end: Sequence[int],
    kernel: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
    out: Sequence[int],
) -> np.ndarray:
    """One input channel per group (depthwise, channel multiplier ``mg``): one axpy per tap.

    Returns ``[N, g, mg, *out]``.
    """
    n = x.shape[0]
    nsp = len(kernel)
    xp = pad_spatial(x, begin, end)
    xp = xp.reshape(n, group, 1, *xp.shape[2:])
    wt = w.reshape(group, mg, *kernel)
    y = np.zeros((n, group, mg, *out), dtype=x.dtype)
    tmp = np.empty_like(y)
    lift = (1,) * nsp
    for tap in np.ndindex(*kernel):
        src = xp[tap_slices(tap, strides, dilations, out, lead=3)]
        np.multiply(src, wt[(slice(None), slice(None), *tap)].reshape(group, mg, *lift), out=tmp)
        y += tmp
    return y


def conv_transpose(
    inputs: Sequence[np.ndarray | None], attrs: Mapping[str, Any], opset: int
) -> list[np.ndarray]:
    """ONNX ConvTranspose (the gradient of Conv with respect to its input).

    The full output has ``stride * (in - 1) + output_padding + (k - 1) * dilation + 1`` pixels
    per axis; ``pads`` crop it. ``output_shape`` (or SAME_UPPER/SAME_LOWER, which mean
    ``output_shape = in * stride``) replaces ``pads`` by the spec's split of
    ``total = full - output_shape``: SAME_UPPER crops ``total // 2`` at the beginning, every
    other mode ``total - total // 2`` (floor division, so a negative total, a requested shape
    beyond the full output, appends zeros the same way; this is also what onnx.reference does).
    The opset 1-10 schema text states the split the other way round, contradicting its own
    ``auto_pad`` description; onnx.reference and ONNX Runtime use the rule above for every
    opset, and so does this kernel. Two SAME corners where ONNX's own shape inference departs
    from the spec text: with ``output_padding`` it infers ``in * stride + output_padding``
    (spec, onnx.reference and ONNX Runtime: ``in * stride``), and with a dilated kernel extent
    below the stride it clamps to the full output (as ONNX Runtime does; spec and
    onnx.reference: ``in * stride``). This kernel follows the spec text in both.

    Args:
        inputs: ``[X, W]`` or ``[X, W, B]``: X is ``[N, C, *spatial]``, W is
            ``[C, M / group, *kernel]``, the optional B is ``[M]``.
        attrs: ``auto_pad``, ``dilations``, ``group``, ``kernel_shape``, ``output_padding``,
            ``output_shape``, ``pads``, ``strides``; absent ones take their ONNX defaults.
        opset: the model's ai.onnx opset (ConvTranspose's semantics are the same in every
            version).

    Returns:
        ``[Y]`` with Y of shape ``[N, M, *out]`` and X's dtype.
    """
    x, w, b, dtype, ct, kernel, group = _unpack("ConvTranspose", inputs, attrs)
    nsp = len(kernel)
    n, c = x.shape[:2]
    if c != w.shape[0] or c % group:
        raise ValueError(f"ConvTranspose: X {x.shape} and W {w.shape} do not fit group={group}")
    cg, mg = c // group, w.shape[1]
    m = mg * group
    spatial = list(x.shape[2:])
    strides, dilations, eff = window_attrs(attrs, kernel)
    out_pad = ints(attrs.get("output_padding"), [0] * nsp)
    full = [
        s * (i - 1) + e + op for s, i, e, op in zip(strides, spatial, eff, out_pad, strict=True)
    ]
    begin, end = _transpose_pads(attrs, spatial, strides, full)

    # cols[n, g, (mg, K), S] = sum_c W[g * cg + c, mg, K] * X[n, g * cg + c, S]
    wt = np.swapaxes(w.reshape(group, cg, mg * _prod(kernel)), 1, 2)
    cols = np.matmul(wt, x.reshape(n, group, cg, _prod(spatial)))
    cols = cols.reshape(n * group * mg, *kernel, *spatial)
    y = np.zeros((n * group * mg, *full), dtype=ct)
    for tap in np.ndindex(*kernel):
        y[tap_slices(tap, strides, dilations, spatial, lead=1)] += cols[(slice(None), *tap)]
    y = pad_spatial(y.reshape(n, m, *full), [-p for p in begin], [-p for p in end])
    if b is not None:
        y = y + b.astype(ct, copy=False).reshape(m, *([1] * nsp))
    return [np.ascontiguousarray(y, dtype=dtype)]


def _transpose_pads(
    attrs: Mapping[str, Any],
    spatial: Sequence[int],
    strides: Sequence[int],
    full: Sequence[int],
) -> tuple[list[int], list[int]]:
    """Begin/end crop of ConvTranspose's full output (negative: zeros added)."""
    nsp = len(spatial)
    auto_pad = auto_pad_of(attrs)
    shape = attrs.get("output_shape")
    target: list[int] | None = None
    if shape is not None and len(shape) > 0:
        target = [int(v) for v in shape][-nsp:]  # old exporters also wrote N and C
    elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        target = [i * s for i, s in zip(spatial, strides, strict=True)]
    if target is None:
        if auto_pad == "VALID":
            return [0] * nsp, [0] * nsp
        pads = ints(attrs.get("pads"), [0] * (2 * nsp))
        return pads[:nsp], pads[nsp:]
    begin, end = [], []
    for f, t in zip(full, target, strict=True):
        total = f - t
        begin.append(total // 2 if auto_pad == "SAME_UPPER" else total - total // 2)
        end.append(total - begin[-1])
    return begin, end
