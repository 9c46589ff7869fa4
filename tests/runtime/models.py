"""Tiny ONNX models for the runtime, artifact and CLI tests, and an ONNX Runtime oracle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _model(graph: onnx.GraphProto) -> onnx.ModelProto:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    return model


def mlp_model(seed: int = 0) -> onnx.ModelProto:
    """``y = Relu(x @ w + b)`` with ``x: float32[batch, 4]`` and ``y: float32[batch, 3]``."""
    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.standard_normal((4, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(3).astype(np.float32), "b")
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["m"], name="matmul"),
            helper.make_node("Add", ["m", "b"], ["a"], name="add"),
            helper.make_node("Relu", ["a"], ["y"], name="relu"),
        ],
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        [w, b],
    )
    return _model(graph)


def two_input_model() -> onnx.ModelProto:
    """``y = a * b + 1`` for ``a, b: float32[batch, 3]``; ``k_out = k + k`` for int64 ``k``."""
    one = numpy_helper.from_array(np.ones(3, np.float32), "one")
    graph = helper.make_graph(
        [
            helper.make_node("Mul", ["a", "b"], ["m"], name="mul"),
            helper.make_node("Add", ["m", "one"], ["y"], name="add"),
            helper.make_node("Add", ["k", "k"], ["k_out"], name="add_k"),
        ],
        "two_inputs",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, ["batch", 3]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, ["batch", 3]),
            helper.make_tensor_value_info("k", TensorProto.INT64, [2]),
        ],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3]),
            helper.make_tensor_value_info("k_out", TensorProto.INT64, [2]),
        ],
        [one],
    )
    return _model(graph)


def conv_model(seed: int = 0) -> onnx.ModelProto:
    """``y = Relu(Conv(x, w, b))``: ``x: float32[1, 2, 5, 5]`` to ``y: float32[1, 3, 5, 5]``."""
    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.standard_normal((3, 2, 3, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(3).astype(np.float32), "b")
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], name="conv"),
            helper.make_node("Relu", ["c"], ["y"], name="relu"),
        ],
        "conv_relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 5, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 5, 5])],
        [w, b],
    )
    return _model(graph)


def write(model: onnx.ModelProto, folder: Path, name: str) -> Path:
    """Save `model` as ``folder/name.onnx`` and return the path."""
    path = folder / f"{name}.onnx"
    onnx.save_model(model, path)
    return path


def run_onnxruntime(path: Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Outputs of ONNX Runtime's CPU provider, by name."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds), strict=True))


def identity_model() -> onnx.ModelProto:
    """``y = Relu(Identity(x))`` and ``c_out = Identity(c)`` for a constant ``c``.

    Compile it with ``simplify=False`` to keep the Identity nodes for the passes to remove.
    """
    c = numpy_helper.from_array(np.arange(3, dtype=np.float32), "c")
    graph = helper.make_graph(
        [
            helper.make_node("Identity", ["x"], ["i"], name="identity"),
            helper.make_node("Relu", ["i"], ["y"], name="relu"),
            helper.make_node("Identity", ["c"], ["c_out"], name="identity_c"),
        ],
        "identity",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3]),
            helper.make_tensor_value_info("c_out", TensorProto.FLOAT, [3]),
        ],
        [c],
    )
    return _model(graph)
