"""The op registry: lookups, ONNX-derived defaults and inference, categories, coverage."""

from __future__ import annotations

import numpy as np

from lepton_compiler.ir import DType, Graph, Node, TensorType, Value
from lepton_compiler.ops import CATEGORIES, lookup, registered_ops
from lepton_compiler.ops.infer import check_node_types, infer_types


def test_standard_op_is_known_with_schema_defaults() -> None:
    conv = lookup("", "Conv")
    assert conv is not None and conv.category == "complex"
    defaults = conv.defaults(18)
    assert defaults["group"] == 1 and defaults["auto_pad"] == "NOTSET"
    assert "kernel_shape" not in defaults  # no default in the schema
    assert conv.doc  # ONNX's own summary


def test_unknown_ops_are_none() -> None:
    assert lookup("", "NoSuchOp") is None
    assert lookup("com.example", "Conv") is None


def test_our_fused_op_is_fully_defined() -> None:
    fused = lookup("lepton", "Fused")
    assert fused is not None and fused.infer is not None and fused.reference is not None


def test_every_registered_category_is_valid() -> None:
    defs = registered_ops()
    assert len(defs) > 100
    assert {d.category for d in defs} <= set(CATEGORIES)
    cats = {d.op: d.category for d in defs}
    assert cats["Add"] == "broadcast" and cats["Relu"] == "elementwise"
    assert cats["Reshape"] == "injective" and cats["ReduceMean"] == "reduction"
    assert lookup("", "Add").commutative and not lookup("", "Sub").commutative


def _conv_graph(stored: TensorType | None) -> tuple[Graph, Node]:
    x = Value("x", TensorType(DType.FLOAT32, ("batch", 3, 8, 8)))
    g = Graph([x], opset_imports={"": 18})
    w = g.add_constant(np.ones((4, 3, 3, 3), np.float32), "w")
    node = g.make_node("Conv", [x, w], {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]})
    node.output.type = stored
    g.outputs = [node.output]
    return g, node


def test_inference_keeps_symbolic_dims() -> None:
    _, node = _conv_graph(None)
    (t,) = infer_types(node)
    assert t == TensorType(DType.FLOAT32, ("batch", 4, 8, 8))


def test_type_check_flags_a_wrong_stored_type() -> None:
    _, node = _conv_graph(TensorType(DType.FLOAT32, ("batch", 4, 6, 6)))
    problems = check_node_types(node)
    assert len(problems) == 1 and "Conv" in problems[0] and "6" in problems[0]
    _, ok = _conv_graph(TensorType(DType.FLOAT32, ("batch", 4, 8, 8)))
    assert check_node_types(ok) == []


def test_inference_uses_constant_shape_inputs() -> None:
    x = Value("x", TensorType(DType.FLOAT32, (2, 3, 4)))
    g = Graph([x], opset_imports={"": 18})
    shape = g.add_constant(np.array([6, -1], np.int64), "shape")
    node = g.make_node("Reshape", [x, shape])
    assert infer_types(node) == [TensorType(DType.FLOAT32, (6, 4))]
