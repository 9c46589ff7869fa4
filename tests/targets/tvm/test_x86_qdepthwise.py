"""TVM x86 grouped int8 conv groups (``lepton.QConv`` with ``group > 1`` + float epilogue),
built by the grouped-conv family's float32 loop nest, match the reference interpreter on the
unfused graph exactly: MobileNetV2's depthwise layers (3x3, stride 1 and 2), grouped convs
with several channels per group, uint8 and int8 activations, per-channel and per-tensor
weight scales, with and without bias, float and requantized outputs, sums at the exactness
bound; a group whose sum could exceed it is refused; a quantized inverted residual block end
to end."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pytest

pytest.importorskip("tvm")
os.environ.setdefault("TVM_NUM_THREADS", "2")

from lepton_compiler.interpreter import run_graph
from lepton_compiler.ir import DType, Graph, Node, TensorType, Value
from lepton_compiler.pass_manager import PassContext
from lepton_compiler.passes.fusion import group as fusion
from lepton_compiler.passes.fusion.group import GroupFusionPass
from lepton_compiler.targets.tvm.build import build_group, host_target
from lepton_compiler.targets.tvm.kernels import plan_group
from lepton_compiler.targets.tvm.kernels.depthwise import EXACT_SUM_LIMIT
from lepton_compiler.targets.tvm.te_ops import LoweringError

from .test_x86_qconv import add

TARGET = host_target(2)


def qgrouped_graph(
    c: int,
    hw: tuple[int, int],
    k: tuple[int, int] = (3, 3),
    *,
    m: int | None = None,
    group: int | None = None,
    strides: tuple[int, int] = (1, 1),
    pads: tuple[int, int, int, int] = (1, 1, 1, 1),
    dilations: tuple[int, int] = (1, 1),
    n: int = 1,
    signed: bool = False,
    per_channel: bool = True,
    bias: bool = True,
    epilogue: str = "clip_q",
    weights: np.ndarray | None = None,
    bias_values: np.ndarray | None = None,
    zero_point: int | None = None,
    seed: int = 0,
) -> Graph:
    """``y = epilogue(QConv(x, ...))`` for a grouped QConv (depthwise by default) with random
    constants. Epilogues: ``none`` (float output), ``clip`` (Clip(0, 6), float),
    ``clip_q`` (Clip(0, 6) and QuantizeLinear to uint8, MobileNetV2's requantization),
    ``relu_q8`` (Relu and QuantizeLinear to int8), ``dq_add`` (Add of a DequantizeLinear of
    a uint8 side input, float)."""
    rng = np.random.default_rng(seed)
    m = c if m is None else m
    group = c if group is None else group
    xdt = DType.INT8 if signed else DType.UINT8
    zp = (-7 if signed else 121) if zero_point is None else zero_point
    g = Graph(opset_imports={"": 18})
    x = g.add_input(Value("x", TensorType(xdt, (n, c, *hw))))
    xs = g.add_constant(np.float32(0.02), "xs")
    xz = g.add_constant(np.array(zp, xdt.value), "xz")
    if weights is None:
        weights = rng.integers(-128, 128, (m, c // group, *k)).astype(np.int8)
    w = g.add_constant(weights, "w")
    ws_val = rng.uniform(0.002, 0.02, m) if per_channel else np.float32(0.01)
    ws = g.add_constant(np.asarray(ws_val, np.float32), "ws")
    ins: list[Value | None] = [x, xs, xz, w, ws]
    if bias:
        if bias_values is None:
            bias_values = rng.integers(-5000, 5000, m).astype(np.int32)
        ins.append(g.add_constant(bias_values, "b"))
    y = add(g, "lepton.QConv", ins, strides=list(strides), pads=list(pads),
            dilations=list(dilations), group=group)  # fmt: skip
    out_shape = y.shape
    if epilogue in ("clip", "clip_q"):
        y = add(g, "Clip", [y, g.add_constant(np.float32(0.0)), g.add_constant(np.float32(6.0))])
    if epilogue == "clip_q":
        y = add(g, "QuantizeLinear", [y, g.add_constant(np.float32(6.0 / 255)),
                                      g.add_constant(np.uint8(0))])  # fmt: skip
    elif epilogue == "relu_q8":
        y = add(g, "Relu", [y])
        y = add(g, "QuantizeLinear", [y, g.add_constant(np.float32(0.05)),
                                      g.add_constant(np.int8(-20))])  # fmt: skip
    elif epilogue == "dq_add":
        r = g.add_input(Value("r", TensorType(DType.UINT8, out_shape)))
        dq = add(g, "DequantizeLinear", [r, g.add_constant(np.float32(0.1)),
                                         g.add_constant(np.uint8(100))])  # fmt: skip
        y = add(g, "Add", [y, dq])
    else:
        assert epilogue in ("none", "clip", "clip_q")
    g.outputs = [y]
    return g


def _fused(g: Graph) -> Node:
    """The graph's one group (a lone QConv wrapped as the executor wraps it; a DequantizeLinear
    of a side input pulled into the group)."""
    nodes = list(g)
    if any(node.op == "DequantizeLinear" for node in nodes):
        return fusion._wrap(g, fusion._Group(nodes))
    GroupFusionPass()(g, PassContext())
    fused = [node for node in g if node.op == "lepton.Fused"]
    if fused:
        assert len(fused) == 1, str(g)
        return fused[0]
    (node,) = list(g)
    return fusion._wrap(g, fusion._Group([node]))


def _feeds(g: Graph, fill: int | None = None, seed: int = 1) -> dict[str, np.ndarray]:
    """Random inputs over each dtype's whole range (or every element `fill`)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for v in g.inputs:
        info = np.iinfo(v.dtype.value)
        if fill is not None:
            feeds[v.name] = np.full(v.shape, fill, v.dtype.value)
        else:
            feeds[v.name] = rng.integers(info.min, info.max + 1, v.shape).astype(v.dtype.value)
    return feeds


