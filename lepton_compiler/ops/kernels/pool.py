"""Max and average pooling (with ceil mode, dilations, padding rules and MaxPool indices) over
strided window views, plus global pooling for inputs of any rank."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ._padding import resolve_pads, spatial_attrs
from .conv import _pad, _windows


def _geometry(
    x: np.ndarray, attrs: Mapping[str, Any]
) -> tuple[list[int], list[int], list[int], list[int], list[int], list[int]]:
    """Kernel, strides, dilations, begin pads, end pads (ceil overhang included), outputs."""
    kernel = list(attrs["kernel_shape"])
    strides, dilations, eff = spatial_attrs(attrs, kernel)
    spatial = x.shape[2:]
    begin, end = resolve_pads(attrs, spatial, eff, strides)
    ceil = bool(attrs.get("ceil_mode", 0))
    auto_pad = attrs.get("auto_pad", "NOTSET")
    out = []
    for size, pb, pe, k, s in zip(spatial, begin, end, eff, strides, strict=True):
        span = size + pb + pe - k
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            o = math.ceil(size / s)
        elif ceil:
            o = math.ceil(span / s) + 1
            if (o - 1) * s >= size + pb:  # the last window would start in the end padding
                o -= 1
        else:
            o = span // s + 1
        out.append(o)
    ends = [
        (o - 1) * s + k - size - pb
        for o, s, k, size, pb in zip(out, strides, eff, spatial, begin, strict=True)
    ]
    return kernel, strides, dilations, begin, ends, out


def _lowest(dtype: np.dtype) -> Any:
    if np.issubdtype(dtype, np.integer):
        return np.iinfo(dtype).min
    return -np.inf


def max_pool(inputs: Sequence[np.ndarray | None], attrs: Mapping[str, Any], opset: int) -> list[np.ndarray]:
    """ONNX MaxPool; returns [Y, Indices] (flat indices, column-major if storage_order=1)."""
    x = inputs[0]
    assert x is not None
    kernel, strides, dilations, begin, end, out = _geometry(x, attrs)
    xp = _pad(x, begin, end, _lowest(x.dtype))
    win = _windows(xp, kernel, strides, dilations, out)  # [N, C, *O, *K]
    nsp = len(kernel)
    flat = win.reshape(*win.shape[: 2 + nsp], -1)
    arg = np.argmax(flat, axis=-1)
    y = np.take_along_axis(flat, arg[..., None], axis=-1)[..., 0]
    # Input coordinates of each maximum.
    taps = np.unravel_index(arg, kernel)
    n, c = x.shape[:2]
    spatial = x.shape[2:]
    storage = int(attrs.get("storage_order", 0))
    index = np.zeros(arg.shape, dtype=np.int64)
    stride_c = 1
    order = range(nsp) if storage else reversed(range(nsp))
    for i in order:
        grid = np.arange(out[i]).reshape([-1 if j == i else 1 for j in range(nsp)])
        coord = grid * strides[i] + taps[i] * dilations[i] - begin[i]
        index += coord * stride_c
        stride_c *= spatial[i]
    plane = int(np.prod(spatial))
    base = (np.arange(n).reshape(-1, 1) * c + np.arange(c).reshape(1, -1)) * plane
    index += base.reshape(n, c, *([1] * nsp))
    return [np.ascontiguousarray(y), index]


def average_pool(
    inputs: Sequence[np.ndarray | None], attrs: Mapping[str, Any], opset: int
) -> list[np.ndarray]:
    """ONNX AveragePool (count_include_pad, ceil_mode, dilations, auto_pad)."""
    x = inputs[0]
    assert x is not None
    dtype = x.dtype
    xf = x.astype(np.float32) if dtype == np.float16 else x
    kernel, strides, dilations, begin, end, out = _geometry(x, attrs)
    explicit_end = resolve_pads(attrs, x.shape[2:], spatial_attrs(attrs, kernel)[2], strides)[1]
    xp = _pad(xf, begin, end, 0)
    nsp = len(kernel)
    axes = tuple(range(-nsp, 0))
    total = _windows(xp, kernel, strides, dilations, out).sum(axis=axes)
    ones = np.ones((1, 1, *x.shape[2:]), dtype=xf.dtype)
    if attrs.get("count_include_pad", 0):
        # Explicit padding counts; the ceil-mode overhang beyond it does not.
        mask = _pad(ones, begin, [min(e, pe) for e, pe in zip(end, explicit_end, strict=True)], 1)
        mask = _pad(mask, [0] * nsp, [e - min(e, pe) for e, pe in
                                      zip(end, explicit_end, strict=True)], 0)  # fmt: skip
    else:
        mask = _pad(ones, begin, end, 0)
    count = _windows(mask, kernel, strides, dilations, out).sum(axis=axes)
    y = total / np.maximum(count, 1)
    return [np.ascontiguousarray(y).astype(dtype, copy=False)]


def global_average_pool(
    inputs: Sequence[np.ndarray | None], attrs: Mapping[str, Any], opset: int
) -> list[np.ndarray]:
    """ONNX GlobalAveragePool: mean over every spatial axis, kept as size 1."""
    x = inputs[0]
    assert x is not None
    axes = tuple(range(2, x.ndim))
    acc = x.astype(np.float32) if x.dtype == np.float16 else x
    return [acc.mean(axis=axes, keepdims=True).astype(x.dtype, copy=False)]


def global_max_pool(
    inputs: Sequence[np.ndarray | None], attrs: Mapping[str, Any], opset: int
) -> list[np.ndarray]:
    """ONNX GlobalMaxPool: max over every spatial axis (any rank >= 3), kept as size 1."""
    x = inputs[0]
    assert x is not None
    return [x.max(axis=tuple(range(2, x.ndim)), keepdims=True)]
