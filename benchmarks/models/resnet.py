"""ResNet-50 v1.5 (torchvision's ``resnet50``) built as ONNX with random weights.

The topology is torchvision's exactly, as ``torch.onnx.export`` writes it in eval mode without
folding BatchNormalization into the convolutions: 53 Conv and 53 BatchNormalization nodes,
bias-free convolutions, stride on the 3x3 convolution of each bottleneck ("v1.5"),
GlobalAveragePool + Flatten + Gemm head. It is the standard CNN benchmark of the project.

Differences from the real model: the weights are random (He-initialised convolutions,
BatchNorm statistics near 0/1, the last BatchNorm of every residual branch scaled down so
that the residual sums stay O(1)), so the logits mean nothing; node and tensor names follow
the exporter's style but are not byte-identical to it.
"""

from __future__ import annotations

import onnx

from ._builder import FLOAT, GraphBuilder, batch_dim

#: (blocks, bottleneck width) per stage; each block outputs ``4 * width`` channels.
STAGES = ((3, 64), (4, 128), (6, 256), (3, 512))
EXPANSION = 4


def _bottleneck(
    b: GraphBuilder, x: str, cin: int, width: int, stride: int, prefix: str
) -> tuple[str, int]:
    """One torchvision ``Bottleneck``: 1x1 → 3x3 (stride) → 1x1, plus the (projected) identity."""
    cout = width * EXPANSION
    y = b.relu(b.bn(b.conv(x, cin, width, 1, prefix=f"{prefix}.conv1"), width,
                    prefix=f"{prefix}.bn1"), prefix=f"{prefix}.relu")  # fmt: skip
    y = b.conv(y, width, width, 3, stride=stride, pad=1, prefix=f"{prefix}.conv2")
    y = b.relu(b.bn(y, width, prefix=f"{prefix}.bn2"), prefix=f"{prefix}.relu_1")
    y = b.conv(y, width, cout, 1, prefix=f"{prefix}.conv3")
    y = b.bn(y, cout, gamma=0.5, prefix=f"{prefix}.bn3")
    identity = x
    if stride != 1 or cin != cout:
        identity = b.conv(x, cin, cout, 1, stride=stride, prefix=f"{prefix}.downsample.0")
        identity = b.bn(identity, cout, prefix=f"{prefix}.downsample.1")
    return b.relu(b.add(y, identity, prefix=f"{prefix}.add"), prefix=f"{prefix}.relu_2"), cout


def resnet50(batch: int | str = 1, num_classes: int = 1000, seed: int = 0) -> onnx.ModelProto:
    """Build ResNet-50 v1.5 with random weights.

    Args:
        batch: the batch size, or a symbolic dim name such as ``"batch"``.
        num_classes: size of the classifier output.
        seed: seed of the weight generator (the same seed gives the same model).

    Returns:
        A model with input ``input`` ``[batch, 3, 224, 224]`` float32 and output ``logits``
        ``[batch, num_classes]``; about 25.6 M parameters.
    """
    n = batch_dim(batch)
    b = GraphBuilder("resnet50", seed=seed)
    x = b.input("input", FLOAT, [n, 3, 224, 224], calibration_shape=(1, 3, 224, 224))
    x = b.conv(x, 3, 64, 7, stride=2, pad=3, prefix="conv1")
    x = b.relu(b.bn(x, 64, prefix="bn1"), prefix="relu")
    x = b.maxpool(x, 3, 2, pad=1, prefix="maxpool")
    cin = 64
    for stage, (blocks, width) in enumerate(STAGES, start=1):
        for i in range(blocks):
            stride = 2 if i == 0 and stage > 1 else 1
            x, cin = _bottleneck(b, x, cin, width, stride, f"layer{stage}.{i}")
    x = b.flatten(b.global_avgpool(x, prefix="avgpool"), prefix="flatten")
    x = b.gemm(x, cin, num_classes, prefix="fc")
    b.output(x, "logits", FLOAT, [n, num_classes])
    return b.model(doc="ResNet-50 v1.5 (torchvision topology), random weights")
