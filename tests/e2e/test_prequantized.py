"""Pre-quantized models from ONNX Runtime's quantizer import, canonicalize and run.

Small float models built here (a CNN with Conv+Relu, a residual Add, pooling, Sigmoid/Mul,
LeakyRelu, Concat, Gemm, MatMul and Softmax; an MLP of MatMul+Add) are quantized by
``onnxruntime.quantization`` in QOperator and QDQ form, per tensor and per channel, uint8 and
int8 activations (``quantize_static`` with a small calibration reader), and dynamically
(``quantize_dynamic``). Each quantized model is imported, rewritten by ``qoperator_to_qdq``,
run by the reference interpreter and by ``compile(..., backend="reference")``, and compared
with ONNX Runtime's run of the same file.

Tolerance: ``TOLERANCE_STEPS`` steps of the output's quantization scale. Our QDQ form rounds
in float where ONNX Runtime's integer kernels use fixed-point requantization, so a tie can land
one step apart in a layer and move a later layer by a step or two; a real error (a wrong
scale, a lost zero point, a swapped axis) is off by many steps. Dynamically quantized models
have float outputs computed from exact integer sums: they agree to float rounding.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import lepton_compiler
from lepton_compiler.frontend.onnx import import_any
from lepton_compiler.interpreter import run_graph
from lepton_compiler.ir import Graph, TensorType
from lepton_compiler.pass_manager import PassContext, get_pass

ort = pytest.importorskip("onnxruntime")
quantization = pytest.importorskip("onnxruntime.quantization")

#: Allowed distance from ONNX Runtime, in steps of the output's quantization scale.
TOLERANCE_STEPS = 3
#: Ops that must be gone after canonicalization.
QOPERATOR_OPS = {"QLinearConv", "QLinearMatMul", "MatMulInteger", "ConvInteger"}
SAMPLES = 4


def _w(rng: np.random.Generator, name: str, *shape: int, scale: float = 0.3) -> TensorProto:
    return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)


def _cnn(rng: np.random.Generator) -> onnx.ModelProto:
    mk = helper.make_node
    nodes = [
        mk("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        mk("Relu", ["c1"], ["r1"]),
        mk("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
        mk("Relu", ["c2"], ["r2"]),
        mk("Add", ["r1", "r2"], ["res"]),
        mk("MaxPool", ["res"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        mk("AveragePool", ["p"], ["ap"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        mk("Sigmoid", ["ap"], ["sg"]),
        mk("Mul", ["ap", "sg"], ["sw"]),
        mk("LeakyRelu", ["sw"], ["lr"], alpha=0.1),
        mk("Concat", ["lr", "p"], ["cc"], axis=1),
        mk("GlobalAveragePool", ["cc"], ["g"]),
        mk("Flatten", ["g"], ["f"]),
        mk("Gemm", ["f", "w3", "b3"], ["h"], transB=1),
        mk("MatMul", ["h", "w4"], ["logits"]),
        mk("Softmax", ["logits"], ["y"], axis=-1),
    ]
    inits = [
        _w(rng, "w1", 8, 3, 3, 3),
        _w(rng, "b1", 8),
        _w(rng, "w2", 8, 8, 3, 3),
        _w(rng, "b2", 8),
        _w(rng, "w3", 10, 16),
        _w(rng, "b3", 10),
        _w(rng, "w4", 10, 6),
    ]
    graph = helper.make_graph(
        nodes,
        "cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _mlp(rng: np.random.Generator) -> onnx.ModelProto:
    mk = helper.make_node
    nodes = [
        mk("MatMul", ["x", "w1"], ["m1"]),
        mk("Add", ["m1", "b1"], ["a1"]),
        mk("Relu", ["a1"], ["r1"]),
        mk("MatMul", ["r1", "w2"], ["m2"]),
        mk("Add", ["m2", "b2"], ["y"]),
    ]
    inits = [_w(rng, "w1", 16, 32), _w(rng, "b1", 32), _w(rng, "w2", 32, 5), _w(rng, "b2", 5)]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 5])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


MODELS = {"cnn": _cnn, "mlp": _mlp}


def _inputs(model: onnx.ModelProto, count: int, seed: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    vi = model.graph.input[0]
    shape = [d.dim_value for d in vi.type.tensor_type.shape.dim]
    return [{vi.name: rng.standard_normal(shape).astype(np.float32)} for _ in range(count)]


class _Reader(quantization.CalibrationDataReader):
    """Feeds a fixed list of input dicts to ONNX Runtime's calibrator."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self._it: Iterator[dict[str, np.ndarray]] = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)


def _float_model(tmp_path: Path, name: str) -> tuple[Path, onnx.ModelProto]:
    model = MODELS[name](np.random.default_rng(0))
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, path)
    return path, model


def _output_scale(path: Path) -> float:
    """The scale of the DequantizeLinear that produces the model's output."""
    model = onnx.load(path)
    out = model.graph.output[0].name
    node = next(n for n in model.graph.node if out in n.output)
    assert node.op_type == "DequantizeLinear"
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    return float(inits[node.input[1]].reshape(()))


