"""IR → ONNX: exported models pass the checker and match the reference interpreter in ORT."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from lepton_compiler.errors import ArtifactError
from lepton_compiler.export.onnx import export_model, save_model
from lepton_compiler.frontend.onnx import import_model
from lepton_compiler.ir import DType, Graph, Node, TensorType, Value, verify
from lepton_compiler.testing import (
    assert_outputs_close,
    graph_from_text,
    random_inputs,
    run_onnxruntime,
    run_reference,
)

pytestmark = pytest.mark.filterwarnings("ignore::lepton_compiler.frontend.onnx.ModelImportWarning")


def exported_and_checked(graph: Graph, **kwargs) -> onnx.ModelProto:
    model = export_model(graph, **kwargs)
    onnx.checker.check_model(model, full_check=True)
    return model


def assert_round_trip(graph: Graph, feeds: dict) -> onnx.ModelProto:
    """Export, check, run in ORT and compare with the reference interpreter."""
    model = exported_and_checked(graph)
    assert_outputs_close(run_onnxruntime(model, feeds), run_reference(graph, feeds),
                         rtol=1e-4, atol=1e-5)  # fmt: skip
    return model


# -- a small conv net --------------------------------------------------------------------------
def conv_net(batch: int | str = 1) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w1")
    b1 = numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "b1")
    fc = numpy_helper.from_array(rng.standard_normal((8 * 4 * 4, 10)).astype(np.float32), "fc")
    shape = numpy_helper.from_array(np.array([0, -1], np.int64), "shape")
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("MaxPool", ["r"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Reshape", ["p", "shape"], ["f"], name="flatten"),
        helper.make_node("MatMul", ["f", "fc"], ["logits"], name="fc"),
        helper.make_node("Softmax", ["logits"], ["y"], name="softmax", axis=-1),
    ]
    graph = helper.make_graph(
        nodes,
        "convnet",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 10])],
        initializer=[w1, b1, fc, shape],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.checker.check_model(model)
    return model


def test_conv_net_round_trip() -> None:
    original = conv_net()
    graph = import_model(original, simplify=False)
    feeds = random_inputs(graph, seed=3)
    model = assert_round_trip(graph, feeds)
    assert [n.op_type for n in model.graph.node] == [
        "Conv", "Relu", "MaxPool", "Reshape", "MatMul", "Softmax"
    ]  # fmt: skip
    assert_outputs_close(run_onnxruntime(model, feeds), run_onnxruntime(original, feeds),
                         rtol=1e-5, atol=1e-6)  # fmt: skip
    # Exporting is deterministic and re-importing gives the same graph text.
    assert export_model(graph).SerializeToString() == model.SerializeToString()
    again = import_model(model, simplify=False)
    assert str(again).replace("convnet", "main") == str(graph).replace("convnet", "main")


def test_symbolic_batch_survives_export() -> None:
    graph = import_model(conv_net("batch"))
    model = exported_and_checked(graph)
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert model.graph.output[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    for batch in (1, 3):
        feeds = random_inputs(graph, seed=batch, batch=batch)
        out = run_onnxruntime(model, feeds)
        assert out["y"].shape == (batch, 10)
        assert_outputs_close(out, run_reference(graph, feeds), rtol=1e-4, atol=1e-5)


def test_export_metadata() -> None:
    graph = import_model(conv_net(), simplify=False)
    graph.meta["metadata_props"] = {"author": "tests"}
    model = exported_and_checked(graph)
    assert model.producer_name == "lepton-compiler"
    assert {p.key: p.value for p in model.metadata_props} == {"author": "tests"}
    assert {o.domain: o.version for o in model.opset_import} == {"": 18}


# -- subgraphs ---------------------------------------------------------------------------------
IF_LOOP = """
<ir_version: 8, opset_import: ["" : 18]>
g (float[N] x, bool c, int64 n) => (float[N] y, float[N] acc, float[K, N] scans) {
  a = Relu(x)
  k = Constant <value = float[1] {2.0}> ()
  y = If(c) <
    then_branch = then_g () => (float[N] t) { t = Mul(a, k) },
    else_branch = else_g () => (float[N] e) { e = Sub(a, x) }
  >
  cond0 = Constant <value = bool {1}> ()
  acc, scans = Loop(n, cond0, y) <
    body = body (int64 i, bool cin, float[N] s) => (bool cout, float[N] s2, float[N] o) {
      cout = Identity(cin)
      s2 = Add(s, a)
      o = Mul(s2, k)
    }
  >
}
"""


@pytest.mark.parametrize("cond", [True, False])
def test_if_and_loop_round_trip(cond: bool) -> None:
    graph = graph_from_text(IF_LOOP)
    verify(graph)
    feeds = {
        "x": np.array([-1.0, 0.5, 3.0], np.float32),
        "c": np.array(cond),
        "n": np.array(3, np.int64),
    }
    model = assert_round_trip(graph, feeds)
    ops = [n.op_type for n in model.graph.node]
    assert "If" in ops and "Loop" in ops
    # Captures stay captures: the exported bodies read `a` and `k` from the outer graph.
    loop = next(n for n in model.graph.node if n.op_type == "Loop")
    body = loop.attribute[0].g
    assert {"a", "k"} <= {i for n in body.node for i in n.input}
    assert {"a", "k"}.isdisjoint({v.name for v in body.input})


# -- fused groups ------------------------------------------------------------------------------
def fused_graph() -> tuple[Graph, Node]:
    """``y = lepton.Fused[Conv + Relu](x, w)`` followed by a plain Neg, built by hand."""
    rng = np.random.default_rng(7)
    x = Value("x", TensorType(DType.FLOAT32, (1, 2, 5, 5)))
    g = Graph(inputs=[x], name="main", opset_imports={"": 18})
    w = g.add_constant(rng.standard_normal((4, 2, 3, 3)).astype(np.float32), name="w")

    bx = Value("bx", TensorType(DType.FLOAT32, (1, 2, 5, 5)))
    bw = Value("bw", TensorType(DType.FLOAT32, (4, 2, 3, 3)))
    body = Graph(inputs=[bx, bw], name="fused_body")
    bias = body.add_constant(rng.standard_normal(4).astype(np.float32), name="bias")
    conv = body.make_node("Conv", [bx, bw, bias], {"pads": [1, 1, 1, 1]}, name="f_conv")
    conv.output.type = TensorType(DType.FLOAT32, (1, 4, 5, 5))
    relu = body.make_node("Relu", [conv.output], name="f_relu")
    relu.output.type = TensorType(DType.FLOAT32, (1, 4, 5, 5))
    body.outputs = [relu.output]

    out = Value("fused_out", TensorType(DType.FLOAT32, (1, 4, 5, 5)))
    fused = g.append(Node("lepton.Fused", [x, w], {"body": body}, outputs=[out], name="fused"))
    neg = g.make_node("Neg", [out], name="neg")
    neg.output.type = out.type
    g.outputs = [neg.output]
    return g, fused


def test_fused_group_is_inlined_and_runs_in_onnxruntime() -> None:
    graph, fused = fused_graph()
    verify(graph)
    assert fused.output.type == TensorType(DType.FLOAT32, (1, 4, 5, 5))
    feeds = random_inputs(graph, seed=1)
    model = assert_round_trip(graph, feeds)
    ops = [n.op_type for n in model.graph.node]
    assert ops == ["Constant", "Conv", "Relu", "Neg"]
    assert all(n.domain == "" for n in model.graph.node)
    assert {o.domain for o in model.opset_import} == {""}
    # The body's values are wired to the node's: Conv reads x and w, Relu writes fused_out.
    conv = model.graph.node[1]
    assert list(conv.input[:2]) == ["x", fused.inputs[1].name]
    assert list(model.graph.node[2].output) == ["fused_out"]
    # And both agree with plain numpy.
    body = fused.attrs["body"]
    w, bias = fused.inputs[1].const, next(iter(body.initializers.values())).const
    xp = np.pad(feeds["x"], ((0, 0), (0, 0), (1, 1), (1, 1)))
    patches = np.lib.stride_tricks.sliding_window_view(xp, (3, 3), axis=(2, 3))
    conv = np.einsum("nchwkl,ockl->nohw", patches, w) + bias[None, :, None, None]
    out_name = graph.outputs[0].name
    np.testing.assert_allclose(run_onnxruntime(model, feeds)[out_name], -np.maximum(conv, 0),
                               rtol=1e-4, atol=1e-5)  # fmt: skip


def test_fused_group_kept_when_not_inlined() -> None:
    graph, _ = fused_graph()
    model = export_model(graph, inline_fused=False)
    fused = next(n for n in model.graph.node if n.op_type == "Fused")
    assert fused.domain == "lepton"
    assert {o.domain: o.version for o in model.opset_import}["lepton"] == 1
    body = fused.attribute[0].g
    assert [n.op_type for n in body.node] == ["Conv", "Relu"]


def test_fused_group_returning_its_input_and_a_capture() -> None:
    """Body outputs that are a body input, an outer value or repeated need an Identity each."""
    x = Value("x", TensorType(DType.FLOAT32, (3,)))
    g = Graph(inputs=[x], name="main", opset_imports={"": 18})
    outer = g.make_node("Exp", [x], name="exp")
    outer.output.type = x.type
    bx = Value("bx", x.type)
    body = Graph(inputs=[bx], name="body")
    s = body.make_node("Sigmoid", [outer.output], name="sig")  # a capture of %exp_0
    s.output.type = x.type
    body.outputs = [bx, s.output, outer.output, s.output]
    outs = [Value(f"o{i}", x.type) for i in range(4)]
    g.append(Node("lepton.Fused", [x], {"body": body}, outputs=outs, name="fused"))
    g.outputs = outs
    verify(g)
    feeds = {"x": np.array([-1.0, 0.0, 2.0], np.float32)}
    model = assert_round_trip(g, feeds)
    assert [n.op_type for n in model.graph.node] == [
        "Exp", "Sigmoid", "Identity", "Identity", "Identity"
    ]  # fmt: skip
    out = run_onnxruntime(model, feeds)
    np.testing.assert_array_equal(out["o0"], feeds["x"])
    np.testing.assert_allclose(out["o1"], 1 / (1 + np.exp(-np.exp(feeds["x"]))), rtol=1e-6)
    np.testing.assert_allclose(out["o2"], np.exp(feeds["x"]), rtol=1e-6)
    np.testing.assert_array_equal(out["o3"], out["o1"])


# -- element types -----------------------------------------------------------------------------
def test_string_tensors() -> None:
    x = Value("x", TensorType(DType.STRING, (2,)))
    g = Graph(inputs=[x], name="main", opset_imports={"": 18})
    words = g.add_constant(np.array(["apple", "kiwi", "plum"], dtype=object), name="words")
    cat = g.make_node("Concat", [x, words], {"axis": 0}, name="cat")
    cat.output.type = TensorType(DType.STRING, (5,))
    same = g.make_node("Identity", [words], name="copy")
    same.output.type = words.type
    g.outputs = [cat.output, same.output]
    verify(g)
    feeds = {"x": np.array(["pear", "ünïcode"], dtype=object)}
    model = assert_round_trip(g, feeds)
    init = next(t for t in model.graph.initializer if t.name == words.name)
    assert init.data_type == TensorProto.STRING
    assert list(init.string_data) == [b"apple", b"kiwi", b"plum"]
    out = run_onnxruntime(model, feeds)
    assert out[cat.output.name].tolist() == ["pear", "ünïcode", "apple", "kiwi", "plum"]
    again = import_model(model, simplify=False)
    assert again.initializers[words.name].const.tolist() == ["apple", "kiwi", "plum"]


def test_int8_and_float16_constants() -> None:
    x = Value("x", TensorType(DType.FLOAT16, (2, 2)))
    g = Graph(inputs=[x], name="main", opset_imports={"": 18})
    q = g.add_constant(np.array([[-128, 5], [127, 0]], np.int8), name="q")
    h = g.add_constant(np.array([0.5, -1.25], np.float16), name="h")
    cast = g.make_node("Cast", [q], {"to": DType.FLOAT16.onnx_code}, name="cast")
    cast.output.type = TensorType(DType.FLOAT16, (2, 2))
    add = g.make_node("Add", [cast.output, h], name="add")
    add.output.type = TensorType(DType.FLOAT16, (2, 2))
    mul = g.make_node("Mul", [add.output, x], name="mul")
    mul.output.type = TensorType(DType.FLOAT16, (2, 2))
    g.outputs = [mul.output, q]
    verify(g)
    feeds = {"x": np.array([[1, 2], [0.5, -1]], np.float16)}
    model = assert_round_trip(g, feeds)
    types = {t.name: t.data_type for t in model.graph.initializer}
    assert types == {q.name: TensorProto.INT8, h.name: TensorProto.FLOAT16}
    out = run_onnxruntime(model, feeds)
    assert out[mul.output.name].dtype == np.float16 and out[q.name].dtype == np.int8
    expected = (np.array([[-128, 5], [127, 0]], np.float16) + h.const) * feeds["x"]
    np.testing.assert_array_equal(out[mul.output.name], expected)


# -- save_model --------------------------------------------------------------------------------
def test_save_model_writes_a_loadable_file(tmp_path: Path) -> None:
    graph = import_model(conv_net(), simplify=False)
    path = tmp_path / "out.onnx"
    save_model(graph, path)
    loaded = onnx.load(path)
    onnx.checker.check_model(loaded)
    feeds = random_inputs(graph)
    assert_outputs_close(run_onnxruntime(loaded, feeds), run_reference(graph, feeds),
                         rtol=1e-4, atol=1e-5)  # fmt: skip


@pytest.mark.parametrize("where", ["missing_dir", "directory"])
def test_save_model_to_an_unwritable_path(tmp_path: Path, where: str) -> None:
    graph = import_model(conv_net(), simplify=False)
    path = tmp_path / "no" / "such" / "dir" / "m.onnx" if where == "missing_dir" else tmp_path
    with pytest.raises(ArtifactError, match="cannot write") as info:
        save_model(graph, path)
    assert os.fspath(path) in str(info.value)
