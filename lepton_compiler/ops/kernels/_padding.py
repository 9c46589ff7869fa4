"""Padding arithmetic shared by convolution and pooling (ONNX ``auto_pad`` / ``pads`` rules)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any


def spatial_attrs(
    attrs: Mapping[str, Any], kernel: Sequence[int]
) -> tuple[list[int], list[int], list[int]]:
    """Strides, dilations and effective kernel extents (``(k - 1) * d + 1``)."""
    n = len(kernel)
    strides = list(attrs.get("strides") or [1] * n)
    dilations = list(attrs.get("dilations") or [1] * n)
    eff = [(k - 1) * d + 1 for k, d in zip(kernel, dilations, strict=True)]
    return strides, dilations, eff


def resolve_pads(
    attrs: Mapping[str, Any],
    in_shape: Sequence[int],
    eff_kernel: Sequence[int],
    strides: Sequence[int],
) -> tuple[list[int], list[int]]:
    """Begin and end padding per spatial axis for ``auto_pad`` / ``pads``.

    SAME_UPPER/SAME_LOWER aim at ``ceil(in / stride)`` outputs; the odd pixel of padding goes
    to the end (UPPER) or the beginning (LOWER). VALID pads nothing.
    """
    n = len(in_shape)
    auto_pad = attrs.get("auto_pad", "NOTSET")
    if isinstance(auto_pad, bytes):
        auto_pad = auto_pad.decode()
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        begin, end = [], []
        for size, k, s in zip(in_shape, eff_kernel, strides, strict=True):
            out = math.ceil(size / s)
            total = max(0, (out - 1) * s + k - size)
            small, big = total // 2, total - total // 2
            begin.append(small if auto_pad == "SAME_UPPER" else big)
            end.append(big if auto_pad == "SAME_UPPER" else small)
        return begin, end
    if auto_pad == "VALID":
        return [0] * n, [0] * n
    pads = list(attrs.get("pads") or [0] * (2 * n))
    return pads[:n], pads[n:]
