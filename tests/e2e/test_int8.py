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


def _resnet_block_model() -> bytes:
    """Stem conv + ReLU + MaxPool, a residual block, GlobalAveragePool and a Gemm: every
    int8 group kind of ResNet-50 (requantizing epilogues, residuals read as uint8, the pool with a
    QuantizeLinear epilogue, a lone QuantizeLinear)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)

    def w(name: str, *shape: int) -> object:
        scale = np.sqrt(2.0 / np.prod(shape[1:]))
        return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32),
                                       name)  # fmt: skip

    nodes = [
        helper.make_node("Conv", ["x", "w0"], ["c0"], pads=[3, 3, 3, 3], strides=[2, 2]),
        helper.make_node("Relu", ["c0"], ["r0"]),
        helper.make_node(
            "MaxPool", ["r0"], ["p0"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]
        ),
        helper.make_node("Conv", ["p0", "w1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c2", "p0"], ["s2"]),
        helper.make_node("Relu", ["s2"], ["r2"]),
        helper.make_node("Conv", ["r2", "w3"], ["c3"]),
        helper.make_node("Add", ["c3", "r2"], ["s3"]),
        helper.make_node("GlobalAveragePool", ["s3"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "wf", "bf"], ["y"], transB=1),
    ]
    inits = [w("w0", 16, 3, 7, 7), w("w1", 16, 16, 3, 3), w("w2", 16, 16, 3, 3),
             w("w3", 16, 16, 1, 1), w("wf", 10, 16),
             numpy_helper.from_array(np.zeros(10, np.float32), "bf")]  # fmt: skip
    graph = helper.make_graph(
        nodes, "block", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], inits,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]).SerializeToString()


@pytest.mark.skipif(not tvm_available(), reason="needs apache-tvm")
def test_tvm_int8_resnet_block_runs_in_integer_kernels() -> None:
    model = _resnet_block_model()
    rng = np.random.default_rng(4)
    samples = [{"x": rng.standard_normal((1, 3, 32, 32)).astype(np.float32)} for _ in range(4)]
    config = Int8Config(calibration=samples, method="minmax")
    ref = lepton_compiler.compile(model, quantize=config)
    tvm = lepton_compiler.compile(model, backend="tvm", quantize=config)
    assert tvm.report.fallbacks == []
    kinds = [g["anchor"] + "+" + "+".join(g["epilogue"]) for g in tvm.report.fused_groups]
    assert "lepton.QConv+Relu+QuantizeLinear" in kinds  # requantized in the store
    # the residual read as uint8 and dequantized in the kernel
    assert "lepton.QConv+DequantizeLinear+Add+Relu+QuantizeLinear" in kinds
    # the stem's MaxPool pools the requantized uint8 tensor
    assert not any(k.startswith("MaxPool") for k in kinds)
    assert [str(n.output.dtype) for n in tvm.graph if n.op == "MaxPool"] == ["uint8"]
    x = {"x": rng.standard_normal((1, 3, 32, 32)).astype(np.float32)}
    a, b = ref.run(x)["y"], tvm.run(x)["y"]
    # requantization may round a tie the other way: a few output steps at most
    assert np.abs(a - b).max() <= 0.02 * np.abs(a).max()


@pytest.mark.skipif(not tvm_available(), reason="needs apache-tvm")
def test_tvm_maxpool_runs_on_uint8() -> None:
    """The QuantizeLinear after the stem's MaxPool moves before it (``quantize_before_maxpool``):
    the stem group requantizes in its store and the MaxPool is a uint8 TVM kernel."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(5)
    w0 = numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w0")
    w1 = numpy_helper.from_array(rng.standard_normal((4, 8, 1, 1)).astype(np.float32), "w1")
    nodes = [
        helper.make_node("Conv", ["x", "w0"], ["c0"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c0"], ["r0"]),
        helper.make_node("MaxPool", ["r0"], ["p0"], kernel_shape=[3, 3], strides=[2, 2]),
        helper.make_node("Conv", ["p0", "w1"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "pool",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 13, 13])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 6, 6])],
        [w0, w1],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    samples = [{"x": rng.standard_normal((1, 3, 13, 13)).astype(np.float32)} for _ in range(2)]
    config = Int8Config(calibration=samples, method="minmax")
    data = model.SerializeToString()
    tvm = lepton_compiler.compile(data, backend="tvm", quantize=config)
    assert tvm.report.fallbacks == []
    kinds = [g["anchor"] + "+" + "+".join(g["epilogue"]) for g in tvm.report.fused_groups]
    assert "lepton.QConv+Relu+QuantizeLinear" in kinds
    assert not any(k.startswith("MaxPool") for k in kinds)
    (pool,) = [n for n in tvm.graph if n.op == "MaxPool"]
    assert str(pool.inputs[0].dtype) == str(pool.output.dtype) == "uint8"
    pools = [k for k in tvm.executor.kernels if k.family == "pool"]
    assert [(k.param_dtypes, k.output_dtypes) for k in pools] == [(["uint8"], ["uint8"])]
    x = samples[0]
    ref = lepton_compiler.compile(data, quantize=config).run(x)["y"]
    got = tvm.run(x)["y"]
    assert np.abs(got - ref).max() <= 0.02 * np.abs(ref).max()


@pytest.mark.slow
@pytest.mark.skipif(not tvm_available(), reason="needs apache-tvm")
@pytest.mark.parametrize("name", ["mobilenetv2", "resnet50"])
def test_tvm_int8_standard_models_run_natively(name: str) -> None:
    """MobileNetV2 (depthwise convolutions stay float and requantize in their store) and
    ResNet-50: every op in TVM kernels, output cosine to fp32 >= 0.99 (random weights and
    inputs, minmax calibration on 2 samples)."""
    from benchmarks.models import MODELS
    from benchmarks.runner import input_specs, make_inputs

    model = MODELS[name]()
    specs = input_specs(model)
    samples = [make_inputs(specs, seed=s) for s in (1, 2)]
    data = model.SerializeToString()
    config = Int8Config(calibration=samples, method="minmax", eval_samples=1)
    int8 = lepton_compiler.compile(data, backend="tvm", quantize=config)
    assert int8.report.fallbacks == []
    x = make_inputs(specs, seed=0)
    a = np.concatenate([v.ravel() for v in lepton_compiler.compile(data).run(x).values()])
    b = np.concatenate([v.ravel() for v in int8.run(x).values()])
    a, b = a.astype(np.float64), b.astype(np.float64)
    assert float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)) >= 0.99


@pytest.mark.parametrize("backend", BACKENDS)
def test_int8_artifact_round_trip(digits, backend: str, tmp_path) -> None:
    """An int8 model saved as an artifact loads (no calibration, no recompilation of the
    quantization) and gives the same outputs; its report keeps the int8 table."""
    model, calib, x_test, _ = digits
    int8 = lepton_compiler.compile(
        model, backend=backend, quantize=Int8Config(calibration=[{"image": calib[:64]}])
    )
    path = int8.save(tmp_path / "digits.lepton")
    again = lepton_compiler.load(path)
    x = {"image": x_test[:16]}
    np.testing.assert_array_equal(again.run(x)["logits"], int8.run(x)["logits"])
    assert again.report.int8 == int8.report.int8
