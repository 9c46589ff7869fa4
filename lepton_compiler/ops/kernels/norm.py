"""ONNX BatchNormalization for every opset, inference and training mode.

onnx.reference 1.23 is wrong before opset 14: at opsets 9-13 it normalizes with statistics
blended by ``momentum`` even in inference; at opsets 6-8 (``is_test`` absent or 0) it returns a
nested tuple and fails; it cannot do ``spatial=0`` (opsets 1-8) nor the five training outputs.
This kernel implements the spec of each version:

* opset >= 14: ``training_mode`` selects training, which outputs
  ``[Y, running_mean, running_var]``.
* opsets 1-13: training is selected by the number of outputs the node has (more than one);
  before opset 7 it also needs ``is_test == 0``. Training outputs
  ``[Y, running_mean, running_var, saved_mean, saved_var]`` where saved_mean is the batch mean
  and saved_var the batch's inverse standard deviation ``1 / sqrt(var + epsilon)`` (the Caffe2
  convention the op was defined from, and what ONNX Runtime computes).
* opsets 1-8: ``spatial=0`` normalizes per activation: scale, B, mean and var have shape
  ``[C, D1, ..., Dn]`` and training statistics are taken over the batch axis only.

Statistics are population statistics (divide by N), computed in float32 for float16 inputs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["batch_normalization"]


def batch_normalization(
    inputs: Sequence[np.ndarray | None],
    attrs: Mapping[str, Any],
    opset: int,
    *,
    num_outputs: int | None = None,
) -> list[np.ndarray]:
    """ONNX BatchNormalization.

    Args:
        inputs: ``[X, scale, B, mean, var]``; X is ``[N, C, *spatial]`` (or ``[N, C]``).
        attrs: ``epsilon`` (1e-5), ``momentum`` (0.9), ``training_mode`` (opset >= 14),
            ``spatial`` (opsets 1-8, default 1), ``is_test`` (opsets 1-6, default 0);
            ``consumed_inputs`` (opset 1) is ignored.
        opset: the model's ai.onnx opset.
        num_outputs: how many outputs the node has. Before opset 14 this is what selects
            training mode; when None (unknown) those opsets run in inference mode.

    Returns:
        ``[Y]`` in inference mode; ``[Y, running_mean, running_var]`` in training mode from
        opset 14; ``[Y, running_mean, running_var, saved_mean, saved_var]`` in training mode
        before it. Y has X's dtype; the statistics have ``mean``'s dtype.
    """
    if len(inputs) < 5 or any(v is None for v in inputs[:5]):
        raise ValueError("BatchNormalization needs X, scale, B, mean and var")
    x, scale, bias, mean, var = (np.asarray(v) for v in inputs[:5])
    dtype = x.dtype
    ct = np.result_type(np.float32, x.dtype, scale.dtype, bias.dtype, mean.dtype, var.dtype)
    eps = float(attrs.get("epsilon", 1e-5))
    momentum = float(attrs.get("momentum", 0.9))
    spatial = int(attrs.get("spatial", 1)) if opset < 9 else 1
    if opset >= 14:
        training = bool(int(attrs.get("training_mode", 0)))
    else:
        training = (num_outputs or 1) > 1 and (opset >= 7 or not int(attrs.get("is_test", 0)))

    # Parameters broadcast against X: [C] -> [C, 1, ..., 1]; per activation: [C, D1, ..., Dn].
    param_shape = (-1, *([1] * (x.ndim - 2))) if spatial else x.shape[1:]

    def param(v: np.ndarray) -> np.ndarray:
        return v.astype(ct, copy=False).reshape(param_shape)

    xf = x.astype(ct, copy=False)
    if not training:
        inv = param(scale) / np.sqrt(param(var) + ct.type(eps))
        shift = param(bias) - param(mean) * inv
        y = xf * inv
        y += shift
        return [y.astype(dtype, copy=False)]

    axes = (0, *range(2, x.ndim)) if spatial else (0,)
    cur_mean = xf.mean(axis=axes)
    centered = xf - cur_mean.reshape(param_shape)
    cur_var = np.mean(np.square(centered), axis=axes)
    inv_std = 1.0 / np.sqrt(cur_var + ct.type(eps))
    y = centered * (inv_std.reshape(param_shape) * param(scale))
    y += param(bias)
    stat = mean.dtype
    run_mean = mean.astype(ct) * ct.type(momentum) + cur_mean * ct.type(1.0 - momentum)
    run_var = var.astype(ct) * ct.type(momentum) + cur_var * ct.type(1.0 - momentum)
    outs = [y.astype(dtype, copy=False), run_mean.astype(stat), run_var.astype(stat)]
    if opset < 14:
        outs += [cur_mean.astype(stat), inv_std.astype(stat)]
    return outs
