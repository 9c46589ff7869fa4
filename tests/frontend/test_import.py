"""ONNX import: sources, load errors, unknown ops, opset conversion, initializers, subgraphs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from lepton_compiler.errors import ModelLoadError, UnsupportedOpError
from lepton_compiler.frontend.onnx import ModelImportWarning, import_model
from lepton_compiler.ir import DType, TensorType, verify
from lepton_compiler.testing import (
    assert_outputs_close,
    model_from_text,
    random_inputs,
    run_onnxruntime,
    run_reference,
)

pytestmark = pytest.mark.filterwarnings("ignore::lepton_compiler.frontend.onnx.ModelImportWarning")

SMALL = """
<ir_version: 8, opset_import: ["" : 18]>
small (float[batch, 4] x) => (float[batch, 4] y) {
  w = Constant <value = float[4] {1.0, 2.0, 3.0, 4.0}> ()
  r = Relu(x)
  y = Mul(r, w)
}
"""


@pytest.fixture
def small() -> onnx.ModelProto:
    return model_from_text(SMALL)


def old_ir_model() -> onnx.ModelProto:
    """Opset 8, IR 3: initializers W and B also listed as graph inputs; an Unsqueeze-1 node."""
    w = numpy_helper.from_array(np.array([[1, 2, 3, 4]], np.float32), "W")
    b = numpy_helper.from_array(np.array([0.5], np.float32), "B")
    nodes = [
        helper.make_node("Mul", ["x", "W"], ["m"], name="mul"),
        helper.make_node("Add", ["m", "B"], ["a"], name="add"),
        helper.make_node("Unsqueeze", ["a"], ["y"], name="unsq", axes=[0]),
    ]
    graph = helper.make_graph(
        nodes,
        "old",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4]),
            helper.make_tensor_value_info("W", TensorProto.FLOAT, [1, 4]),
            helper.make_tensor_value_info("B", TensorProto.FLOAT, [1]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 4])],
        initializer=[w, b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 8)])
    model.ir_version = 3
    onnx.checker.check_model(model)
    return model


def assert_matches_ort(graph, model: onnx.ModelProto, feeds: dict) -> None:
    assert_outputs_close(run_reference(graph, feeds), run_onnxruntime(model, feeds))


# -- sources -----------------------------------------------------------------------------------
def test_load_from_path_bytes_and_proto(small: onnx.ModelProto, tmp_path: Path) -> None:
    path = tmp_path / "small.onnx"
    onnx.save_model(small, path)
    before = small.SerializeToString()
    feeds = {"x": np.linspace(-2, 2, 8, dtype=np.float32).reshape(2, 4)}
    expected = run_onnxruntime(small, feeds)
    for source in (path, str(path), path.read_bytes(), small):
        graph = import_model(source)
        verify(graph)
        assert [v.name for v in graph.inputs] == ["x"] and [v.name for v in graph.outputs] == ["y"]
        assert_outputs_close(run_reference(graph, feeds), expected)
    assert small.SerializeToString() == before, "the caller's ModelProto is not modified"


def test_old_model_proto_is_not_mutated() -> None:
    model = old_ir_model()
    before = model.SerializeToString()
    import_model(model)
    assert model.SerializeToString() == before


# -- load errors -------------------------------------------------------------------------------
def test_corrupt_file(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.onnx"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(ModelLoadError, match="corrupt") as info:
        import_model(path)
    assert str(path) in str(info.value)


def test_corrupt_bytes() -> None:
    data = np.random.default_rng(1).integers(0, 256, 1024, dtype=np.uint8).tobytes()
    with pytest.raises(ModelLoadError, match="bytes"):
        import_model(data)


def test_truncated_file(small: onnx.ModelProto, tmp_path: Path) -> None:
    data = small.SerializeToString()
    path = tmp_path / "truncated.onnx"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError) as info:
        import_model(path)
    text = str(info.value)
    assert "truncated" in text or "checker" in text
    assert "\n" not in text.strip(), "one readable line, not a protobuf dump"


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.onnx"
    path.write_bytes(b"")
    with pytest.raises(ModelLoadError, match="does not hold an ONNX model") as info:
        import_model(path)
    assert str(path) in str(info.value)


def test_missing_path(tmp_path: Path) -> None:
    path = tmp_path / "nope.onnx"
    with pytest.raises(ModelLoadError, match="no such model file") as info:
        import_model(path)
    assert str(path) in str(info.value)


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="is a directory"):
        import_model(tmp_path)


def test_checker_failure_is_a_model_load_error() -> None:
    model = model_from_text(SMALL)
    model.graph.node[1].input[0] = "undefined_value"
    with pytest.raises(ModelLoadError, match="checker"):
        import_model(model)


# -- unknown ops -------------------------------------------------------------------------------
UNKNOWN = """
<ir_version: 8, opset_import: ["" : 18, "com.example" : 1]>
g (float[N] x) => (float[N] y) {
  [foo_1] a = com.example.Foo <alpha: float = 1.0> (x)
  [foo_2] b = com.example.Foo (a)
  [made_up] c = MadeUpOp (b)
  [relu] d = Relu(c)
  [bar] y = com.example.Bar (d)
}
"""


@pytest.mark.parametrize("check", [False, True])
def test_all_unknown_ops_in_one_error(check: bool) -> None:
    with pytest.raises(UnsupportedOpError) as info:
        import_model(model_from_text(UNKNOWN), check=check)
    err = info.value
    assert sorted((d, op, names) for d, op, _, names in err.unknown) == [
        ("", "MadeUpOp", ["made_up"]),
        ("com.example", "Bar", ["bar"]),
        ("com.example", "Foo", ["foo_1", "foo_2"]),
    ]
    text = str(err)
    assert "3 unsupported op(s)" in text
    for piece in ("com.example::Foo", "foo_1, foo_2", "com.example::Bar", "ai.onnx::MadeUpOp",
                  "made_up"):  # fmt: skip
        assert piece in text
    assert "Relu" not in text


def test_unknown_op_inside_a_subgraph_is_found() -> None:
    text = """
    <ir_version: 8, opset_import: ["" : 18, "com.example" : 1]>
    g (float[N] x, bool c) => (float[N] y) {
      [cond] y = If(c) <
        then_branch = then_g () => (float[N] t) { [inner_foo] t = com.example.Foo(x) },
        else_branch = else_g () => (float[N] e) { e = Neg(x) }
      >
    }
    """
    with pytest.raises(UnsupportedOpError, match="inner_foo"):
        import_model(model_from_text(text))


def test_model_local_functions_are_inlined() -> None:
    text = """
    <ir_version: 8, opset_import: ["" : 18, "local" : 1]>
    g (float[N] x) => (float[N] y) {
      [call1] t = local.Swishy(x)
      [call2] y = local.Swishy(t)
    }
    <domain: "local", opset_import: ["" : 18]>
    Swishy (a) => (b) {
      s = Sigmoid(a)
      b = Mul(a, s)
    }
    """
    model = model_from_text(text)
    graph = import_model(model, simplify=False)
    assert [n.op for n in graph] == ["Sigmoid", "Mul", "Sigmoid", "Mul"]
    assert "inlined 1 model-local function(s)" in graph.meta["import_notes"]
    verify(graph)
    feeds = {"x": np.linspace(-3, 3, 7, dtype=np.float32)}
    assert_matches_ort(graph, model, feeds)


def test_fresh_names_in_an_imported_graph_do_not_collide() -> None:
    text = """
    <ir_version: 8, opset_import: ["" : 18]>
    g (float[2] relu_0) => (float[2] relu_2) {
      [relu_1] relu_2 = Relu(relu_0)
    }
    """
    graph = import_model(model_from_text(text), simplify=False)
    node = graph.make_node("Relu", [graph.outputs[0]])
    names = {"relu_0", "relu_1", "relu_2"}
    assert node.name not in names and node.output.name not in names | {node.name}
    verify(graph)


# -- shapes ------------------------------------------------------------------------------------
def test_symbolic_batch_is_kept(small: onnx.ModelProto) -> None:
    graph = import_model(small)
    assert graph.inputs[0].type == TensorType(DType.FLOAT32, ("batch", 4))
    assert graph.outputs[0].type == TensorType(DType.FLOAT32, ("batch", 4))
    relu = next(n for n in graph if n.op == "Relu")
    assert relu.output.shape == ("batch", 4)


def test_input_shapes_override(small: onnx.ModelProto) -> None:
    graph = import_model(small, input_shapes={"x": [3, 4]})
    assert graph.inputs[0].shape == (3, 4)
    assert graph.outputs[0].shape == (3, 4)
    other = import_model(small, input_shapes={"x": ["n", 4]})
    assert other.inputs[0].shape == ("n", 4)
    assert small.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"


def test_input_shapes_naming_an_unknown_input(small: onnx.ModelProto) -> None:
    with pytest.raises(ModelLoadError, match=r"unknown input\(s\) \['z'\].*\['x'\]"):
        import_model(small, input_shapes={"z": [1, 4]})


# -- initializers, constants -------------------------------------------------------------------
def test_initializers_listed_as_inputs_become_constants() -> None:
    model = old_ir_model()
    graph = import_model(model, simplify=False)
    assert [v.name for v in graph.inputs] == ["x"]
    assert {"W", "B"} <= set(graph.initializers)
    np.testing.assert_array_equal(graph.initializers["W"].const, [[1, 2, 3, 4]])
    assert any("2 initializer(s) listed as graph inputs became constants" in n
               for n in graph.meta["import_notes"])  # fmt: skip
    feeds = {"x": np.arange(8, dtype=np.float32).reshape(2, 4)}
    assert_matches_ort(graph, model, feeds)


def test_override_initializers_keeps_one_as_an_input() -> None:
    model = old_ir_model()
    graph = import_model(model, simplify=False, override_initializers=["W"])
    assert [v.name for v in graph.inputs] == ["x", "W"]
    assert "W" not in graph.initializers and "B" in graph.initializers
    assert any("1 initializer(s)" in n for n in graph.meta["import_notes"])
    feeds = {"x": np.ones((2, 4), np.float32), "W": np.full((1, 4), 3.0, np.float32)}
    out = run_reference(graph, feeds)["y"]
    np.testing.assert_allclose(out, np.full((1, 2, 4), 3.5, np.float32))
    verify(graph)


def test_constant_nodes_become_constants() -> None:
    graph = import_model(model_from_text(SMALL), simplify=False)
    assert "Constant" not in graph.op_counts()
    w = graph.initializers["w"]
    assert w.is_constant and w.type == TensorType(DType.FLOAT32, (4,))
    np.testing.assert_array_equal(w.const, [1, 2, 3, 4])
    mul = next(n for n in graph if n.op == "Mul")
    assert mul.inputs[1] is w


def test_attribute_defaults_are_filled() -> None:
    text = """
    <ir_version: 8, opset_import: ["" : 18]>
    g (float[1, 1, 4, 4] x) => (float[1, 1, 2, 2] y) {
      [pool] y = MaxPool <kernel_shape = [2, 2], strides = [2, 2]> (x)
    }
    """
    graph = import_model(model_from_text(text), simplify=False)
    pool = graph.find_node("pool")
    assert pool.attrs["kernel_shape"] == [2, 2]
    assert pool.attrs["auto_pad"] == "NOTSET" and pool.attrs["ceil_mode"] == 0


# -- opset conversion --------------------------------------------------------------------------
def test_opset8_model_converted_to_18() -> None:
    model = old_ir_model()
    graph = import_model(model, simplify=False)
    assert graph.opset("") == 18
    assert graph.meta["original_opsets"] == {"": 8}
    assert "converted opset 8 -> 18" in graph.meta["import_notes"]
    unsq = next(n for n in graph if n.op == "Unsqueeze")
    assert len(unsq.inputs) == 2 and unsq.inputs[1].is_constant, "axes became an input in 13"
    np.testing.assert_array_equal(unsq.inputs[1].const, [0])
    verify(graph)


def test_opset_conversion_can_be_turned_off() -> None:
    graph = import_model(old_ir_model(), simplify=False, convert_opset=False)
    assert graph.opset("") == 8
    assert not any("converted" in n for n in graph.meta["import_notes"])
    feeds = {"x": np.ones((2, 4), np.float32)}
    assert_matches_ort(graph, old_ir_model(), feeds)


# -- simplifier --------------------------------------------------------------------------------
def test_onnxsim_failure_still_imports(small: onnx.ModelProto, monkeypatch) -> None:
    import onnxsim

    def broken(*args, **kwargs):
        raise RuntimeError("simplifier exploded")

    monkeypatch.setattr(onnxsim, "simplify", broken)
    with pytest.warns(ModelImportWarning, match="onnxsim failed"):
        graph = import_model(small)
    assert any("onnxsim failed (simplifier exploded)" in n for n in graph.meta["import_notes"])
    feeds = random_inputs(graph, batch=3)
    assert_matches_ort(graph, small, feeds)


# -- external data -----------------------------------------------------------------------------
def test_external_data_model_loads_from_its_path(tmp_path: Path) -> None:
    weights = np.arange(64, dtype=np.float32).reshape(16, 4) / 7
    graph_proto = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "ext",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
        initializer=[numpy_helper.from_array(weights, "w")],
    )
    model = helper.make_model(graph_proto, opset_imports=[helper.make_opsetid("", 18)])
    path = tmp_path / "ext.onnx"
    onnx.save_model(model, path, save_as_external_data=True, all_tensors_to_one_file=True,
                    location="ext.onnx.data", size_threshold=0)  # fmt: skip
    assert (tmp_path / "ext.onnx.data").stat().st_size == weights.nbytes
    graph = import_model(path)
    np.testing.assert_array_equal(graph.initializers["w"].const, weights)
    feeds = {"x": np.ones((2, 16), np.float32)}
    np.testing.assert_allclose(run_reference(graph, feeds)["y"], feeds["x"] @ weights, rtol=1e-6)
    # Without its folder the data cannot be found: a clear error, not a crash.
    bare = onnx.load(path, load_external_data=False)
    with pytest.raises(ModelLoadError, match="external"):
        import_model(bare, check=False)


# -- subgraphs ---------------------------------------------------------------------------------
IF_MODEL = """
<ir_version: 8, opset_import: ["" : 18]>
g (float[N] x, bool c) => (float[N] y) {
  a = Relu(x)
  k = Constant <value = float[1] {2.0}> ()
  y = If(c) <
    then_branch = then_g () => (float[N] t) { t = Mul(a, k) },
    else_branch = else_g () => (float[N] e) { n = Neg(x)
                                              e = Add(a, n) }
  >
}
"""

LOOP_MODEL = """
<ir_version: 8, opset_import: ["" : 18]>
g (float[3] x, int64 n) => (float[3] acc_out, float[K, 3] scan_out) {
  one = Constant <value = float[1] {1.0}> ()
  cond0 = Constant <value = bool {1}> ()
  acc_out, scan_out = Loop(n, cond0, x) <
    body = body (int64 i, bool cin, float[3] acc) => (bool cout, float[3] acc2, float[3] s) {
      cout = Identity(cin)
      w = Mul(acc, x)
      acc2 = Add(w, one)
      s = Identity(acc2)
    }
  >
}
"""


@pytest.mark.parametrize("simplify", [False, True])
@pytest.mark.parametrize("cond", [True, False])
def test_if_with_captured_values(simplify: bool, cond: bool) -> None:
    model = model_from_text(IF_MODEL)
    graph = import_model(model, simplify=simplify)
    verify(graph)
    if_node = next(n for n in graph if n.op == "If")
    captured = {v.name for v in if_node.outer_values()}
    assert {"a", "x"} <= captured
    feeds = {"x": np.array([-1.0, 0.5, 2.0], np.float32), "c": np.array(cond)}
    assert_matches_ort(graph, model, feeds)


@pytest.mark.parametrize("simplify", [False, True])
def test_loop_with_captured_values(simplify: bool) -> None:
    model = model_from_text(LOOP_MODEL)
    graph = import_model(model, simplify=simplify)
    verify(graph)
    loop = next(n for n in graph if n.op == "Loop")
    assert "x" in {v.name for v in loop.outer_values()}
    for trips in (0, 1, 4):
        feeds = {"x": np.array([0.5, -1.0, 2.0], np.float32), "n": np.array(trips, np.int64)}
        ref = run_reference(graph, feeds)
        assert ref["scan_out"].shape == (trips, 3)
        assert_outputs_close(ref, run_onnxruntime(model, feeds))
