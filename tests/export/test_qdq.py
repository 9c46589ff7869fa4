"""`lepton_compiler.quantize`: a float model in, a QDQ ONNX model out that ONNX Runtime runs
and that we compile back to integer kernels with the same numbers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import lepton_compiler
from lepton_compiler import Int8Config, LeptonError
from tests.passes.quant.test_quantize import _model, _samples


def _ops(proto) -> list[str]:
    return [n.op_type for n in proto.graph.node]


def test_qdq_model_runs_in_onnxruntime_and_back(tmp_path: Path) -> None:
    model = _model()
    out = tmp_path / "q.onnx"
    proto, report = lepton_compiler.quantize(model, Int8Config(calibration=_samples()), out)
    assert report.quantized == 4
    ops = _ops(proto)
    assert ops.count("QuantizeLinear") == 4  # one per layer input
    assert ops.count("DequantizeLinear") == 4 + 4 + 1  # activations, weights, conv1's bias
    assert set(ops) <= {
        "QuantizeLinear",
        "DequantizeLinear",
        "Conv",
        "Relu",
        "Flatten",
        "MatMul",
        "Gemm",
    }
    x = _samples(1)[0]
    theirs = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, x)[0]
    fp32 = lepton_compiler.compile(model).run(x)["y"]
    ours = lepton_compiler.compile(str(out)).run(x)["y"]
    compiled = lepton_compiler.compile(str(out))
    assert "lepton.QMatMul" in compiled.report.op_counts_after or any(
        g["anchor"] == "lepton.QConv" for g in compiled.report.fused_groups
    )
    scale = float(np.abs(fp32).max())
    assert np.abs(ours - theirs).max() <= 0.02 * scale
    assert np.abs(ours - fp32).max() <= 0.05 * scale


def test_model_without_layers_is_an_error(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    out = tmp_path / "q.onnx"
    with pytest.raises(LeptonError, match="no Conv, Gemm or MatMul layer"):
        lepton_compiler.quantize(
            model, Int8Config(calibration=[{"x": np.ones(2, np.float32)}]), out
        )
    assert not out.exists()


def test_unwritable_output_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(LeptonError, match="cannot write"):
        lepton_compiler.quantize(
            _model(), Int8Config(calibration=_samples(1)), tmp_path / "missing" / "q.onnx"
        )
    assert not (tmp_path / "missing").exists()
