"""Neural-network ops: convolution, pooling, normalization, activations.

Conv, ConvTranspose, pooling and BatchNormalization use our BLAS-backed kernels (onnx.reference
is far too slow for real models and wrong for BatchNormalization before opset 14 and
GlobalMaxPool on 3-D input).
"""

from __future__ import annotations

from . import kernels
from ._kernel_adapter import adapt
from .registry import override

override("Conv", category="complex", reference=adapt(kernels.conv))
override("ConvTranspose", category="complex", reference=adapt(kernels.conv_transpose))
override("MaxPool", category="complex", reference=adapt(kernels.max_pool))
override("AveragePool", category="complex", reference=adapt(kernels.average_pool))
override("GlobalAveragePool", category="reduction", reference=adapt(kernels.global_average_pool))
override("GlobalMaxPool", category="reduction", reference=adapt(kernels.global_max_pool))
override("BatchNormalization", category="broadcast",
         reference=adapt(kernels.batch_normalization, pass_num_outputs=True))  # fmt: skip

for _op in ("LRN", "InstanceNormalization", "LayerNormalization", "GroupNormalization",
            "RMSNormalization", "LpNormalization", "MeanVarianceNormalization", "Softmax",
            "LogSoftmax", "Hardmax"):  # fmt: skip
    override(_op, category="reduction")

for _op in ("Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "Gelu", "Sigmoid",
            "HardSigmoid", "HardSwish", "Softplus", "Softsign", "ThresholdedRelu", "Mish",
            "Swish", "Shrink", "Dropout"):  # fmt: skip
    override(_op, category="elementwise")
