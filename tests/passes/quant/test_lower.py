"""insert_qdq + lower_qdq: a float CNN/MLP goes to QDQ form, then to lepton.QConv/QMatMul
with the same numbers; patterns the integer ops cannot take stay in float."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from lepton_compiler.frontend.onnx import import_model
from lepton_compiler.interpreter import run_graph
from lepton_compiler.ir import Graph, verify
from lepton_compiler.pass_manager import PassContext, get_pass
from lepton_compiler.passes.quant.insert import insert_qdq
from lepton_compiler.passes.quant.layers import find_layers
from lepton_compiler.passes.quant.scheme import activation_params
from tests.passes.conftest import ops

RNG = np.random.default_rng(0)


def _w(name: str, *shape: int, scale: float = 0.3) -> object:
    return numpy_helper.from_array((RNG.standard_normal(shape) * scale).astype(np.float32), name)


def _cnn() -> Graph:
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], strides=[2, 2]),
        helper.make_node("Add", ["c2", "c2"], ["s"]),
        helper.make_node("Flatten", ["s"], ["f"]),
        helper.make_node("Gemm", ["f", "wg", "bg"], ["y"], transB=1),
    ]
    inits = [
        _w("w1", 8, 3, 3, 3),
        _w("b1", 8),
        _w("w2", 6, 8, 1, 1),
        _w("wg", 5, 6 * 3 * 3),
        _w("bg", 5),
    ]
    g = helper.make_graph(
        nodes,
        "cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 5])],
        inits,
    )
    return import_model(
        helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]), simplify=False
    )


def _params(graph: Graph, dtype: str) -> dict:
    x = {"x": RNG.standard_normal((2, 3, 6, 6)).astype(np.float32)}
    values = run_graph(graph, x)  # outputs only; ranges by hand below
    assert values
    return {
        lay.activation.name: activation_params(
            -3.0 if lay.activation.name == "x" else 0.0, 4.0, dtype
        )
        for lay in find_layers(graph)
    }


def _lower(graph: Graph) -> None:
    get_pass("lower_qdq")()(graph, PassContext(verify_each=True))
    get_pass("dead_code_elimination")()(graph, PassContext())


@pytest.mark.parametrize("dtype", ["uint8", "int8"])
@pytest.mark.parametrize("per_channel", [True, False])
def test_qdq_then_integer_ops(dtype: str, per_channel: bool) -> None:
    graph = _cnn()
    layers = find_layers(graph)
    assert [lay.node.op for lay in layers] == ["Conv", "Conv", "Gemm"]
    n = insert_qdq(graph, layers, _params(graph, dtype), per_channel)
    assert n == 3
    verify(graph)
    assert ops(graph).count("QuantizeLinear") == 3
    assert ops(graph).count("DequantizeLinear") == 3 + 3 + 2  # activations, weights, biases
    feeds = {"x": RNG.standard_normal((2, 3, 6, 6)).astype(np.float32)}
    qdq = run_graph(graph, feeds)["y"]
    _lower(graph)
    verify(graph)
    assert ops(graph) == [
        "QuantizeLinear",
        "lepton.QConv",
        "Relu",
        "QuantizeLinear",
        "lepton.QConv",
        "Add",
        "Flatten",
        "QuantizeLinear",
        "lepton.QMatMul",
    ]
    assert graph.outputs[0].name == "y"
    lowered = run_graph(graph, feeds)["y"]
    np.testing.assert_allclose(lowered, qdq, rtol=1e-4, atol=1e-4)


def test_output_names_are_kept() -> None:
    graph = _cnn()
    insert_qdq(graph, find_layers(graph), _params(graph, "uint8"))
    _lower(graph)
    names = [n.output.name for n in graph if n.op.startswith("lepton.Q")]
    assert names == ["c1", "c2", "y"]


def test_weight_with_zero_point_outside_int8_stays_float() -> None:
    # uint8 weights with zero point 0 cannot be centered into int8: the Conv stays a float op
    # on the dequantized weights (folded into a constant).
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 4])
    wq = numpy_helper.from_array(RNG.integers(0, 256, (3, 2, 1, 1)).astype(np.uint8), "wq")
    inits = [
        wq,
        numpy_helper.from_array(np.float32(0.01), "ws"),
        numpy_helper.from_array(np.uint8(0), "wz"),
        numpy_helper.from_array(np.float32(0.05), "xs"),
        numpy_helper.from_array(np.uint8(128), "xz"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
        helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wd"]),
        helper.make_node("Conv", ["xd", "wd"], ["y"]),
    ]
    model = helper.make_model(
        helper.make_graph(nodes, "g", [x], [y], inits), opset_imports=[helper.make_opsetid("", 18)]
    )
    graph = import_model(model, simplify=False)
    feeds = {"x": RNG.standard_normal((1, 2, 4, 4)).astype(np.float32)}
    before = run_graph(graph, feeds)["y"]
    _lower(graph)
    assert ops(graph) == ["QuantizeLinear", "DequantizeLinear", "Conv"]
    np.testing.assert_allclose(run_graph(graph, feeds)["y"], before, rtol=1e-6, atol=1e-6)


def test_round_trip_is_removed() -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])
    inits = [
        numpy_helper.from_array(np.float32(0.1), "s"),
        numpy_helper.from_array(np.uint8(10), "z"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q1"]),
        helper.make_node("DequantizeLinear", ["q1", "s", "z"], ["d1"]),
        helper.make_node("QuantizeLinear", ["d1", "s", "z"], ["q2"]),
        helper.make_node("DequantizeLinear", ["q2", "s", "z"], ["y"]),
    ]
    model = helper.make_model(
        helper.make_graph(nodes, "g", [x], [y], inits), opset_imports=[helper.make_opsetid("", 18)]
    )
    graph = import_model(model, simplify=False)
    feeds = {"x": np.array([-1.0, 0.0, 0.33, 30.0], np.float32)}
    before = run_graph(graph, feeds)["y"]
    _lower(graph)
    assert ops(graph) == ["QuantizeLinear", "DequantizeLinear"]
    np.testing.assert_array_equal(run_graph(graph, feeds)["y"], before)


def test_float_graph_is_untouched() -> None:
    graph = _cnn()
    before = ops(graph)
    result = get_pass("lower_qdq")()(graph, PassContext())
    assert not result.modified and ops(graph) == before
