"""ONNX MaxPool, AveragePool, GlobalAveragePool and GlobalMaxPool.

`onnx.reference` pools in Python loops (far too slow for real models) and gets several corners
wrong (GlobalMaxPool of anything but 4-D input, SAME_LOWER with strides, SAME or VALID with
dilations). These kernels loop over kernel taps only: each tap is one strided view of the
padded input covering every output position, reduced with one vectorized operation. Validity
(padding, the ceil-mode overhang) and the averaging divisor are separable per axis, so they are
computed on tiny per-axis tables.

Semantics follow the ONNX spec: SAME_UPPER/SAME_LOWER pad for the dilated kernel extent (ONNX
Runtime pads for the undilated one); with ``ceil_mode`` a window that would start in the end
padding is dropped; padding never takes part in a maximum; AveragePool counts explicit (or
SAME) padding only with ``count_include_pad`` and never counts the ceil-mode overhang; MaxPool
takes the first valid element of a window and replaces it only by a strictly greater one (ties
go to the first tap in row-major kernel order, as in onnx.reference and ONNX Runtime). VALID
is zero padding under the same output rule as NOTSET, ceil_mode included: that is what ONNX's
shape inference and ONNX Runtime compute (the doc's separate VALID ceil formula equals the floor
one, which would make ceil_mode a no-op there).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ._padding import auto_pad_of, pad_spatial, pads_for, tap_slices, window_attrs

__all__ = ["average_pool", "global_average_pool", "global_max_pool", "max_pool"]


class _Geometry:
    """Window geometry of one pooling node over one input shape."""

    def __init__(self, spatial: Sequence[int], attrs: Mapping[str, Any]) -> None:
        kernel = attrs.get("kernel_shape")
        if kernel is None or len(kernel) != len(spatial):
            raise ValueError(f"pooling needs kernel_shape for {len(spatial)} spatial axes")
        self.kernel = [int(k) for k in kernel]
        self.spatial = [int(s) for s in spatial]
        self.strides, self.dilations, self.eff = window_attrs(attrs, self.kernel)
        auto_pad = auto_pad_of(attrs)
        self.begin, self.end = pads_for(
            auto_pad, self.spatial, self.eff, self.strides, attrs.get("pads")
        )
        ceil = bool(attrs.get("ceil_mode", 0))
        self.out = []
        for size, pb, pe, k, s in zip(
            self.spatial, self.begin, self.end, self.eff, self.strides, strict=True
        ):
            span = size + pb + pe - k
            if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
                o = -(-size // s)
            elif ceil:
                o = -(-span // s) + 1
                if (o - 1) * s >= size + pb:  # the last window would start in the end padding
                    o -= 1
            else:
                o = span // s + 1
            if o <= 0:
                raise ValueError(f"pooling: empty output for input {list(spatial)}")
            self.out.append(o)

    def padded(self, x: np.ndarray, value: Any) -> np.ndarray:
        """``x`` padded so every window of every output position is in range."""
        need = [
            (o - 1) * s + k - size - pb
            for o, s, k, size, pb in zip(
                self.out, self.strides, self.eff, self.spatial, self.begin, strict=True
            )
        ]
        return pad_spatial(x, self.begin, [max(n, 0) for n in need], value)

    def positions(self, axis: int) -> np.ndarray:
        """Input coordinate ``[tap, out]`` of each tap of each window along ``axis``."""
        t = np.arange(self.kernel[axis]).reshape(-1, 1) * self.dilations[axis]
        o = np.arange(self.out[axis]).reshape(1, -1) * self.strides[axis]
        return o + t - self.begin[axis]

    def taps(self) -> list[tuple[int, ...]]:
        return list(np.ndindex(*self.kernel))

    def tap_index(self, tap: Sequence[int]) -> tuple[slice, ...]:
        return tap_slices(tap, self.strides, self.dilations, self.out)


def _lowest(dtype: np.dtype) -> Any:
    if dtype.kind in "iu":
        return np.iinfo(dtype).min
    return -np.inf


def max_pool(
    inputs: Sequence[np.ndarray | None], attrs: Mapping[str, Any], opset: int
) -> list[np.ndarray]:
    """ONNX MaxPool with its optional Indices output.

    Args:
        inputs: ``[X]``, X of shape ``[N, C, *spatial]`` (float16/32/64, int8, uint8).
        attrs: ``kernel_shape`` (required), ``auto_pad``, ``ceil_mode``, ``dilations``,
            ``pads``, ``storage_order``, ``strides``; absent ones take their ONNX defaults.
        opset: the model's ai.onnx opset (MaxPool's semantics are the same in every version).

    Returns:
        ``[Y, Indices]``: Y has X's dtype; Indices (int64) are flat indices into X, padding
        excluded, spatial coordinates row-major (``storage_order=0``) or column-major
        (``storage_order=1``) after ``(n * C + c) * prod(spatial)``. The caller drops Indices
        when the node does not produce it.
    """
    x = inputs[0]
    if x is None:
        raise ValueError("MaxPool needs X")
    geo = _Geometry(x.shape[2:], attrs)
    nsp = len(geo.kernel)
    lowest = _lowest(x.dtype)
    xp = geo.padded(x, lowest)
    # valid[axis][tap, out]: that tap of that window reads a real (unpadded) element.
    valid = []
    for axis in range(nsp):
        pos = geo.positions(axis)
        valid.append((pos >= 0) & (pos < geo.spatial[axis]))
    taps = geo.taps()
    masks = [_outer([valid[a][t] for a, t in enumerate(tap)]) for tap in taps]
    seen = np.logical_or.reduce(masks) if masks else np.ones((), dtype=bool)
    if x.dtype.kind == "f" and np.isnan(x).any():
        y, arg = _max_first_valid(xp, geo, masks)
    else:
        y, arg = _max_fast(xp, geo, masks)
    indices = _flat_indices(arg, geo, x.shape, attrs)
    if not seen.all():  # windows entirely in the padding (pads >= kernel extent)
        np.copyto(y, np.asarray(lowest, dtype=x.dtype), where=~seen)
        np.copyto(indices, -1, where=~seen)
    return [y, indices]


def _max_fast(
    xp: np.ndarray, geo: _Geometry, masks: Sequence[np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Maximum and winning tap when X has no NaN.

    One sweep over the taps: a tap wins where it is strictly greater than the running maximum
    (padding holds the lowest value, so it never wins that way) or where it is the window's
    first valid element. The winner is tracked with branch-free integer blends (``np.where`` and
    masked copies are several times slower), and each strided tap view is read only once.
    """
    taps = geo.taps()
    y = xp[geo.tap_index(taps[0])].copy()
    arg_type = np.int8 if len(taps) < 127 else np.int32
    arg = np.zeros(y.shape, dtype=arg_type)
    delta = np.empty_like(arg)
    v = np.empty_like(y)
    take = np.empty(y.shape, dtype=bool)
    seen = masks[0]
    for flat, tap in enumerate(taps[1:], start=1):
        np.copyto(v, xp[geo.tap_index(tap)])
        np.greater(v, y, out=take)
        if not seen.all():
            take |= masks[flat] & ~seen
            seen = seen | masks[flat]
        np.subtract(flat, arg, out=delta)
        delta *= take.view(np.int8)
        arg += delta
        np.maximum(y, v, out=y)
    return y, arg