def check(fill: int | None = None, exact: bool = False, **kw: Any) -> np.ndarray:
    """Build the group with the grouped-conv family and compare it with the reference:
    quantized outputs exactly, float outputs to 1e-6 relative (bit for bit when `exact`).
    Returns the output."""
    ref, g = qgrouped_graph(**kw), qgrouped_graph(**kw)
    feeds = _feeds(ref, fill)
    want = run_graph(ref, feeds)[ref.outputs[0].name]
    fused = _fused(g)
    kernel = build_group(fused, TARGET)
    assert kernel.family == "depthwise"
    args = [feeds[v.name] if v.const is None else np.asarray(v.const) for v in fused.inputs]
    (got,) = kernel(*args)
    assert got.shape == want.shape and got.dtype == want.dtype
    if want.dtype == np.float32 and not exact:
        scale = float(np.abs(want).max()) or 1.0
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6 * scale)
    else:
        np.testing.assert_array_equal(got, want)
    return got


MOBILENETV2 = {
    "96x56x56_s2": dict(c=96, hw=(56, 56), strides=(2, 2)),
    "144x56x56_s1": dict(c=144, hw=(56, 56)),
    "960x7x7_s1": dict(c=960, hw=(7, 7)),
    "32x112x112_s1": dict(c=32, hw=(112, 112)),
}


@pytest.mark.parametrize("shape", list(MOBILENETV2))
def test_mobilenetv2_depthwise_requantized(shape: str) -> None:
    """Clip(0, 6) and QuantizeLinear to uint8 (the expand-depthwise-project block's middle)."""
    out = check(**MOBILENETV2[shape], epilogue="clip_q")
    assert 0 < (out == 0).mean() < 0.9 and (out == 255).mean() < 0.5  # not all clipped


@pytest.mark.parametrize("epilogue", ["none", "clip"])
def test_depthwise_float_output(epilogue: str) -> None:
    check(c=24, hw=(14, 14), strides=(2, 2), epilogue=epilogue)


@pytest.mark.parametrize(
    ("c", "m", "group"), [(16, 16, 4), (12, 24, 6), (8, 16, 8)], ids=["cg4", "cg2_mg4", "mult2"]
)
def test_grouped_not_depthwise(c: int, m: int, group: int) -> None:
    """Several input channels per group, and a depthwise channel multiplier of 2."""
    check(c=c, m=m, group=group, hw=(10, 9), epilogue="clip_q")
    check(c=c, m=m, group=group, hw=(10, 9), strides=(2, 2), epilogue="none")


@pytest.mark.parametrize("epilogue", ["relu_q8", "none"])
def test_int8_activations(epilogue: str) -> None:
    check(c=32, hw=(13, 13), strides=(2, 2), signed=True, epilogue=epilogue)


def test_per_tensor_scale_without_bias() -> None:
    check(c=40, hw=(9, 9), per_channel=False, bias=False, epilogue="clip_q")
    check(c=40, hw=(9, 9), per_channel=False, bias=False, epilogue="none")


def test_odd_geometry_batch2() -> None:
    """Batch 2, unequal strides, asymmetric padding, dilation, a 5x3 kernel."""
    check(c=8, hw=(11, 9), k=(5, 3), n=2, strides=(2, 1), pads=(2, 0, 1, 2),
          dilations=(2, 1), epilogue="relu_q8")  # fmt: skip


def test_dequantized_side_input() -> None:
    """A DequantizeLinear of a uint8 side tensor in the epilogue reads it as bytes."""
    check(c=16, hw=(8, 8), epilogue="dq_add")


def test_large_bias_is_added_in_int32() -> None:
    """A bias too large to add to the float32 sum exactly stays int32 (the sum of a random
    bias beyond 2**24 and the accumulator is rounded once, as the reference rounds it)."""
    bias = np.random.default_rng(2).integers(-(10**8), 10**8, 24).astype(np.int32)
    kw = dict(c=24, hw=(10, 10), strides=(2, 2), bias_values=bias, epilogue="none")
    assert "int32" in _plan(qgrouped_graph(**kw)).param_dtypes
    check(exact=True, **kw)


