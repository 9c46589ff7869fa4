"""quantize_int8: calibration → QDQ → integer ops through `compile`, the per-layer report,
exclusions, the automatic fp32 fallback, and the errors a user can make."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import lepton_compiler
from lepton_compiler import Int8Config, LeptonError
from lepton_compiler.frontend.onnx import import_model
from lepton_compiler.pass_manager import PassContext, get_pass

RNG = np.random.default_rng(1)


def _model(sensitive: bool = False) -> bytes:
    """Three 3x3 convs and a Gemm. With `sensitive`, one channel of conv1's output is 1000x
    larger than the others, so conv2's per-tensor input grid wipes out the other seven
    channels: conv2 is the layer to blame."""
    w1 = RNG.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.3
    b1 = np.full(8, 0.1, np.float32)
    if sensitive:
        w1[3] *= 1000.0
    w2 = RNG.standard_normal((8, 8, 3, 3)).astype(np.float32) * 0.2
    if sensitive:
        w2[:, 3] /= 1000.0  # the large channel contributes as much as the others
    w3 = RNG.standard_normal((8, 8, 3, 3)).astype(np.float32) * 0.2
    wg = RNG.standard_normal((4, 8 * 6 * 6)).astype(np.float32) * 0.05
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("Conv", ["r2", "w3"], ["c3"], pads=[1, 1, 1, 1], name="conv3"),
        helper.make_node("Relu", ["c3"], ["r3"], name="relu3"),
        helper.make_node("Flatten", ["r3"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "wg"], ["y"], transB=1, name="fc"),
    ]
    inits = [
        numpy_helper.from_array(a, n)
        for n, a in [("w1", w1), ("b1", b1), ("w2", w2), ("w3", w3), ("wg", wg)]
    ]
    graph = helper.make_graph(
        nodes,
        "net",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]).SerializeToString()


def _samples(n: int = 4) -> list[dict[str, np.ndarray]]:
    return [{"x": RNG.standard_normal((2, 3, 6, 6)).astype(np.float32)} for _ in range(n)]


def _inner_ops(compiled: lepton_compiler.CompiledModel) -> list[str]:
    out = []
    for node in compiled.graph:
        out += [n.op for n in node.attrs["body"]] if node.op == "lepton.Fused" else [node.op]
    return out


def test_compile_int8_matches_fp32_closely() -> None:
    model = _model()
    fp32 = lepton_compiler.compile(model)
    int8 = lepton_compiler.compile(model, quantize=Int8Config(calibration=_samples()))
    ops = _inner_ops(int8)
    assert ops.count("lepton.QConv") == 3 and ops.count("lepton.QMatMul") == 1
    x = _samples(1)[0]
    a, b = fp32.run(x)["y"], int8.run(x)["y"]
    cos = float(np.dot(a.ravel(), b.ravel()) / np.linalg.norm(a) / np.linalg.norm(b))
    assert cos > 0.99
    rows = int8.report.int8_layers
    assert [r["name"] for r in rows] == ["conv1", "conv2", "conv3", "fc"]
    assert all(r["local_sqnr_db"] > 20 and r["quantized"] for r in rows)
    assert "most sensitive layer" in int8.report.int8.splitlines()[0]


@pytest.mark.parametrize("method", ["minmax", "percentile", "entropy", "mse"])
def test_every_calibration_method_runs(method: str) -> None:
    compiled = lepton_compiler.compile(
        _model(), quantize=Int8Config(calibration=_samples(2), method=method)
    )
    assert f"{method} calibration on 2 samples" in compiled.report.int8


def test_report_names_the_sensitive_layer() -> None:
    config = Int8Config(calibration=_samples(), method="minmax", per_channel=True)
    compiled = lepton_compiler.compile(_model(sensitive=True), quantize=config)
    rows = sorted(compiled.report.int8_layers, key=lambda r: r["local_sqnr_db"])
    assert rows[0]["name"] == "conv2"
    assert rows[0]["local_sqnr_db"] < rows[1]["local_sqnr_db"] - 10
    assert "most sensitive layer conv2" in compiled.report.int8


def test_max_drop_keeps_the_sensitive_layer_in_float() -> None:
    model = _model(sensitive=True)
    plain = lepton_compiler.compile(
        model, quantize=Int8Config(calibration=_samples(), method="minmax")
    )
    error = float(plain.report.int8.split("relative error ")[1].split(";")[0])
    bound = error / 3
    auto = lepton_compiler.compile(
        model, quantize=Int8Config(calibration=_samples(), method="minmax", max_drop=bound)
    )
    kept = [r["name"] for r in auto.report.int8_layers if not r["quantized"]]
    assert kept[0] == "conv2"
    assert "kept conv2 in fp32" in auto.report.int8
    ops = _inner_ops(auto)
    assert ops.count("Conv") == len([k for k in kept if k.startswith("conv")])
    got = float(auto.report.int8.split("relative error ")[1].split(";")[0])
    assert got <= bound


def test_metric_callback_drives_max_drop() -> None:
    samples = _samples()
    model = _model(sensitive=True)
    ref = lepton_compiler.compile(model)
    labels = [ref.run(s)["y"].argmax(1) for s in samples]

    def agreement(run) -> float:
        return float(
            np.mean(
                [(run(s)["y"].argmax(1) == y).mean() for s, y in zip(samples, labels, strict=True)]
            )
        )

    config = Int8Config(calibration=samples, method="minmax", max_drop=0.0, metric=agreement)
    compiled = lepton_compiler.compile(model, quantize=config)
    assert "metric 1.0000 fp32 -> 1.0000 int8" in compiled.report.int8


@pytest.mark.parametrize(
    "exclude,float_op",
    [(("Gemm",), "MatMul"), (("fc",), "MatMul"), (("conv3",), "Conv")],
)
def test_exclude_by_op_type_and_name(exclude: tuple[str, ...], float_op: str) -> None:
    # the bias-less Gemm "fc" is a MatMul after cleanup; it keeps its name, and excluding
    # any matrix-product op type excludes the family
    compiled = lepton_compiler.compile(
        _model(), quantize=Int8Config(calibration=_samples(2), exclude=exclude)
    )
    assert _inner_ops(compiled).count(float_op) == 1
    assert "excluded by the configuration" in compiled.report.int8


def test_int8_activations_are_symmetric() -> None:
    compiled = lepton_compiler.compile(
        _model(), quantize=Int8Config(calibration=_samples(2), activations="int8")
    )
    zps = [
        n.inputs[2].const
        for node in compiled.graph
        if node.op == "lepton.Fused"
        for n in node.attrs["body"]
        if n.op == "lepton.QConv"
    ]
    assert zps
    assert all(z.dtype == np.int8 and int(z) == 0 for z in zps if z is not None)


def test_pass_without_option_does_nothing() -> None:
    graph = import_model(_model(), simplify=False)
    result = get_pass("quantize_int8")()(graph, PassContext())
    assert not result.modified


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"calibration": None}, "needs calibration data"),
        ({"calibration": [], "method": "kl"}, "unknown calibration method"),
        ({"calibration": [], "activations": "int4"}, "unknown activation type"),
        ({"calibration": [], "metric": lambda run: 1.0}, "used with max_drop"),
        ({"calibration": [], "percentile": 0}, "percentile"),
    ],
)
def test_bad_config(kwargs: dict, message: str) -> None:
    with pytest.raises(LeptonError, match=message):
        Int8Config(**kwargs)


def test_empty_calibration_data_is_an_error() -> None:
    with pytest.raises(LeptonError, match="calibration data is empty"):
        lepton_compiler.compile(_model(), quantize=Int8Config(calibration=[]))


def test_wrong_calibration_input_is_an_error() -> None:
    with pytest.raises(lepton_compiler.InputError):
        lepton_compiler.compile(_model(), quantize=Int8Config(calibration=[{"image": 1}]))


def test_int8_needs_opt_level_two() -> None:
    with pytest.raises(LeptonError, match="opt_level 2 or 3"):
        lepton_compiler.compile(_model(), opt_level=1, quantize=Int8Config(calibration=[]))


def _residual_model(op: str = "Sub") -> bytes:
    w1 = RNG.standard_normal((4, 4, 3, 3)).astype(np.float32) * 0.3
    w2 = RNG.standard_normal((4, 4, 3, 3)).astype(np.float32) * 0.3
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
        helper.make_node(op, ["c2", "r1"], ["y"], name="residual"),
    ]
    inits = [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")]
    graph = helper.make_graph(
        nodes,
        "res",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 5, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 5, 5])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]).SerializeToString()


@pytest.mark.parametrize("two_outputs", [True, False])
def test_requantize_joins_the_group_of_a_shared_value(two_outputs: bool) -> None:
    """conv1's ReLU output feeds conv2 (through QuantizeLinear) and a float Sub: the
    QuantizeLinear joins conv1's group as a second output unless the option is off."""
    samples = [{"x": RNG.standard_normal((1, 4, 5, 5)).astype(np.float32)} for _ in range(2)]
    model = _residual_model()
    compiled = lepton_compiler.compile(
        model,
        quantize=Int8Config(calibration=samples),
        pass_options={"fuse_requantize_outputs": two_outputs},
    )
    groups = [node for node in compiled.graph if node.op == "lepton.Fused"]
    first = [n.op for n in groups[0].attrs["body"]]
    if two_outputs:
        assert first == ["lepton.QConv", "Relu", "QuantizeLinear"]
        assert len(groups[0].outputs) == 2
        assert "QuantizeLinear" not in [n.op for n in compiled.graph][1:]
    else:
        assert first == ["lepton.QConv", "Relu"]
        assert [n.op for n in compiled.graph].count("QuantizeLinear") == 2
    x = samples[0]
    ref = lepton_compiler.compile(model).run(x)["y"]
    got = compiled.run(x)["y"]
    assert np.abs(got - ref).max() <= 0.05 * np.abs(ref).max()


