"""Window geometry shared by the convolution and pooling kernels.

ONNX spells the same rules in Conv, MaxPool, AveragePool and friends: ``strides`` and
``dilations`` default to ones, ``auto_pad`` (NOTSET/SAME_UPPER/SAME_LOWER/VALID) overrides
``pads``, and the effective extent of a dilated kernel tap range is ``(k - 1) * d + 1``. Keeping
that arithmetic in one place keeps the kernels consistent with each other.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def ints(value: Any, default: Sequence[int]) -> list[int]:
    """An int-list attribute as a list, or ``default`` when absent or empty.

    Args:
        value: the attribute value (list, tuple, numpy array) or None.
        default: the ONNX default for the attribute.

    Returns:
        A fresh list of Python ints.
    """
    if value is None or len(value) == 0:
        return [int(v) for v in default]
    return [int(v) for v in value]


def auto_pad_of(attrs: Mapping[str, Any]) -> str:
    """The ``auto_pad`` attribute as a str (``"NOTSET"`` when absent or empty)."""
    value = attrs.get("auto_pad", "NOTSET")
    if isinstance(value, bytes):
        value = value.decode("utf-8")
    return str(value) or "NOTSET"


def window_attrs(
    attrs: Mapping[str, Any], kernel: Sequence[int]
) -> tuple[list[int], list[int], list[int]]:
    """Strides, dilations and effective (dilated) kernel extents.

    Args:
        attrs: the node attributes; absent ``strides``/``dilations`` default to ones.
        kernel: the kernel extent per spatial axis.

    Returns:
        ``(strides, dilations, effective)`` with ``effective[i] = (k[i] - 1) * d[i] + 1``.
    """
    ones = [1] * len(kernel)
    strides = ints(attrs.get("strides"), ones)
    dilations = ints(attrs.get("dilations"), ones)
    effective = [(k - 1) * d + 1 for k, d in zip(kernel, dilations, strict=True)]
    return strides, dilations, effective


def pads_for(
    auto_pad: str,
    in_shape: Sequence[int],
    eff_kernel: Sequence[int],
    strides: Sequence[int],
    pads: Sequence[int] | None,
) -> tuple[list[int], list[int]]:
    """Begin and end padding per spatial axis of a convolution or pooling window.

    SAME_UPPER and SAME_LOWER pad so that there are ``ceil(in / stride)`` outputs: the total
    padding is ``max(0, (out - 1) * stride + eff_kernel - in)``; an odd pixel goes to the end
    (SAME_UPPER) or to the beginning (SAME_LOWER). VALID pads nothing; NOTSET uses ``pads``
    (``[x1_begin, x2_begin, ..., x1_end, x2_end, ...]``, zeros when absent).

    Args:
        auto_pad: NOTSET, SAME_UPPER, SAME_LOWER or VALID.
        in_shape: the input extent per spatial axis.
        eff_kernel: the dilated kernel extent per spatial axis.
        strides: the stride per spatial axis.
        pads: the explicit ``pads`` attribute, or None.

    Returns:
        ``(begin, end)`` lists, one entry per spatial axis.
    """
    n = len(in_shape)
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        begin, end = [], []
        for size, k, s in zip(in_shape, eff_kernel, strides, strict=True):
            out = -(-size // s)
            total = max(0, (out - 1) * s + k - size)
            small, big = total // 2, total - total // 2
            begin.append(small if auto_pad == "SAME_UPPER" else big)
            end.append(big if auto_pad == "SAME_UPPER" else small)
        return begin, end
    if auto_pad == "VALID":
        return [0] * n, [0] * n
    if auto_pad != "NOTSET":
        raise ValueError(f"unknown auto_pad {auto_pad!r}")
    explicit = ints(pads, [0] * (2 * n))
    if len(explicit) != 2 * n:
        raise ValueError(f"pads {explicit} does not have 2 x {n} entries")
    return explicit[:n], explicit[n:]


def pad_spatial(
    x: np.ndarray, begin: Sequence[int], end: Sequence[int], value: Any = 0
) -> np.ndarray:
    """Pad the spatial axes (2 onwards) of ``x`` with ``value``; negative amounts crop.

    Returns ``x`` itself when there is nothing to do.
    """
    if not any(begin) and not any(end):
        return x
    lead = x.ndim - len(begin)
    grow = [(max(b, 0), max(e, 0)) for b, e in zip(begin, end, strict=True)]
    out = x
    if any(b or e for b, e in grow):
        out = np.pad(x, [(0, 0)] * lead + grow, mode="constant", constant_values=value)
    if min(*begin, *end) >= 0:
        return out
    crop = [slice(None)] * lead + [
        slice(-min(b, 0), out.shape[lead + i] + min(e, 0))
        for i, (b, e) in enumerate(zip(begin, end, strict=True))
    ]
    return out[tuple(crop)]


def tap_slices(
    tap: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
    out_shape: Sequence[int],
    lead: int = 2,
) -> tuple[slice, ...]:
    """Index of one kernel tap's input values for every output position.

    For a padded input ``xp`` (window ``o`` starts at ``o * stride``), ``xp[tap_slices(...)]`` has
    shape ``[*lead_dims, *out_shape]`` and holds ``xp[..., o * s + t * d]``.
    """
    return (slice(None),) * lead + tuple(
        slice(t * d, t * d + (o - 1) * s + 1, s)
        for t, d, o, s in zip(tap, dilations, out_shape, strides, strict=True)
    )
