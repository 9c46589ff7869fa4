"""MobileNetV2 (torchvision's ``mobilenet_v2``, width 1.0) built as ONNX with random weights.

The topology is torchvision's, as ``torch.onnx.export`` writes it in eval mode without BN
folding: a 3x3/2 stem, 17 inverted-residual blocks (1x1 expansion by 6, 3x3 depthwise
convolution with ``group = channels``, linear 1x1 projection, residual Add where the stride is
1 and the channel count is unchanged), a 1x1 convolution to 1280 channels,
GlobalAveragePool + Flatten + Gemm. ReLU6 is ``Clip(x, 0, 6)`` with min/max inputs, as
exported since opset 11. 52 Conv (17 of them depthwise) and 52 BatchNormalization nodes;
the classifier's Dropout disappears in eval mode. It is the project's depthwise-convolution
benchmark.

Differences from the real model: random weights (He-initialised, BatchNorm statistics
calibrated on a random batch), so the logits mean nothing.
"""

from __future__ import annotations

import onnx

from ._builder import FLOAT, GraphBuilder, batch_dim

#: torchvision's inverted-residual settings: expansion t, output channels c, repeats n, stride s.
SETTINGS = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
LAST_CHANNELS = 1280


def _conv_bn(
    b: GraphBuilder,
    x: str,
    cin: int,
    cout: int,
    k: int,
    stride: int,
    group: int,
    prefix: str,
    act: bool = True,
    gamma: float = 1.0,
) -> str:
    """torchvision's ``Conv2dNormActivation``: Conv (no bias) + BN (+ ReLU6)."""
    y = b.conv(x, cin, cout, k, stride=stride, pad=(k - 1) // 2, group=group, prefix=f"{prefix}.0")
    y = b.bn(y, cout, gamma=gamma, prefix=f"{prefix}.1")
    return b.relu6(y, prefix=f"{prefix}.2") if act else y


def _inverted_residual(
    b: GraphBuilder, x: str, cin: int, cout: int, stride: int, t: int, prefix: str
) -> str:
    hidden = cin * t
    use_residual = stride == 1 and cin == cout
    y, i = x, 0
    if t != 1:
        y = _conv_bn(b, y, cin, hidden, 1, 1, 1, f"{prefix}.conv.{i}")
        i += 1
    y = _conv_bn(b, y, hidden, hidden, 3, stride, hidden, f"{prefix}.conv.{i}")
    y = b.conv(y, hidden, cout, 1, prefix=f"{prefix}.conv.{i + 1}")
    y = b.bn(y, cout, gamma=0.5 if use_residual else 1.0, prefix=f"{prefix}.conv.{i + 2}")
    return b.add(x, y, prefix=f"{prefix}.add") if use_residual else y


def mobilenetv2(batch: int | str = 1, num_classes: int = 1000, seed: int = 0) -> onnx.ModelProto:
    """Build MobileNetV2 (width multiplier 1.0) with random weights.

    Args:
        batch: the batch size, or a symbolic dim name such as ``"batch"``.
        num_classes: size of the classifier output.
        seed: seed of the weight generator (the same seed gives the same model).

    Returns:
        A model with input ``input`` ``[batch, 3, 224, 224]`` float32 and output ``logits``
        ``[batch, num_classes]``; about 3.5 M parameters.
    """
    n = batch_dim(batch)
    b = GraphBuilder("mobilenetv2", seed=seed)
    x = b.input("input", FLOAT, [n, 3, 224, 224], calibration_shape=(1, 3, 224, 224))
    cin = 32
    x = _conv_bn(b, x, 3, cin, 3, 2, 1, "features.0")
    index = 1
    for t, c, repeats, s in SETTINGS:
        for i in range(repeats):
            x = _inverted_residual(b, x, cin, c, s if i == 0 else 1, t, f"features.{index}")
            cin, index = c, index + 1
    x = _conv_bn(b, x, cin, LAST_CHANNELS, 1, 1, 1, f"features.{index}")
    x = b.flatten(b.global_avgpool(x, prefix="avgpool"), prefix="flatten")
    x = b.gemm(x, LAST_CHANNELS, num_classes, prefix="classifier.1")
    b.output(x, "logits", FLOAT, [n, num_classes])
    return b.model(doc="MobileNetV2 1.0 (torchvision topology), random weights")
