"""Small graphs the CUDA tests share: they run under the simulator (one Python thread per CUDA
thread), so every size is tiny but crosses tile and block edges."""

from __future__ import annotations

from typing import Any

import numpy as np

from lepton_compiler.ir import DType, Graph, Node, TensorType, Value

__all__ = ["skip_and_attention_graph", "tiny_cnn"]


def skip_and_attention_graph() -> Graph:
    """SkipLayerNorm (with bias), a head split and transpose, attention with a padding
    mask."""
    f32 = DType.FLOAT32
    g = Graph(opset_imports={"": 18})
    x = g.add_input(Value("x", TensorType(f32, (2, 2, 8))))
    skip = g.add_input(Value("skip", TensorType(f32, (2, 2, 8))))
    mask = g.add_input(Value("mask", TensorType(f32, (2, 1, 1, 2))))
    rng = np.random.default_rng(3)
    gamma, beta, bias = (
        g.add_constant(rng.standard_normal(8).astype(np.float32), name=n)
        for n in ("gamma", "beta", "bias")
    )
    ln = Value("ln", TensorType(f32, (2, 2, 8)))
    g.append(
        Node(
            "lepton.SkipLayerNorm",
            [x, skip, gamma, beta, bias],
            {"epsilon": 1e-5},
            outputs=[ln],
            name="sln",
        )
    )
    shape = g.add_constant(np.array([2, 2, 2, 4], np.int64), name="shape")
    heads = Value("heads", TensorType(f32, (2, 2, 2, 4)))
    g.append(Node("Reshape", [ln, shape], {}, outputs=[heads], name="split"))
    q = Value("q", TensorType(f32, (2, 2, 2, 4)))
    g.append(Node("Transpose", [heads], {"perm": [0, 2, 1, 3]}, outputs=[q], name="tr"))
    y = Value("y", TensorType(f32, (2, 2, 2, 4)))
    g.append(Node("lepton.Attention", [q, q, q, mask], {"scale": 0.5}, outputs=[y], name="att"))
    g.outputs = [y]
    return g


def tiny_cnn(batch: int | str) -> Any:
    """conv 3->4 3x3 + BN + Relu, MaxPool 2, conv 4->6 3x3 stride 2 + bias + Relu,
    GlobalAveragePool, Flatten, Gemm 6->5: an ONNX model with random weights."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(7)

    def init(name: str, *shape: int, positive: bool = False) -> Any:
        a = rng.standard_normal(shape).astype(np.float32) * 0.5
        return numpy_helper.from_array(np.abs(a) + 0.5 if positive else a, name)

    inits = [
        init("w1", 4, 3, 3, 3),
        init("g1", 4, positive=True),
        init("b1", 4),
        init("m1", 4),
        init("v1", 4, positive=True),
        init("w2", 6, 4, 3, 3),
        init("c2", 6),
        init("wf", 5, 6),
        init("bf", 5),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c1", "g1", "b1", "m1", "v1"], ["n1"]),
        helper.make_node("Relu", ["n1"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "w2", "c2"], ["c2o"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c2o"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["gp"]),
        helper.make_node("Flatten", ["gp"], ["f"]),
        helper.make_node("Gemm", ["f", "wf", "bf"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 6, 6])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 5])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    onnx.checker.check_model(model)
    return model
