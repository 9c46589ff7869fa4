"""Two small models for fast end-to-end tests: an MLP and a CIFAR-sized CNN.

They reproduce no particular published network; they exist so that tests and quick
benchmarks can exercise the common op mix (MatMul/Gemm, Conv, BatchNormalization, Relu,
pooling) in milliseconds. Random He-initialised weights, BatchNorm statistics calibrated on
a random batch.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import onnx

from ._builder import FLOAT, GraphBuilder, batch_dim


def mlp(
    batch: int | str = 1, sizes: Sequence[int] = (784, 256, 128, 10), seed: int = 0
) -> onnx.ModelProto:
    """A multi-layer perceptron: ``MatMul + Add + Relu`` per hidden layer, no Relu at the end.

    Args:
        batch: the batch size, or a symbolic dim name.
        sizes: the input size, the hidden sizes and the output size (at least two numbers).
        seed: seed of the weight generator.

    Returns:
        A model with input ``input`` ``[batch, sizes[0]]`` and output ``logits``
        ``[batch, sizes[-1]]``, both float32.

    Raises:
        ValueError: fewer than two sizes.
    """
    if len(sizes) < 2:
        raise ValueError(f"mlp needs at least an input and an output size, got {sizes!r}")
    n = batch_dim(batch)
    b = GraphBuilder("mlp", seed=seed)
    x = b.input("input", FLOAT, [n, sizes[0]])
    for i, (k, m) in enumerate(itertools.pairwise(sizes)):
        x = b.linear(x, k, m, prefix=f"fc{i + 1}")
        if i < len(sizes) - 2:
            x = b.relu(x, prefix=f"relu{i + 1}")
    b.output(x, "logits", FLOAT, [n, sizes[-1]])
    return b.model(doc=f"MLP {'-'.join(map(str, sizes))}, random weights")


def small_cnn(batch: int | str = 1, num_classes: int = 10, seed: int = 0) -> onnx.ModelProto:
    """A small CNN on 32x32 RGB images: three Conv+BN+Relu stages, two MaxPools, a Gemm head.

    Layers: conv 3→16 3x3, BN, Relu, MaxPool 2 → conv 16→32 3x3, BN, Relu, MaxPool 2 →
    conv 32→64 3x3 stride 2 with bias, BN, Relu → GlobalAveragePool, Flatten, Gemm 64→classes.

    Args:
        batch: the batch size, or a symbolic dim name.
        num_classes: size of the output.
        seed: seed of the weight generator.

    Returns:
        A model with input ``input`` ``[batch, 3, 32, 32]`` and output ``logits``
        ``[batch, num_classes]``, both float32.
    """
    n = batch_dim(batch)
    b = GraphBuilder("small_cnn", seed=seed)
    x = b.input("input", FLOAT, [n, 3, 32, 32], calibration_shape=(4, 3, 32, 32))
    x = b.relu(b.bn(b.conv(x, 3, 16, 3, pad=1, prefix="conv1"), 16, prefix="bn1"), prefix="relu1")
    x = b.maxpool(x, 2, 2, prefix="pool1")
    x = b.relu(b.bn(b.conv(x, 16, 32, 3, pad=1, prefix="conv2"), 32, prefix="bn2"), prefix="relu2")
    x = b.maxpool(x, 2, 2, prefix="pool2")
    x = b.conv(x, 32, 64, 3, stride=2, pad=1, bias=True, prefix="conv3")
    x = b.relu(b.bn(x, 64, prefix="bn3"), prefix="relu3")
    x = b.flatten(b.global_avgpool(x, prefix="avgpool"), prefix="flatten")
    x = b.gemm(x, 64, num_classes, prefix="fc")
    b.output(x, "logits", FLOAT, [n, num_classes])
    return b.model(doc="small CNN for 32x32 images, random weights")
