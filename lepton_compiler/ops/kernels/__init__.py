"""Fast numpy kernels for the ops where `onnx.reference` is too slow for real models (or wrong):
convolution, pooling, matrix products, batch normalization.

Every kernel has the signature ``kernel(inputs, attrs, opset) -> outputs``: positional inputs
(None for an omitted optional input), attributes as plain Python values (absent ones take ONNX
defaults), and the model's ai.onnx opset. They import only numpy.
"""

from __future__ import annotations

from .conv import conv, conv_transpose
from .gemm import gemm, matmul
from .norm import batch_normalization
from .pool import average_pool, global_average_pool, global_max_pool, max_pool

__all__ = [
    "average_pool", "batch_normalization", "conv", "conv_transpose", "gemm",
    "global_average_pool", "global_max_pool", "matmul", "max_pool",
]  # fmt: skip
