"""The reference interpreter: runs IR graphs, frees intermediates, reports kernel failures."""

from __future__ import annotations

import numpy as np
import pytest

from lepton_compiler.errors import InputError, LoweringError
from lepton_compiler.interpreter import run_graph
from lepton_compiler.ir import DType, Graph, Node, TensorType, Value


def _graph() -> Graph:
    x = Value("x", TensorType(DType.FLOAT32, ("batch", 4)))
    g = Graph([x], opset_imports={"": 18})
    two = g.add_constant(np.float32(2.0), "two")
    mul = g.make_node("Mul", [x, two])
    relu = g.make_node("Relu", [mul.output])
    g.outputs = [relu.output, mul.output]
    return g


def test_runs_and_returns_outputs_by_name() -> None:
    g = _graph()
    x = np.array([[-1, 0, 1, 2]], np.float32)
    out = run_graph(g, {"x": x})
    assert list(out) == [v.name for v in g.outputs]
    np.testing.assert_array_equal(out[g.outputs[0].name], [[0, 0, 2, 4]])
    np.testing.assert_array_equal(out[g.outputs[1].name], [[-2, 0, 2, 4]])


def test_missing_and_unknown_inputs_are_input_errors() -> None:
    g = _graph()
    with pytest.raises(InputError, match="missing input 'x'"):
        run_graph(g, {})
    with pytest.raises(InputError, match="unknown input name"):
        run_graph(g, {"x": np.zeros((1, 4), np.float32), "y": 1})


def test_a_failing_kernel_names_the_node() -> None:
    g = _graph()
    with pytest.raises(LoweringError, match="Mul node"):
        run_graph(g, {"x": np.array([["a", "b"]], dtype=object)})


def test_fused_group_runs_its_body() -> None:
    x = Value("x", TensorType(DType.FLOAT32, (2, 3)))
    g = Graph([x], opset_imports={"": 18})
    bx = Value("bx", TensorType(DType.FLOAT32, (2, 3)))
    body = Graph([bx], name="body")
    neg = body.make_node("Neg", [bx])
    exp = body.make_node("Exp", [neg.output])
    body.outputs = [exp.output]
    fused = Node("lepton.Fused", [x], {"body": body}, outputs=[Value("y", exp.output.type)])
    g.append(fused)
    g.outputs = [fused.output]
    data = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_allclose(run_graph(g, {"x": data})["y"], np.exp(-data), rtol=1e-6)
