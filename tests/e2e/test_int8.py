"""int8 post-training quantization end to end: accuracy bars on trained models.

- scikit-learn's digits, a CNN trained here: int8 top-1 within 1 point of fp32;
- MNIST (``../shared/models/mnist``): calibrated on 500 test images, top-1 on all 10,000
  within 0.5 points of fp32 (98.91 %).

Each runs on the backends installed here (the integer ops compile to int8 kernels where the
backend has them, and run their reference kernels otherwise).
"""

from __future__ import annotations

import numpy as np
import pytest

import lepton_compiler
from lepton_compiler import Int8Config
from lepton_compiler.api import numba_available, tvm_available

from .digits_cnn import accuracy, load_digits_split, to_onnx, train
from .real_models import mnist_test_set, real_model

BACKENDS = (
    ["reference"] + (["tvm"] if tvm_available() else []) + (["numba"] if numba_available() else [])
)


@pytest.fixture(scope="module")
def digits() -> tuple[bytes, np.ndarray, np.ndarray, np.ndarray]:
    """The trained digits CNN (serialized), calibration images, test images and labels."""
    pytest.importorskip("sklearn")
    params = train()
    x_train, _, x_test, y_test = load_digits_split()
    return to_onnx(params).SerializeToString(), x_train[:256], x_test, y_test


@pytest.mark.parametrize("backend", BACKENDS)
def test_digits_cnn_int8_within_one_point(digits, backend: str) -> None:
    model, calib, x_test, y_test = digits
    fp32 = lepton_compiler.compile(model, backend="reference")
    base = accuracy(fp32.run({"image": x_test})["logits"], y_test)
    samples = [{"image": calib[i : i + 32]} for i in range(0, len(calib), 32)]
    int8 = lepton_compiler.compile(model, backend=backend, quantize=Int8Config(calibration=samples))
    ops = int8.report.op_counts_after
    assert "int8: 3 of 3 layers quantized" in int8.report.int8
    got = accuracy(int8.run({"image": x_test})["logits"], y_test)
    assert base > 95.0
    assert abs(got - base) <= 1.0, (base, got, ops)


def test_digits_int8_graph_is_integer(digits) -> None:
    model, calib, _, _ = digits
    compiled = lepton_compiler.compile(
        model, quantize=Int8Config(calibration=[{"image": calib[:64]}])
    )
    inner = [
        n.op
        for node in compiled.graph
        for n in (node.attrs["body"] if node.op == "lepton.Fused" else [node])
    ]
    assert inner.count("lepton.QConv") == 2 and inner.count("lepton.QMatMul") == 1
    assert "Conv" not in inner and "Gemm" not in inner
    # ReLU and the next layer's requantization are fused into each integer group
    fused = [n.attrs["body"] for n in compiled.graph if n.op == "lepton.Fused"]
    assert any(
        [b.op for b in body] == ["lepton.QConv", "Relu", "QuantizeLinear"]
        for body in [list(f) for f in fused]
    )


@pytest.mark.slow
def test_mnist_int8_within_half_a_point() -> None:
    path = real_model("mnist")
    images, labels = mnist_test_set()
    calib = [{"Input3": images[i : i + 1]} for i in range(500)]
    backend = "tvm" if tvm_available() else "reference"
    fp32 = lepton_compiler.compile(path, backend=backend)
    config = Int8Config(calibration=calib, samples=500)
    int8 = lepton_compiler.compile(path, backend=backend, quantize=config)
    assert int8.report.int8_layers and all(r["quantized"] for r in int8.report.int8_layers)

    def top1(model: lepton_compiler.CompiledModel) -> float:
        out = np.stack(
            [
                model.run({"Input3": images[i : i + 1]})["Plus214_Output_0"][0]
                for i in range(len(images))
            ]
        )
        return float((out.argmax(1) == labels).mean() * 100.0)

    base, got = top1(fp32), top1(int8)
    assert base == pytest.approx(98.91, abs=0.01)
    assert abs(got - base) <= 0.5, (base, got)


@pytest.mark.parametrize("name", ["small_cnn", "bert_tiny", "mlp"])
def test_benchmark_builders_int8_cosine(name: str) -> None:
    """The benchmark model builders (random weights, random inputs): int8 outputs keep a
    cosine similarity of at least 0.99 to fp32, every layer quantized."""
    from benchmarks.models import MODELS
    from benchmarks.runner import input_specs, make_inputs

    model = MODELS[name]()
    specs = input_specs(model)
    samples = [make_inputs(specs, seed=s) for s in range(1, 5)]
    data = model.SerializeToString()
    fp32 = lepton_compiler.compile(data)
    int8 = lepton_compiler.compile(data, quantize=Int8Config(calibration=samples, method="minmax"))
    rows = int8.report.int8_layers
    assert rows and all(r["quantized"] for r in rows)
    x = make_inputs(specs, seed=0)
    a = np.concatenate([v.ravel() for v in fp32.run(x).values()]).astype(np.float64)
    b = np.concatenate([v.ravel() for v in int8.run(x).values()]).astype(np.float64)
    assert float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)) >= 0.99
