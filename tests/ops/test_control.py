"""If, Loop and Scan run their bodies with our interpreter; compared with ONNX Runtime."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from lepton_compiler.frontend.onnx import import_model
from lepton_compiler.interpreter import run_graph


def _ort(model: onnx.ModelProto, feeds: dict) -> list:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def _check(model: onnx.ModelProto, feeds: dict) -> None:
    graph = import_model(model, simplify=False)
    ours = run_graph(graph, feeds)
    theirs = _ort(model, feeds)
    assert len(ours) == len(theirs)
    for (name, a), b in zip(ours.items(), theirs, strict=True):
        assert a.shape == b.shape, name
        np.testing.assert_allclose(a, b, rtol=1e-6, err_msg=name)


def _model(nodes, inputs, outputs, opset=18):
    g = helper.make_graph(nodes, "g", inputs, outputs)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def _vi(name, dtype, shape):
    return helper.make_tensor_value_info(name, dtype, shape)


@pytest.mark.parametrize("cond", [True, False])
def test_if_reads_outer_values(cond: bool) -> None:
    then_g = helper.make_graph(
        [helper.make_node("Add", ["x", "x"], ["t"])], "then", [],
        [_vi("t", TensorProto.FLOAT, [3])])  # fmt: skip
    else_g = helper.make_graph(
        [helper.make_node("Mul", ["x", "x"], ["e"])], "else", [],
        [_vi("e", TensorProto.FLOAT, [3])])  # fmt: skip
    node = helper.make_node("If", ["c"], ["y"], then_branch=then_g, else_branch=else_g)
    m = _model([node], [_vi("c", TensorProto.BOOL, []), _vi("x", TensorProto.FLOAT, [3])],
               [_vi("y", TensorProto.FLOAT, [3])])  # fmt: skip
    _check(m, {"c": np.array(cond), "x": np.array([1, 2, 3], np.float32)})


def test_loop_with_scalar_scan_output_stacks_to_1d() -> None:
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("Add", ["acc_in", "step"], ["acc_out"]),
         helper.make_node("Identity", ["acc_in"], ["scan"])],
        "body",
        [_vi("i", TensorProto.INT64, []), _vi("cond_in", TensorProto.BOOL, []),
         _vi("acc_in", TensorProto.FLOAT, [])],
        [_vi("cond_out", TensorProto.BOOL, []), _vi("acc_out", TensorProto.FLOAT, []),
         _vi("scan", TensorProto.FLOAT, [])],
    )  # fmt: skip
    node = helper.make_node("Loop", ["n", "c", "a0"], ["a", "s"], body=body)
    m = _model([node], [_vi("n", TensorProto.INT64, []), _vi("c", TensorProto.BOOL, []),
                        _vi("a0", TensorProto.FLOAT, []), _vi("step", TensorProto.FLOAT, [])],
               [_vi("a", TensorProto.FLOAT, []), _vi("s", TensorProto.FLOAT, [None])])  # fmt: skip
    feeds = {"n": np.array(4, np.int64), "c": np.array(True), "a0": np.array(1, np.float32),
             "step": np.array(0.5, np.float32)}  # fmt: skip
    _check(m, feeds)
    out = run_graph(import_model(m, simplify=False), feeds)
    assert out["s"].shape == (4,)


def test_scan_with_reverse_directions_and_axes() -> None:
    body = helper.make_graph(
        [helper.make_node("Add", ["s_in", "x"], ["s_out"]),
         helper.make_node("Identity", ["s_out"], ["y"])],
        "body", [_vi("s_in", TensorProto.FLOAT, [2]), _vi("x", TensorProto.FLOAT, [2])],
        [_vi("s_out", TensorProto.FLOAT, [2]), _vi("y", TensorProto.FLOAT, [2])],
    )  # fmt: skip
    node = helper.make_node("Scan", ["s0", "xs"], ["s", "ys"], body=body, num_scan_inputs=1,
                            scan_input_axes=[1], scan_input_directions=[1],
                            scan_output_axes=[1])  # fmt: skip
    ins = [_vi("s0", TensorProto.FLOAT, [2]), _vi("xs", TensorProto.FLOAT, [2, 5])]
    outs = [_vi("s", TensorProto.FLOAT, [2]), _vi("ys", TensorProto.FLOAT, [2, 5])]
    m = _model([node], ins, outs)
    rng = np.random.default_rng(0)
    xs = rng.standard_normal((2, 5)).astype(np.float32)
    _check(m, {"s0": np.zeros(2, np.float32), "xs": xs})
