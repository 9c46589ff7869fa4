"""qoperator_to_qdq: every QOperator op becomes DequantizeLinear → float op → QuantizeLinear
with the same numbers (within one quantization step), and what it cannot rewrite exactly stays.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from lepton_compiler.frontend.onnx import import_model
from lepton_compiler.interpreter import run_graph
from lepton_compiler.ir import Graph, verify
from lepton_compiler.ops import registry
from lepton_compiler.pass_manager import PassContext, get_pass
from lepton_compiler.passes.quant.qoperator import QOperatorToQDQPass
from tests.passes.conftest import ops

MS = "com.microsoft"
DQ, Q = "DequantizeLinear", "QuantizeLinear"
U8, I8 = np.dtype(np.uint8), np.dtype(np.int8)
RNG = np.random.default_rng(0)


def _c(name: str, value: Any, dtype: Any = np.float32) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)


def _qparams(prefix: str, dtype: np.dtype, scale: float = 0.05, n: int = 0) -> list:
    """Scale and zero point constants (per tensor, or `n` per channel)."""
    zp = 0 if dtype == I8 else 128
    if n:
        scales = RNG.uniform(0.5, 1.5, n) * scale
        return [_c(f"{prefix}_s", scales), _c(f"{prefix}_z", np.full(n, zp), dtype)]
    return [_c(f"{prefix}_s", scale), _c(f"{prefix}_z", zp, dtype)]


def _qdata(name: str, dtype: np.dtype, *shape: int) -> np.ndarray:
    info = np.iinfo(dtype)
    return RNG.integers(info.min, info.max + 1, shape).astype(dtype)


def _model(
    nodes: list,
    inputs: Sequence[tuple[str, np.dtype, Sequence[int]]],
    out: tuple[str, np.dtype, Sequence[Any]],
    inits: list,
) -> onnx.ModelProto:
    vis = [
        helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(d), s)
        for n, d, s in inputs
    ]
    y = helper.make_tensor_value_info(out[0], helper.np_dtype_to_tensor_dtype(out[1]), out[2])
    g = helper.make_graph(nodes, "g", vis, [y], inits)
    opsets = [helper.make_opsetid("", 18), helper.make_opsetid(MS, 1)]
    return helper.make_model(g, opset_imports=opsets)


def _import(m: onnx.ModelProto) -> Graph:
    return import_model(m, simplify=False)


def _feeds(inputs: Sequence[tuple[str, np.dtype, Sequence[int]]]) -> dict[str, np.ndarray]:
    out = {}
    for name, dtype, shape in inputs:
        if dtype.kind == "f":
            out[name] = RNG.standard_normal(shape).astype(dtype)
        elif dtype == np.bool_:
            out[name] = RNG.integers(0, 2, shape).astype(bool)
        else:
            out[name] = _qdata(name, dtype, *shape)
    return out


def _rewrite_and_compare(m: onnx.ModelProto, inputs: Sequence, expected: list[str]) -> Graph:
    """Run the pass on the model; check the op list, then the outputs against the original:
    quantized outputs within one step, int32 outputs exact, float outputs to float rounding."""
    before, g = _import(m), _import(m)
    ctx = PassContext(verify_each=True)
    assert QOperatorToQDQPass()(g, ctx).modified
    assert ops(g) == expected
    verify(g)
    assert not QOperatorToQDQPass()(g, ctx).modified  # idempotent
    feeds = _feeds(inputs)
    (a,) = run_graph(before, feeds).values()
    (b,) = run_graph(g, feeds).values()
    assert a.dtype == b.dtype and a.shape == b.shape
    if a.dtype.kind in "iu" and a.dtype.itemsize == 1:
        assert np.abs(a.astype(np.int32) - b.astype(np.int32)).max() <= 1
        assert np.mean(a == b) > 0.95  # a step apart only where a tie rounds differently
    elif a.dtype.kind == "i":
        np.testing.assert_array_equal(a, b)
    else:
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)
    return g


# -- ai.onnx QOperator ops ---------------------------------------------------------------------


@pytest.mark.parametrize("act", [U8, I8])
@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("bias", [False, True])
def test_qlinear_conv(act: np.dtype, per_channel: bool, bias: bool) -> None:
    w = _qdata("w", I8, 4, 3, 3, 3)
    inits = [
        *_qparams("x", act),
        _c("w", w, I8),
        *_qparams("w", I8, 0.02, 4 if per_channel else 0),
        *_qparams("y", act, 0.2),
        _c("b", RNG.integers(-500, 500, 4), np.int32),
    ]
    ins = ["x", "x_s", "x_z", "w", "w_s", "w_z", "y_s", "y_z"] + (["b"] if bias else [])
    node = helper.make_node("QLinearConv", ins, ["y"], pads=[1, 1, 1, 1], strides=[2, 1])
    inputs = [("x", act, [1, 3, 7, 6])]
    expected = [DQ, DQ, *([DQ] if bias else []), "Conv", Q]
    g = _rewrite_and_compare(
        _model([node], inputs, ("y", act, [1, 4, 4, 6]), inits), inputs, expected
    )
    w_dq = g.nodes[1]
    assert w_dq.attrs.get("axis") == (0 if per_channel else None)


@pytest.mark.parametrize("act", [U8, I8])
@pytest.mark.parametrize("per_channel", [False, True])
def test_qlinear_matmul(act: np.dtype, per_channel: bool) -> None:
    inits = [
        *_qparams("a", act),
        _c("b", _qdata("b", I8, 5, 3), I8),
        *_qparams("b", I8, 0.02, 3 if per_channel else 0),
        *_qparams("y", act, 0.1),
    ]
    node = helper.make_node(
        "QLinearMatMul", ["a", "a_s", "a_z", "b", "b_s", "b_z", "y_s", "y_z"], ["y"]
    )
    inputs = [("a", act, [2, 4, 5])]
    g = _rewrite_and_compare(
        _model([node], inputs, ("y", act, [2, 4, 3]), inits), inputs, [DQ, DQ, "MatMul", Q]
    )
    assert g.nodes[1].attrs.get("axis") == (1 if per_channel else None)


@pytest.mark.parametrize("act", [U8, I8])
@pytest.mark.parametrize("weight", [U8, I8])
@pytest.mark.parametrize("per_column", [False, True])
def test_matmul_integer_is_exact(act: np.dtype, weight: np.dtype, per_column: bool) -> None:
    zp_b = RNG.integers(0, 20, 3) if per_column else 7
    inits = [_c("b", _qdata("b", weight, 6, 3), weight), _c("a_z", 3, act), _c("b_z", zp_b, weight)]
    node = helper.make_node("MatMulInteger", ["a", "b", "a_z", "b_z"], ["y"])
    inputs = [("a", act, [4, 6])]
    _rewrite_and_compare(
        _model([node], inputs, ("y", np.dtype(np.int32), [4, 3]), inits),
        inputs,
        [DQ, DQ, "MatMul", "Cast"],
    )


@pytest.mark.parametrize("act", [U8, I8])
@pytest.mark.parametrize("per_channel", [False, True])
def test_conv_integer_is_exact(act: np.dtype, per_channel: bool) -> None:
    wz = RNG.integers(-5, 5, 4) if per_channel else -2
    inits = [_c("w", _qdata("w", I8, 4, 2, 3, 3), I8), _c("x_z", 5, act), _c("w_z", wz, I8)]
    node = helper.make_node("ConvInteger", ["x", "w", "x_z", "w_z"], ["y"], pads=[1, 0, 1, 0])
    inputs = [("x", act, [2, 2, 5, 5])]
    _rewrite_and_compare(
        _model([node], inputs, ("y", np.dtype(np.int32), [2, 4, 5, 3]), inits),
        inputs,
        [DQ, DQ, "Conv", "Cast"],
    )


def test_integer_product_that_may_leave_float32_exactness_stays() -> None:
    node = helper.make_node("MatMulInteger", ["a", "b"], ["y"])
    inputs = [("a", U8, [1, 300]), ("b", U8, [300, 2])]  # 300 * 255 * 255 > 2^24
    m = _model([node], inputs, ("y", np.dtype(np.int32), [1, 2]), [])
    g = _import(m)
    ctx = PassContext(verify_each=True, trace_rules=True)
    assert not QOperatorToQDQPass()(g, ctx).modified
    assert ops(g) == ["MatMulInteger"]
    assert any("kept" in t and "float32" in t for t in ctx.traces)
    assert not g.initializers  # nothing left behind by the declined rewrite


# -- com.microsoft ops -------------------------------------------------------------------------


@pytest.mark.parametrize("act", [U8, I8])
@pytest.mark.parametrize("op,float_op", [("QLinearAdd", "Add"), ("QLinearMul", "Mul")])
def test_binary(act: np.dtype, op: str, float_op: str) -> None:
    inits = [*_qparams("a", act), *_qparams("b", act, 0.03), *_qparams("y", act, 0.1)]
    node = helper.make_node(
        op, ["a", "a_s", "a_z", "b", "b_s", "b_z", "y_s", "y_z"], ["y"], domain=MS
    )
    inputs = [("a", act, [2, 3, 4]), ("b", act, [3, 1])]
    _rewrite_and_compare(
        _model([node], inputs, ("y", act, [2, 3, 4]), inits), inputs, [DQ, DQ, float_op, Q]
    )


@pytest.mark.parametrize("act", [U8, I8])
@pytest.mark.parametrize(
    "op,float_op,attrs",
    [
        ("QLinearLeakyRelu", "LeakyRelu", {"alpha": 0.2}),
        ("QLinearSigmoid", "Sigmoid", {}),
        ("QLinearSoftmax", "Softmax", {"axis": -1, "opset": 13}),
        ("QLinearSoftmax", "Softmax", {"axis": 2, "opset": 11}),  # last axis: same semantics
        ("QLinearGlobalAveragePool", "GlobalAveragePool", {"channels_last": 0}),
        ("QLinearGlobalAveragePool", "ReduceMean", {"channels_last": 1}),
        ("QLinearAveragePool", "AveragePool", {"kernel_shape": [3], "pads": [1, 1]}),
        (
            "QLinearAveragePool",
            "AveragePool",
            {"kernel_shape": [2], "strides": [2], "pads": [0, 1], "count_include_pad": 1},
        ),
    ],
)
def test_unary(act: np.dtype, op: str, float_op: str, attrs: dict) -> None:
    inits = [*_qparams("x", act, 0.1), *_qparams("y", act, 0.02)]
    node = helper.make_node(op, ["x", "x_s", "x_z", "y_s", "y_z"], ["y"], domain=MS, **attrs)
    inputs = [("x", act, [2, 3, 7])]
    g = _rewrite_and_compare(
        _model([node], inputs, ("y", act, [None, None, None]), inits), inputs, [DQ, float_op, Q]
    )
    assert "channels_last" not in g.nodes[1].attrs and "opset" not in g.nodes[1].attrs


@pytest.mark.parametrize("act", [U8, I8])
def test_concat(act: np.dtype) -> None:
    inits = [*_qparams("y", act, 0.1), *_qparams("a", act, 0.05), *_qparams("b", act, 0.2)]
    node = helper.make_node(
        "QLinearConcat",
        ["y_s", "y_z", "a", "a_s", "a_z", "b", "b_s", "b_z"],
        ["y"],
        axis=1,
        domain=MS,
    )
    inputs = [("a", act, [2, 3, 4]), ("b", act, [2, 5, 4])]
    _rewrite_and_compare(
        _model([node], inputs, ("y", act, [2, 8, 4]), inits), inputs, [DQ, DQ, "Concat", Q]
    )


@pytest.mark.parametrize("act", [U8, I8])
def test_where(act: np.dtype) -> None:
    inits = [*_qparams("a", act, 0.05), *_qparams("b", act, 0.2), *_qparams("y", act, 0.1)]
    node = helper.make_node(
        "QLinearWhere", ["c", "a", "a_s", "a_z", "b", "b_s", "b_z", "y_s", "y_z"], ["y"], domain=MS
    )
    inputs = [("c", np.dtype(np.bool_), [3, 1]), ("a", act, [3, 4]), ("b", act, [4])]
    _rewrite_and_compare(
        _model([node], inputs, ("y", act, [3, 4]), inits), inputs, [DQ, DQ, "Where", Q]
    )


@pytest.mark.parametrize("act", [U8, I8])
@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("trans_b", [0, 1])
@pytest.mark.parametrize("bias,quantized_out", [(True, True), (False, True), (True, False)])
def test_qgemm(
    act: np.dtype, per_channel: bool, trans_b: int, bias: bool, quantized_out: bool
) -> None:
    b = _qdata("b", I8, *((3, 5) if trans_b else (5, 3)))
    inits = [
        *_qparams("a", act),
        _c("b", b, I8),
        *_qparams("b", I8, 0.02, 3 if per_channel else 0),
        _c("c", RNG.integers(-900, 900, 3), np.int32),
        *_qparams("y", act, 0.1),
    ]
    ins = ["a", "a_s", "a_z", "b", "b_s", "b_z", "c" if bias else ""]
    ins += ["y_s", "y_z"] if quantized_out else []
    node = helper.make_node("QGemm", ins, ["y"], domain=MS, alpha=0.5, transB=trans_b)
    inputs = [("a", act, [4, 5])]
    out = act if quantized_out else np.dtype(np.float32)
    expected = [DQ, DQ, *([DQ] if bias else []), "Gemm", *([Q] if quantized_out else [])]
    g = _rewrite_and_compare(_model([node], inputs, ("y", out, [4, 3]), inits), inputs, expected)
    if per_channel:
        assert g.nodes[1].attrs["axis"] == (0 if trans_b else 1)


@pytest.mark.parametrize("weight", [U8, I8])
@pytest.mark.parametrize("per_column", [False, True])
def test_dynamic_quantize_matmul(weight: np.dtype, per_column: bool) -> None:
    inits = [
        _c("b", _qdata("b", weight, 5, 3), weight),
        *_qparams("b", weight, 0.02, 3 if per_column else 0),
        _c("bias", [0.5, -1, 2]),
    ]
    node = helper.make_node(
        "DynamicQuantizeMatMul", ["a", "b", "b_s", "b_z", "bias"], ["y"], domain=MS
    )
    inputs = [("a", np.dtype(np.float32), [2, 4, 5])]
    _rewrite_and_compare(
        _model([node], inputs, ("y", np.dtype(np.float32), [2, 4, 3]), inits),
        inputs,
        ["DynamicQuantizeLinear", DQ, DQ, "MatMul", "Add"],
    )


def test_matmul_integer_to_float() -> None:
    inits = [
        _c("b", _qdata("b", I8, 5, 3), I8),
        _c("a_s", 0.1),
        _c("b_s", [0.01, 0.02, 0.03]),
        _c("a_z", 100, U8),
    ]
    node = helper.make_node(
        "MatMulIntegerToFloat", ["a", "b", "a_s", "b_s", "a_z"], ["y"], domain=MS
    )
    inputs = [("a", U8, [4, 5])]
    _rewrite_and_compare(
        _model([node], inputs, ("y", np.dtype(np.float32), [4, 3]), inits),
        inputs,
        [DQ, DQ, "MatMul"],
    )


def test_types_after_a_com_microsoft_op_become_known() -> None:
    inits = [*_qparams("x", U8), *_qparams("y", U8, 0.1)]
    add = helper.make_node(
        "QLinearAdd", ["x", "x_s", "x_z", "x", "x_s", "x_z", "y_s", "y_z"], ["a"], domain=MS
    )
    pool = helper.make_node("MaxPool", ["a"], ["y"], kernel_shape=[2, 2], strides=[2, 2])
    inputs = [("x", U8, [1, 2, 4, 6])]
    g = _rewrite_and_compare(
        _model([add, pool], inputs, ("y", U8, [None] * 4), inits),
        inputs,
        [DQ, DQ, "Add", Q, "MaxPool"],
    )
    assert str(g.nodes[-1].output.type) == "uint8[1,2,2,3]"
    assert all(str(n.output.type).count("?") == 0 for n in g)


# -- what stays ---------------------------------------------------------------------------------


def _unchanged(m: onnx.ModelProto, inputs: Sequence, expected: list[str]) -> None:
    """The pass leaves the graph alone and the graph still runs."""
    g = _import(m)
    assert not get_pass("qoperator_to_qdq")()(g, PassContext(verify_each=True)).modified
    assert ops(g) == expected
    run_graph(g, _feeds(inputs))


def test_nhwc_average_pool_and_old_softmax_stay() -> None:
    inits = [*_qparams("x", U8, 0.1), *_qparams("y", U8, 0.02)]
    pool = helper.make_node(
        "QLinearAveragePool",
        ["x", "x_s", "x_z", "y_s", "y_z"],
        ["p"],
        domain=MS,
        kernel_shape=[2, 2],
        channels_last=1,
    )
    soft = helper.make_node(
        "QLinearSoftmax", ["p", "y_s", "y_z", "y_s", "y_z"], ["y"], domain=MS, axis=1, opset=11
    )
    inputs = [("x", U8, [1, 4, 4, 3])]
    _unchanged(
        _model([pool, soft], inputs, ("y", U8, [1, 3, 3, 3]), inits),
        inputs,
        [f"{MS}.QLinearAveragePool", f"{MS}.QLinearSoftmax"],
    )


def test_dynamic_quantize_linear_stays() -> None:
    node = helper.make_node("DynamicQuantizeLinear", ["x"], ["y", "s", "z"])
    inputs = [("x", np.dtype(np.float32), [3, 4])]
    _unchanged(_model([node], inputs, ("y", U8, [3, 4]), []), inputs, ["DynamicQuantizeLinear"])


def test_an_unknown_com_microsoft_op_stays(monkeypatch: pytest.MonkeyPatch) -> None:
    def reference(node: Any, inputs: list, scope: Any) -> list:
        return [np.asarray(inputs[0])]

    fake = registry.OpDef(MS, "QLinearUnknown", reference=reference)
    monkeypatch.setitem(registry._DEFS, (MS, "QLinearUnknown"), fake)
    inits = [*_qparams("x", U8), *_qparams("y", U8)]
    node = helper.make_node("QLinearUnknown", ["x", "x_s", "x_z", "y_s", "y_z"], ["y"], domain=MS)
    inputs = [("x", U8, [2, 3])]
    _unchanged(_model([node], inputs, ("y", U8, [2, 3]), inits), inputs, [f"{MS}.QLinearUnknown"])