def _static(t: object) -> bool:
    return isinstance(t, TensorType) and t.is_static


def _canonical(path: Path) -> Graph:
    """Import and canonicalize; no QOperator op may remain."""
    graph = import_any(str(path))
    get_pass("qoperator_to_qdq")()(graph, PassContext(verify_each=True))
    left = [n.op for n in graph if n.domain or n.op in QOPERATOR_OPS]
    assert not left, f"QOperator ops left after canonicalization: {left}"
    unknown = [v.name for n in graph for v in n.outputs if not _static(v.type)]
    assert not unknown, f"values without a static type: {unknown}"
    return graph


def _check_against_onnxruntime(path: Path, feeds: list[dict[str, np.ndarray]], atol: float) -> None:
    """Canonicalized and run by the interpreter, and compiled: both within `atol` of ONNX
    Runtime's run of the file."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    theirs = [session.run(None, f)[0] for f in feeds]
    graph = _canonical(path)
    ours = [run_graph(graph, f)["y"] for f in feeds]
    compiled = lepton_compiler.compile(str(path), backend="reference")
    compiled_out = [compiled.run(f)["y"] for f in feeds]
    for a, b, c in zip(ours, compiled_out, theirs, strict=True):
        assert a.shape == c.shape and a.dtype == c.dtype
        np.testing.assert_allclose(a, c, rtol=0, atol=atol)
        np.testing.assert_allclose(b, c, rtol=0, atol=atol)


@pytest.mark.parametrize("name", ["cnn", "mlp"])
@pytest.mark.parametrize("quant_format", ["QOperator", "QDQ"])
@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("activation", ["QUInt8", "QInt8"])
def test_static_quantized_model_matches_onnxruntime(
    tmp_path: Path, name: str, quant_format: str, per_channel: bool, activation: str
) -> None:
    src, model = _float_model(tmp_path, name)
    dst = tmp_path / f"{name}_{quant_format}.onnx"
    quantization.quantize_static(
        str(src),
        str(dst),
        _Reader(_inputs(model, 16, seed=1)),
        quant_format=getattr(quantization.QuantFormat, quant_format),
        per_channel=per_channel,
        activation_type=getattr(quantization.QuantType, activation),
        weight_type=quantization.QuantType.QInt8,
    )
    kinds = {n.op_type for n in onnx.load(dst).graph.node}
    assert ("QLinearMatMul" if quant_format == "QOperator" else "DequantizeLinear") in kinds
    feeds = _inputs(model, SAMPLES, seed=2)
    _check_against_onnxruntime(dst, feeds, TOLERANCE_STEPS * _output_scale(dst) * 1.0001)


@pytest.mark.parametrize("name", ["cnn", "mlp"])
def test_dynamically_quantized_model_matches_onnxruntime(tmp_path: Path, name: str) -> None:
    src, model = _float_model(tmp_path, name)
    dst = tmp_path / f"{name}_dynamic.onnx"
    quantization.quantize_dynamic(str(src), str(dst), weight_type=quantization.QuantType.QInt8)
    ops = {n.op_type for n in onnx.load(dst).graph.node}
    assert ops & {"MatMulInteger", "ConvInteger"}
    feeds = _inputs(model, SAMPLES, seed=2)
    _check_against_onnxruntime(dst, feeds, 1e-5)


def _contrib_model(
    op: str,
    ins: list[str],
    inits: dict[str, np.ndarray],
    x_shape: list[int],
    x_type: int,
    out_type: int,
    out_rank: int = 2,
    **attrs: object,
) -> onnx.ModelProto:
    node = helper.make_node(op, ins, ["y"], domain="com.microsoft", **attrs)
    graph = helper.make_graph(
        [node],
        "one",
        [helper.make_tensor_value_info("x", x_type, x_shape)],
        [helper.make_tensor_value_info("y", out_type, [None] * out_rank)],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    return helper.make_model(graph, opset_imports=opsets)


def _contrib_cases() -> dict[str, onnx.ModelProto]:
    """One model per ONNX Runtime contrib op (or variant) the CNN does not produce."""
    rng = np.random.default_rng(3)
    f32, u8, i8 = np.float32, np.uint8, np.int8
    qp = {
        "xs": np.array(0.05, f32),
        "xz": np.array(128, u8),
        "ys": np.array(0.03, f32),
        "yz": np.array(120, u8),
    }
    cond = {"c": rng.integers(0, 2, (4,)).astype(bool), "o": rng.integers(0, 255, (4,)).astype(u8)}
    b = rng.integers(-127, 127, (6, 4)).astype(i8)
    bs = np.linspace(0.01, 0.02, 4).astype(f32)
    T = TensorProto
    return {
        "QLinearWhere": _contrib_model(
            "QLinearWhere",
            ["c", "x", "xs", "xz", "o", "ys", "yz", "ys", "yz"],
            {**qp, **cond},
            [3, 4],
            T.UINT8,
            T.UINT8,
        ),
        "QLinearAveragePool": _contrib_model(
            "QLinearAveragePool",
            ["x", "xs", "xz", "ys", "yz"],
            qp,
            [1, 2, 5, 5],
            T.UINT8,
            T.UINT8,
            4,
            kernel_shape=[3, 3],
            pads=[1, 1, 1, 1],
            count_include_pad=1,
        ),
        "QLinearGlobalAveragePool_nhwc": _contrib_model(
            "QLinearGlobalAveragePool",
            ["x", "xs", "xz", "ys", "yz"],
            qp,
            [2, 3, 3, 4],
            T.UINT8,
            T.UINT8,
            4,
            channels_last=1,
        ),
        "QGemm_float_out": _contrib_model(
            "QGemm",
            ["x", "xs", "xz", "b", "bs", "bz", "c"],
            {
                **qp,
                "b": b,
                "bs": bs,
                "bz": np.zeros(4, i8),
                "c": rng.integers(-300, 300, 4).astype(np.int32),
            },
            [3, 6],
            T.UINT8,
            T.FLOAT,
            alpha=0.5,
        ),
        "DynamicQuantizeMatMul": _contrib_model(
            "DynamicQuantizeMatMul",
            ["x", "b", "bs", "bz", "bias"],
            {"b": b, "bs": bs, "bz": np.zeros(4, i8), "bias": np.arange(4, dtype=f32)},
            [3, 6],
            T.FLOAT,
            T.FLOAT,
        ),
        "MatMulIntegerToFloat": _contrib_model(
            "MatMulIntegerToFloat",
            ["x", "b", "xs", "bs", "xz"],
            {**qp, "b": b, "bs": bs},
            [3, 6],
            T.UINT8,
            T.FLOAT,
        ),
    }


@pytest.mark.parametrize("case", sorted(_contrib_cases()))
def test_contrib_op_matches_onnxruntime(tmp_path: Path, case: str) -> None:
    """Our reference of the op, and its QDQ rewrite, agree with ONNX Runtime's kernel (quantized
    outputs within one step, float outputs to float rounding)."""
    model = _contrib_cases()[case]
    path = tmp_path / f"{case}.onnx"
    onnx.save(model, path)
    vi = model.graph.input[0]
    shape = [d.dim_value for d in vi.type.tensor_type.shape.dim]
    rng = np.random.default_rng(4)
    if vi.type.tensor_type.elem_type == TensorProto.FLOAT:
        x = rng.standard_normal(shape).astype(np.float32)
    else:
        x = rng.integers(0, 256, shape).astype(np.uint8)
    theirs = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"x": x}
    )[0]
    reference = run_graph(import_any(str(path)), {"x": x})["y"]
    rewritten = run_graph(_canonical(path), {"x": x})["y"]
    for ours in (reference, rewritten):
        assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
        if theirs.dtype.kind == "f":
            np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)
        else:
            assert np.abs(ours.astype(np.int32) - theirs.astype(np.int32)).max() <= 1


@pytest.mark.parametrize("quant_format", ["QOperator", "QDQ"])
@pytest.mark.parametrize("backend", ["tvm", "numba"])
def test_prequantized_cnn_on_backends(tmp_path: Path, quant_format: str, backend: str) -> None:
    """ONNX Runtime's int8 CNN (per-channel, uint8 activations) compiled for a backend: the
    convolutions become integer kernels, the MaxPool a uint8 kernel, and the outputs stay
    within int8 rounding of ONNX Runtime's."""
    from lepton_compiler.api import numba_available, tvm_available

    if not (tvm_available() if backend == "tvm" else numba_available()):
        pytest.skip(f"backend {backend} is not installed")
    src, model = _float_model(tmp_path, "cnn")
    dst = tmp_path / f"cnn_{quant_format}.onnx"
    quantization.quantize_static(
        str(src),
        str(dst),
        _Reader(_inputs(model, 16, seed=1)),
        quant_format=getattr(quantization.QuantFormat, quant_format),
        per_channel=True,
        activation_type=quantization.QuantType.QUInt8,
        weight_type=quantization.QuantType.QInt8,
    )
    compiled = lepton_compiler.compile(str(dst), backend=backend)
    anchors = [g["anchor"] for g in compiled.report.fused_groups]
    assert "lepton.QConv" in anchors
    # the MaxPool pools the uint8 tensor (dequantized in its store for the float readers),
    # in a native kernel
    pools = [n for n in compiled.graph.walk() if n.op == "MaxPool"]
    assert [str(n.inputs[0].dtype) for n in pools] == ["uint8"]
    assert not [f for f in compiled.report.fallbacks if f.startswith("MaxPool")]
    session = ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"])
    atol = TOLERANCE_STEPS * _output_scale(dst) * 1.0001
    for f in _inputs(model, SAMPLES, seed=2):
        np.testing.assert_allclose(compiled.run(f)["y"], session.run(None, f)[0], rtol=0, atol=atol)