def test_sum_at_the_exactness_bound() -> None:
    """56 channels per group, every product ``255 * -128``: the accumulator is
    ``-9 * 56 * 32640 = -16450560``, just inside the bound; the bias pushes ``acc + bias``
    past 2**24, where float32 rounds it once (as the reference does) and the output equals
    the reference bit for bit."""
    c, group = 112, 2
    assert 9 * (c // group) * 255 * 128 < EXACT_SUM_LIMIT
    weights = np.full((4, c // group, 3, 3), -128, np.int8)
    bias = np.array([-1_000_001, 0, 333_333, -7], np.int32)
    kw = dict(c=c, m=4, group=group, hw=(5, 5), pads=(0, 0, 0, 0), weights=weights,
              bias_values=bias, zero_point=0, epilogue="none")  # fmt: skip
    assert "int32" in _plan(qgrouped_graph(**kw)).param_dtypes  # too large to add in float32
    got = check(fill=255, exact=True, **kw)
    acc = np.float32(-9 * (c // group) * 255 * 128 + bias)
    assert np.all(got[0, :, 0, 0] / acc > 0)  # the sums and signs reached the output


def _plan(g: Graph) -> Any:
    import tvm

    return plan_group(_fused(g), tvm.target.Target(TARGET))


def test_grouped_qconv_is_planned_by_the_grouped_family() -> None:
    """The QConv family routes a grouped QConv to the grouped-conv family, which reads the
    activations and zero point as bytes, the int8 weights and the small constant bias as
    float32."""
    plan = _plan(qgrouped_graph(c=16, hw=(6, 6)))
    assert plan.family == "depthwise"
    assert sorted(plan.param_dtypes) == sorted(["uint8", "float32", "uint8"] + ["float32"] * 3)
    assert plan.output_dtypes == ["uint8"]


@pytest.mark.parametrize(
    ("c", "group", "k"), [(128, 2, (3, 3)), (8, 8, (25, 25))], ids=["cg64", "kernel25"]
)
def test_inexact_sum_is_refused(c: int, group: int, k: tuple[int, int]) -> None:
    """64 channels per group of a 3x3 kernel (within the float family's channel limit) or a
    25x25 depthwise kernel: the sum could exceed 2**24."""
    g = qgrouped_graph(c=c, group=group, m=group, hw=(26, 26), k=k, pads=(0, 0, 0, 0))
    with pytest.raises(LoweringError, match="exact"):
        _plan(g)


def test_inverted_residual_block_end_to_end() -> None:
    """A MobileNetV2-style block quantized with ``grouped=True`` through
    ``compile(backend="tvm")``: the depthwise QConv runs as a grouped-family kernel (no
    reference kernel left) and the output matches the reference backend on the same
    quantized graph."""
    from onnx import TensorProto, helper, numpy_helper

    import lepton_compiler
    from lepton_compiler import Int8Config

    rng = np.random.default_rng(5)
    consts = {
        "we": rng.standard_normal((24, 8, 1, 1)) * 0.3,
        "wd": rng.standard_normal((24, 1, 3, 3)) * 0.3,
        "wp": rng.standard_normal((8, 24, 1, 1)) * 0.2,
        "lo": np.zeros(()),
        "hi": np.full((), 6.0),
    }
    nodes = [
        helper.make_node("Conv", ["x", "we"], ["e"]),
        helper.make_node("Clip", ["e", "lo", "hi"], ["e6"]),
        helper.make_node("Conv", ["e6", "wd"], ["d"], pads=[1, 1, 1, 1], group=24),
        helper.make_node("Clip", ["d", "lo", "hi"], ["d6"]),
        helper.make_node("Conv", ["d6", "wp"], ["p"]),
        helper.make_node("Add", ["p", "x"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "block",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 14, 14])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 14, 14])],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in consts.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    data = model.SerializeToString()
    samples = [{"x": rng.standard_normal((1, 8, 14, 14)).astype(np.float32)} for _ in range(2)]

    def compiled(backend: str) -> Any:
        config = Int8Config(calibration=samples, method="minmax", grouped=True)
        return lepton_compiler.compile(data, backend=backend, quantize=config)

    ours, ref = compiled("tvm"), compiled("reference")
    executor = ours.executor._current
    assert executor.fallbacks == []
    families = [s.kernel.family for s in executor._steps if s.kernel is not None]
    labels = [s.node.attrs.get("anchor") for s in executor._steps if s.kernel is not None]
    assert ("depthwise", "lepton.QConv") in zip(families, labels, strict=True)
    x = {"x": rng.standard_normal((1, 8, 14, 14)).astype(np.float32)}
    want, got = ref.run(x)["y"], ours.run(x)["y"]
    scale = float(np.abs(want).max())
    # the expand conv requantizes by a reciprocal (`kernels.qconv`): a value on a rounding
    # tie may land one unit off and move a few outputs slightly
    assert np.isclose(got, want, rtol=1e-5, atol=1e-5 * scale).mean() > 0.99
    assert float(np.abs(got - want).max()) <= 0.02 * scale