@pytest.mark.parametrize("grouped", [False, True])
def test_grouped_convolutions_stay_float_unless_asked(grouped: bool) -> None:
    w1 = RNG.standard_normal((8, 1, 3, 3)).astype(np.float32)
    w2 = RNG.standard_normal((4, 8, 1, 1)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], group=8, name="dw"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu"),
        helper.make_node("Conv", ["r1", "w2"], ["y"], name="pw"),
    ]
    graph = helper.make_graph(
        nodes,
        "dw",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 5, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 5, 5])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    samples = [{"x": RNG.standard_normal((1, 8, 5, 5)).astype(np.float32)} for _ in range(2)]
    compiled = lepton_compiler.compile(
        model.SerializeToString(), quantize=Int8Config(calibration=samples, grouped=grouped)
    )
    ops = _inner_ops(compiled)
    assert ops.count("lepton.QConv") == (2 if grouped else 1)
    assert ("excluded dw: grouped convolution" in compiled.report.int8) != grouped


def test_residual_add_reads_the_quantized_block_input() -> None:
    """A residual Add of an activation that is quantized anyway reads its dequantized copy:
    conv1's group stores only uint8, and conv2's group dequantizes the residual as it reads
    it."""
    samples = [{"x": RNG.standard_normal((1, 4, 5, 5)).astype(np.float32)} for _ in range(2)]
    model = _residual_model("Add")
    compiled = lepton_compiler.compile(model, quantize=Int8Config(calibration=samples))
    groups = [node for node in compiled.graph if node.op == "lepton.Fused"]
    assert [[n.op for n in g.attrs["body"]] for g in groups] == [
        ["lepton.QConv", "Relu", "QuantizeLinear"],
        ["lepton.QConv", "DequantizeLinear", "Add"],
    ]
    assert len(groups[0].outputs) == 1
    x = samples[0]
    ref = lepton_compiler.compile(model).run(x)["y"]
    assert np.abs(compiled.run(x)["y"] - ref).max() <= 0.05 * np.abs(ref).max()