def _max_first_valid(
    xp: np.ndarray, geo: _Geometry, masks: Sequence[np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Maximum and winning tap with onnx.reference's NaN behaviour: each window starts from its
    first valid element and takes a later one only when strictly greater (a NaN is kept when
    it comes first and skipped otherwise). Slower; used only when X has NaNs."""
    taps = geo.taps()
    y = xp[geo.tap_index(taps[0])].copy()
    arg = np.zeros(y.shape, dtype=np.int32)
    seen = masks[0]
    for flat, tap in enumerate(taps[1:], start=1):
        v = xp[geo.tap_index(tap)]
        take = v > y
        if not seen.all():
            take |= ~seen
        if not masks[flat].all():
            take &= masks[flat]
        np.copyto(y, v, where=take)
        np.copyto(arg, flat, where=take)
        seen = seen | masks[flat]
    return y, arg


def _outer(parts: Sequence[np.ndarray]) -> np.ndarray:
    """Outer AND of per-axis boolean vectors: shape ``[*len(parts[i])]``."""
    out = np.ones((), dtype=bool)
    for p in parts:
        out = out[..., None] & p
    return out


def _flat_indices(
    arg: np.ndarray, geo: _Geometry, x_shape: Sequence[int], attrs: Mapping[str, Any]
) -> np.ndarray:
    """Flat input indices of the maxima from the winning tap number ``arg`` of each window.

    index = (n * C + c) * prod(spatial) + sum_i (o_i * s_i + t_i * d_i - pad_i) * step_i, where
    ``step`` is the row-major (storage_order 0) or column-major (1) stride of spatial axis i;
    the tap part is a table lookup and the window part a small broadcast array.
    """
    nsp = len(geo.kernel)
    n, c = x_shape[:2]
    column_major = int(attrs.get("storage_order", 0)) == 1
    steps = [0] * nsp
    step = 1
    for axis in range(nsp) if column_major else reversed(range(nsp)):
        steps[axis] = step
        step *= geo.spatial[axis]
    tap_offset = np.zeros(geo.kernel, dtype=np.int64)
    window_offset = np.zeros(geo.out, dtype=np.int64)
    for axis in range(nsp):
        shape = [-1 if j == axis else 1 for j in range(nsp)]
        t = np.arange(geo.kernel[axis]) * geo.dilations[axis] * steps[axis]
        tap_offset = tap_offset + t.reshape(shape)
        o = (np.arange(geo.out[axis]) * geo.strides[axis] - geo.begin[axis]) * steps[axis]
        window_offset = window_offset + o.reshape(shape)
    index = tap_offset.reshape(-1)[arg]
    index += window_offset
    plane = (np.arange(n).reshape(-1, 1) * c + np.arange(c).reshape(1, -1)) * step
    index += plane.reshape(n, c, *([1] * nsp))
    return index


def average_pool(
    inputs: Sequence[np.ndarray | None], attrs: Mapping[str, Any], opset: int
) -> list[np.ndarray]:
    """ONNX AveragePool.

    The divisor of a window counts its real elements, plus its explicit (or SAME) padding when
    ``count_include_pad`` is set; the ceil-mode overhang past the end padding never counts.

    Args:
        inputs: ``[X]``, X of shape ``[N, C, *spatial]``.
        attrs: ``kernel_shape`` (required), ``auto_pad``, ``ceil_mode``,
            ``count_include_pad``, ``dilations``, ``pads``, ``strides``; absent ones take their
            ONNX defaults.
        opset: the model's ai.onnx opset (AveragePool's semantics are the same in every
            version that has a given attribute).

    Returns:
        ``[Y]`` with X's dtype (float16 is summed in float32).
    """
    x = inputs[0]
    if x is None:
        raise ValueError("AveragePool needs X")
    dtype = x.dtype
    ct = np.float32 if dtype.kind != "f" or dtype.itemsize < 4 else dtype
    geo = _Geometry(x.shape[2:], attrs)
    nsp = len(geo.kernel)
    xp = geo.padded(x.astype(ct, copy=False), 0)
    total = np.zeros((*x.shape[:2], *geo.out), dtype=ct)
    for tap in geo.taps():
        total += xp[geo.tap_index(tap)]
    include_pad = bool(attrs.get("count_include_pad", 0))
    counts = []
    for axis in range(nsp):
        pos = geo.positions(axis)
        lo, hi = 0, geo.spatial[axis]
        if include_pad:
            lo, hi = -geo.begin[axis], hi + geo.end[axis]
        counts.append(((pos >= lo) & (pos < hi)).sum(axis=0))
    count = np.ones((), dtype=np.int64)
    for part in counts:
        count = count[..., None] * part
    total /= np.maximum(count, 1).astype(ct)
    return [total.astype(dtype, copy=False)]


def global_average_pool(
    inputs: Sequence[np.ndarray | None], attrs: Mapping[str, Any], opset: int
) -> list[np.ndarray]:
    """ONNX GlobalAveragePool: the mean over every spatial axis, kept as size 1.

    Args:
        inputs: ``[X]``, X of shape ``[N, C, *spatial]`` (any number of spatial axes).
        attrs: none.
        opset: the model's ai.onnx opset.

    Returns:
        ``[Y]`` of shape ``[N, C, 1, ..., 1]`` and X's dtype (float16 averaged in float32).
    """
    x = inputs[0]
    if x is None:
        raise ValueError("GlobalAveragePool needs X")
    axes = tuple(range(2, x.ndim))
    acc = x.astype(np.float32) if x.dtype.kind == "f" and x.dtype.itemsize < 4 else x
    return [np.asarray(acc.mean(axis=axes, keepdims=True)).astype(x.dtype, copy=False)]


def global_max_pool(
    inputs: Sequence[np.ndarray | None], attrs: Mapping[str, Any], opset: int
) -> list[np.ndarray]:
    """ONNX GlobalMaxPool: the maximum over every spatial axis, kept as size 1.

    Works for any rank >= 3 (onnx.reference 1.23 mishandles 3-D inputs ``[N, C, L]``).

    Args:
        inputs: ``[X]``, X of shape ``[N, C, *spatial]``.
        attrs: none.
        opset: the model's ai.onnx opset.

    Returns:
        ``[Y]`` of shape ``[N, C, 1, ..., 1]`` and X's dtype.
    """
    x = inputs[0]
    if x is None:
        raise ValueError("GlobalMaxPool needs X")
    return [np.asarray(x.max(axis=tuple(range(2, x.ndim)), keepdims=True))]
