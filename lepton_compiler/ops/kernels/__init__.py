"""Fast numpy reference kernels for the ops where `onnx.reference` is too slow (or wrong).

Convolution, transposed convolution, pooling, matrix products and batch normalization dominate
the run time of real models; `onnx.reference` runs them in Python loops (and gets 3-D
GlobalMaxPool and BatchNormalization before opset 14 wrong). These kernels are the semantic
oracle of the compiler, so they implement the ONNX spec exactly for every attribute
combination, spending their time in BLAS (im2col + one matmul) and whole-array numpy ops.

Every kernel has the signature ``kernel(inputs, attrs, opset) -> outputs``:

* ``inputs``: the positional ONNX inputs, None for an omitted optional input;
* ``attrs``: attributes by name as plain Python values; absent ones take their ONNX defaults;
* ``opset``: the model's ai.onnx opset, for version-dependent semantics;

and returns the list of the op's outputs (MaxPool always returns ``[Y, Indices]``; the caller
drops what the node does not produce). ``batch_normalization`` also takes a keyword
``num_outputs``: before opset 14 the number of outputs a node has is what selects training
mode, which ``(inputs, attrs, opset)`` cannot tell. Output dtypes are ONNX's; float16 is
computed in float32. This package imports only numpy.
"""

from __future__ import annotations

from .conv import conv, conv_transpose
from .elementwise import erf
from .gemm import gemm, matmul
from .norm import batch_normalization
from .pool import average_pool, global_average_pool, global_max_pool, max_pool

__all__ = [
    "average_pool",
    "batch_normalization",
    "conv",
    "conv_transpose",
    "erf",
    "gemm",
    "global_average_pool",
    "global_max_pool",
    "matmul",
    "max_pool",
]
