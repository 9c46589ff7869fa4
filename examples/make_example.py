"""Build the bundled example: a small convolutional classifier for 1x1x28x28 images.

Writes ``examples/tiny_cnn.onnx`` (deterministic weights, opset 18, symbolic ``batch`` dim)
and ``examples/tiny_cnn_input.npy`` (one input image), so the README's first command has a
model to compile and an input to run it on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

HERE = Path(__file__).resolve().parent


def build(seed: int = 0) -> onnx.ModelProto:
    """Conv-BN-Relu-MaxPool ×2, then Flatten-Gemm-Softmax, with seeded random weights."""
    rng = np.random.default_rng(seed)

    def w(name: str, *shape: int, scale: float = 0.2) -> onnx.TensorProto:
        data = (rng.standard_normal(shape) * scale).astype(np.float32)
        return numpy_helper.from_array(data, name)

    inits = [
        w("conv1_w", 8, 1, 3, 3), w("conv1_b", 8),
        numpy_helper.from_array(rng.uniform(0.5, 1.5, 8).astype(np.float32), "bn1_scale"),
        w("bn1_bias", 8), w("bn1_mean", 8),
        numpy_helper.from_array(rng.uniform(0.5, 1.5, 8).astype(np.float32), "bn1_var"),
        w("conv2_w", 16, 8, 3, 3, scale=0.1), w("conv2_b", 16),
        w("fc_w", 10, 16 * 7 * 7, scale=0.05), w("fc_b", 10),
    ]  # fmt: skip
    nodes = [
        helper.make_node("Conv", ["image", "conv1_w", "conv1_b"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization",
                         ["c1", "bn1_scale", "bn1_bias", "bn1_mean", "bn1_var"], ["b1"]),
        helper.make_node("Relu", ["b1"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "conv2_w", "conv2_b"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("MaxPool", ["r2"], ["p2"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["p2"], ["f"]),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["logits"], transB=1),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
    ]  # fmt: skip
    graph = helper.make_graph(
        nodes,
        "tiny_cnn",
        [helper.make_tensor_value_info("image", onnx.TensorProto.FLOAT, ["batch", 1, 28, 28])],
        [helper.make_tensor_value_info("probs", onnx.TensorProto.FLOAT, ["batch", 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    return model


def main() -> None:
    """Write the example model and one input next to this file."""
    onnx.save_model(build(), HERE / "tiny_cnn.onnx")
    image = np.random.default_rng(1).uniform(0, 1, (1, 1, 28, 28)).astype(np.float32)
    np.save(HERE / "tiny_cnn_input.npy", image)
    print(f"wrote {HERE / 'tiny_cnn.onnx'} and {HERE / 'tiny_cnn_input.npy'}")


if __name__ == "__main__":
    main()
