"""`lepton_compiler.testing`: the helpers every other test builds on must be right themselves."""

from __future__ import annotations

import numpy as np
import pytest

from lepton_compiler.errors import ModelLoadError
from lepton_compiler.ir import DType, Graph, TensorType, Value
from lepton_compiler.testing import (
    assert_outputs_close,
    graph_from_text,
    make_model,
    model_from_text,
    random_inputs,
    run_onnxruntime,
    run_reference,
)

TEXT = """
g (float[N, 2] x, int64[3] k) => (float[N, 2] y, int64[3] z) {
  y = Sigmoid(x)
  z = Neg(k)
}
"""


def test_model_from_text_adds_a_default_header() -> None:
    model = model_from_text(TEXT)
    assert model.ir_version == 10
    assert {o.domain: o.version for o in model.opset_import} == {"": 18}
    assert [n.op_type for n in model.graph.node] == ["Sigmoid", "Neg"]
    explicit = make_model('<ir_version: 8, opset_import: ["" : 17]>' + TEXT)
    assert explicit.ir_version == 8 and explicit.opset_import[0].version == 17


def test_model_from_text_parse_error() -> None:
    with pytest.raises(ModelLoadError, match="cannot parse the ONNX text"):
        model_from_text("g (float x) => (float y) { y = Relu(x ")


def test_graph_from_text_runs_in_both_engines() -> None:
    graph = graph_from_text(TEXT)
    assert [n.op for n in graph] == ["Sigmoid", "Neg"]
    feeds = random_inputs(graph, seed=5, batch=3)
    assert feeds["x"].shape == (3, 2) and feeds["x"].dtype == np.float32
    assert feeds["k"].dtype == np.int64
    ours = run_reference(graph, feeds)
    assert_outputs_close(ours, run_onnxruntime(graph, feeds))
    assert_outputs_close(ours, run_onnxruntime(model_from_text(TEXT), feeds))
    np.testing.assert_array_equal(ours["z"], -feeds["k"])


def test_random_inputs_dims_types_and_determinism() -> None:
    inputs = [
        Value("a", TensorType(DType.FLOAT16, ("batch", None, 4))),
        Value("b", TensorType(DType.BOOL, (2,))),
        Value("c", TensorType(DType.STRING, (3,))),
        Value("d", TensorType(DType.UINT8, ())),
    ]
    g = Graph(inputs=inputs)
    feeds = random_inputs(g, seed=1, batch=5)
    assert feeds["a"].shape == (5, 1, 4) and feeds["a"].dtype == np.float16
    assert feeds["b"].dtype == np.bool_
    assert feeds["c"].dtype == object and all(isinstance(s, str) for s in feeds["c"])
    assert feeds["d"].shape == () and feeds["d"].dtype == np.uint8
    again = random_inputs(g, seed=1, batch=5)
    assert all(np.array_equal(feeds[k], again[k]) for k in feeds)
    other = random_inputs(g, seed=2, batch=5)
    assert not np.array_equal(feeds["a"], other["a"])
    with pytest.raises(ValueError, match="%u"):
        random_inputs(Graph(inputs=[Value("u", TensorType(DType.FLOAT32, None))]))


def test_assert_outputs_close_passes_within_tolerance() -> None:
    a = {"y": np.array([1.0, np.nan], np.float32), "i": np.array([1, 2])}
    b = {"y": np.array([1.0 + 1e-7, np.nan], np.float64), "i": np.array([1, 2])}
    assert_outputs_close(a, b)


@pytest.mark.parametrize(
    ("actual", "expected", "message"),
    [
        ({"y": np.zeros(2)}, {"z": np.zeros(2)}, "output names differ"),
        ({"y": np.zeros(2)}, {"y": np.zeros(3)}, r"output 'y': shape \(2,\), expected \(3,\)"),
        ({"y": np.zeros(2)}, {"y": np.zeros(2, np.int64)}, "output 'y': dtype"),
        (
            {"y": np.array([1.0, 2.0, 3.0])},
            {"y": np.array([1.0, 2.5, 3.0])},
            r"output 'y' \(shape \(3,\)\): 1 of 3 element\(s\) differ.*0\.5 at \(1,\)",
        ),
        ({"k": np.array([1, 2])}, {"k": np.array([1, 3])}, r"output 'k'.*1 element\(s\) differ"),
        (
            {"s": np.array(["a"], dtype=object)},
            {"s": np.array(["b"], dtype=object)},
            "output 's': strings differ",
        ),
    ],
)
def test_assert_outputs_close_names_the_output(actual, expected, message: str) -> None:
    with pytest.raises(AssertionError, match=message):
        assert_outputs_close(actual, expected)
