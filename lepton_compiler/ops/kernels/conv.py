"""Convolution and transposed convolution as im2col + one BLAS matmul per group.

Depthwise convolutions (one input channel per group) skip im2col and accumulate one strided
multiply-add per kernel tap instead; 1x1 convolutions with unit strides use the input as the
column matrix directly. float16 inputs accumulate in float32.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ._padding import resolve_pads, spatial_attrs


def _compute_dtype(dtype: np.dtype) -> np.dtype:
    return np.dtype(np.float32) if dtype == np.float16 else np.dtype(dtype)


def _pad(x: np.ndarray, begin: Sequence[int], end: Sequence[int], value: float = 0) -> np.ndarray:
    if not any(begin) and not any(end):
        return x
    width = [(0, 0), (0, 0), *[(max(b, 0), max(e, 0)) for b, e in zip(begin, end, strict=True)]]
    out = np.pad(x, width, constant_values=value)
    # Negative pads crop.
    crop = tuple(
        slice(None) if i < 2 else slice(-min(begin[i - 2], 0) or None,
                                        (min(end[i - 2], 0) or None))
        for i in range(x.ndim)
    )  # fmt: skip
    return out[crop]


def _windows(
    xp: np.ndarray,
    kernel: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
    out_shape: Sequence[int],
) -> np.ndarray:
    """View [N, C, *out, *kernel] of the padded input (no copy)."""
    nsp = len(kernel)
    eff = [(k - 1) * d + 1 for k, d in zip(kernel, dilations, strict=True)]
    win = sliding_window_view(xp, eff, axis=tuple(range(2, 2 + nsp)))
    index = (
        slice(None),
        slice(None),
        *[slice(0, (o - 1) * s + 1, s) for o, s in zip(out_shape, strides, strict=True)],
        *[slice(None, None, d) for d in dilations],
    )
    return win[index]


def conv(inputs: Sequence[np.ndarray | None], attrs: Mapping[str, Any], opset: int) -> list[np.ndarray]:
    """ONNX Conv: ``Y = conv(X, W) + B`` for 1-D, 2-D and 3-D inputs with groups."""
    x, w = inputs[0], inputs[1]
    b = inputs[2] if len(inputs) > 2 else None
    assert x is not None and w is not None
    dtype = x.dtype
    ct = _compute_dtype(dtype)
    x, w = x.astype(ct, copy=False), w.astype(ct, copy=False)
    kernel = list(attrs.get("kernel_shape") or w.shape[2:])
    strides, dilations, eff = spatial_attrs(attrs, kernel)
    group = int(attrs.get("group", 1))
    spatial = x.shape[2:]
    begin, end = resolve_pads(attrs, spatial, eff, strides)
    out_sp = [
        (size + pb + pe - k) // s + 1
        for size, pb, pe, k, s in zip(spatial, begin, end, eff, strides, strict=True)
    ]
    n, c = x.shape[:2]
    m = w.shape[0]
    cg, mg = c // group, m // group
    xp = _pad(x, begin, end)
    if cg == 1 and mg == 1 and group > 1:
        y = _depthwise(xp, w, kernel, strides, dilations, out_sp)
    elif all(k == 1 for k in kernel) and all(s == 1 for s in strides) and not any(begin + end):
        xs = x.reshape(n, group, cg, -1)
        wg = w.reshape(group, mg, cg)
        y = np.matmul(wg[None], xs).reshape(n, m, *out_sp)
    else:
        win = _windows(xp, kernel, strides, dilations, out_sp)  # [N, C, *O, *K]
        nsp = len(kernel)
        win = win.reshape(n, group, cg, *out_sp, *kernel)
        # -> [g, cg, *K, N, *O] -> [g, cg*K, N*O]
        perm = (1, 2, *range(3 + nsp, 3 + 2 * nsp), 0, *range(3, 3 + nsp))
        cols = np.ascontiguousarray(win.transpose(perm)).reshape(
            group, cg * int(np.prod(kernel)), n * int(np.prod(out_sp))
        )
        wg = w.reshape(group, mg, -1)
        y = np.matmul(wg, cols)  # [g, mg, N*O]
        y = y.reshape(group, mg, n, *out_sp)
        y = np.moveaxis(y, 2, 0).reshape(n, m, *out_sp)
    if b is not None:
        y = y + b.astype(ct).reshape(1, -1, *([1] * len(out_sp)))
    return [np.ascontiguousarray(y).astype(dtype, copy=False)]


def _depthwise(
    xp: np.ndarray,
    w: np.ndarray,
    kernel: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
    out_sp: Sequence[int],
) -> np.ndarray:
    n, c = xp.shape[:2]
    y = np.zeros((n, c, *out_sp), dtype=xp.dtype)
    for tap in np.ndindex(*kernel):
        index = (
            slice(None),
            slice(None),
            *[slice(t * d, t * d + (o - 1) * s + 1, s)
              for t, d, o, s in zip(tap, dilations, out_sp, strides, strict=True)],
        )  # fmt: skip
        wt = w[(slice(None), 0, *tap)].reshape(1, c, *([1] * len(out_sp)))
        y += xp[index] * wt
    return y


def conv_transpose(
    inputs: Sequence[np.ndarray | None], attrs: Mapping[str, Any], opset: int
) -> list[np.ndarray]:
    """ONNX ConvTranspose (1-D/2-D/3-D, groups, dilations, output_padding, output_shape)."""
    x, w = inputs[0], inputs[1]
    b = inputs[2] if len(inputs) > 2 else None
    assert x is not None and w is not None
    dtype = x.dtype
    ct = _compute_dtype(dtype)
    x, w = x.astype(ct, copy=False), w.astype(ct, copy=False)
    kernel = list(attrs.get("kernel_shape") or w.shape[2:])
    nsp = len(kernel)
    strides, dilations, eff = spatial_attrs(attrs, kernel)
    group = int(attrs.get("group", 1))
    out_pad = list(attrs.get("output_padding") or [0] * nsp)
    n, c = x.shape[:2]
    spatial = x.shape[2:]
    mg = w.shape[1]
    m = mg * group
    cg = c // group
    full = [s * (i - 1) + e + op for s, i, e, op in zip(strides, spatial, eff, out_pad, strict=True)]
    auto_pad = attrs.get("auto_pad", "NOTSET")
    out_shape = attrs.get("output_shape")
    if out_shape is not None and len(out_shape) > nsp:
        out_shape = list(out_shape)[-nsp:]
    if out_shape is None and auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        out_shape = [i * s for i, s in zip(spatial, strides, strict=True)]
    if out_shape is not None:
        begin, end = [], []
        for f, o in zip(full, out_shape, strict=True):
            total = f - o
            if auto_pad == "SAME_UPPER":
                begin.append(total // 2)
            else:
                begin.append(total - total // 2)
            end.append(total - begin[-1])
    else:
        pads = list(attrs.get("pads") or [0] * (2 * nsp))
        begin, end = pads[:nsp], pads[nsp:]
    # cols[g, mg, *K, N, *S] = sum_cg w[g, cg, mg, *K] * x[N, g, cg, *S]
    xg = x.reshape(n, group, cg, -1)  # [N, g, cg, S]
    wg = w.reshape(group, cg, mg * int(np.prod(kernel)))  # [g, cg, mg*K]
    cols = np.matmul(np.swapaxes(wg, 1, 2)[None], xg)  # [N, g, mg*K, S]
    cols = cols.reshape(n, group, mg, *kernel, *spatial)
    y = np.zeros((n, group, mg, *full), dtype=ct)
    for tap in np.ndindex(*kernel):
        index = (
            slice(None), slice(None), slice(None),
            *[slice(t * d, t * d + s * (i - 1) + 1, s)
              for t, d, s, i in zip(tap, dilations, strides, spatial, strict=True)],
        )  # fmt: skip
        y[index] += cols[(slice(None), slice(None), slice(None), *tap)]
    y = y.reshape(n, m, *full)
    y = _pad(y, [-p for p in begin], [-p for p in end])
    if b is not None:
        y = y + b.astype(ct).reshape(1, -1, *([1] * nsp))
    return [np.ascontiguousarray(y).astype(dtype, copy=False)]
