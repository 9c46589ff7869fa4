"""BatchNormalization in inference and training mode, for every opset (including the
``spatial`` attribute of opsets 6-7, which onnx.reference 1.23 gets wrong)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def batch_normalization(
    inputs: Sequence[np.ndarray | None], attrs: Mapping[str, Any], opset: int
) -> list[np.ndarray]:
    """ONNX BatchNormalization; returns [Y] or, in training mode, [Y, running_mean, running_var]."""
    x, scale, bias, mean, var = inputs[:5]
    assert x is not None and scale is not None and bias is not None
    assert mean is not None and var is not None
    dtype = x.dtype
    ct = np.float32 if dtype == np.float16 else dtype
    eps = float(attrs.get("epsilon", 1e-5))
    spatial = int(attrs.get("spatial", 1)) if opset < 9 else 1
    xf = x.astype(ct, copy=False)
    if spatial:
        shape = (1, -1, *([1] * (x.ndim - 2)))
    else:
        shape = (1, *x.shape[1:])
    training = bool(attrs.get("training_mode", 0)) if opset >= 14 else False
    if not training:
        inv = scale.astype(ct).reshape(shape) / np.sqrt(var.astype(ct).reshape(shape) + eps)
        y = (xf - mean.astype(ct).reshape(shape)) * inv + bias.astype(ct).reshape(shape)
        return [y.astype(dtype, copy=False)]
    axes = (0, *range(2, x.ndim))
    cur_mean = xf.mean(axis=axes)
    cur_var = xf.var(axis=axes)
    y = (xf - cur_mean.reshape(shape)) / np.sqrt(cur_var.reshape(shape) + eps)
    y = y * scale.astype(ct).reshape(shape) + bias.astype(ct).reshape(shape)
    momentum = float(attrs.get("momentum", 0.9))
    run_mean = mean * momentum + cur_mean.astype(mean.dtype) * (1 - momentum)
    run_var = var * momentum + cur_var.astype(var.dtype) * (1 - momentum)
    return [y.astype(dtype, copy=False), run_mean.astype(mean.dtype), run_var.astype(var.dtype)]
