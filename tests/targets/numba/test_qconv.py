"""The integer conv template (``lepton.QConv``): exact int32 sums against the registry's
reference for im2col and depthwise loops, uint8/int8 inputs, per-channel and per-tensor
scales, with and without bias, padding that reads the zero point, strides, dilations,
asymmetric pads, groups, 1-D convs, reductions split into exact chunks, requantizing
epilogues (Relu, Clip, a residual Add of a dequantized side input), ONNX Runtime's
QLinearConv; refusals fall back to the reference kernel."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

pytest.importorskip("numba")

from lepton_compiler.ir import Value
from lepton_compiler.ops import lookup
from lepton_compiler.testing import model_from_text, run_onnxruntime

from .test_qdense import (
    RNG,
    QGraph,
    assert_quantized_close,
    families,
    integer_data,
    run_both,
    run_tiled,
    source,
)

Epilogue = Callable[[QGraph, Value], Value]


@pytest.fixture(autouse=True)
def same_data_in_every_order() -> None:
    """Restart `RNG` before each test, so that its data do not depend on which tests ran."""
    RNG.bit_generator.state = np.random.default_rng(0).bit_generator.state


def qconv_graph(
    x: np.ndarray,
    zp: int,
    w: np.ndarray,
    w_scale: np.ndarray,
    bias: np.ndarray | None,
    epilogue: Epilogue | None = None,
    **attrs: Any,
) -> Callable[[], QGraph]:
    def build() -> QGraph:
        g = QGraph()
        args = [g.input("x", x), g.const(0.03, np.float32), g.const(zp, x.dtype),
                g.const(w, np.int8), g.const(w_scale, np.float32)]  # fmt: skip
        if bias is not None:
            args.append(g.const(bias, np.int32))
        y = g.op("lepton.QConv", *args, **attrs)
        g.output(epilogue(g, y) if epilogue is not None else y)
        return g

    return build


def weights(shape: tuple[int, ...], per_channel: bool = True) -> tuple[np.ndarray, np.ndarray]:
    scale = RNG.uniform(0.001, 0.01, shape[0] if per_channel else 1).astype(np.float32)
    return integer_data(shape, np.int8), scale


def relu_quantize(dtype: Any = np.uint8, zero_point: int = 0) -> Epilogue:
    return lambda g, y: g.quantize(g.op("Relu", y), 0.04, zero_point, dtype)


def test_reference_is_the_registry_op() -> None:
    assert lookup("lepton", "QConv").reference is not None


def test_3x3_bias_relu_requantized_is_one_kernel() -> None:
    x = integer_data((1, 5, 9, 7), np.uint8)
    w, ws = weights((6, 5, 3, 3))
    bias = RNG.integers(-2000, 2000, 6).astype(np.int32)
    build = qconv_graph(x, 131, w, ws, bias, relu_quantize(), pads=[1, 1, 1, 1])
    got, expected, ex = run_both(build)
    assert families(ex) == ["qconv"] and got.dtype == np.uint8
    src = source(ex, "qconv")
    assert "epilogue: Relu -> QuantizeLinear" in src and "im2col" in src
    assert "q = np.int32(np.int32(prod[oc, p]) + b[oc])" in src and "out[n, oc, p] = v1" in src
    assert_quantized_close(got, expected)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
@pytest.mark.parametrize("per_channel", [True, False])
def test_float_output_is_exact_strided_dilated_asymmetric_pads_batch_2(
    dtype: Any, per_channel: bool
) -> None:
    x = integer_data((2, 3, 11, 10), dtype)
    w, ws = weights((4, 3, 3, 2), per_channel)
    attrs = {"strides": [2, 2], "dilations": [2, 1], "pads": [2, 0, 1, 1]}
    got, expected, ex = run_both(qconv_graph(x, 5, w, ws, None, **attrs))
    assert families(ex) == ["qconv"]
    assert got.dtype == np.float32 and got.shape == (2, 4, 5, 5)
    np.testing.assert_array_equal(got, expected)  # same int32 sum, same float32 rounding


def test_padding_reads_the_zero_point() -> None:
    x = np.full((1, 2, 5, 5), 77, np.uint8)  # the quantized 0.0 everywhere
    w, ws = weights((3, 2, 3, 3))
    bias = np.array([10, -20, 30], np.int32)
    got, expected, _ = run_both(qconv_graph(x, 77, w, ws, bias, pads=[2, 2, 2, 2]))
    np.testing.assert_array_equal(got, expected)
    only_bias = bias.astype(np.float32) * (np.float32(0.03) * ws)
    np.testing.assert_array_equal(got, np.broadcast_to(only_bias[:, None, None], got.shape))


def test_pointwise_residual_add_of_dequantized_side_input() -> None:
    x = integer_data((2, 8, 5, 3), np.uint8)
    side = integer_data((2, 6, 5, 3), np.int8)
    w, ws = weights((6, 8, 1, 1))
    bias = RNG.integers(-500, 500, 6).astype(np.int32)

    def epilogue(g: QGraph, y: Value) -> Value:
        s = g.op("DequantizeLinear", g.input("side", side), g.const(0.05, np.float32),
                 g.const(-3, np.int8))  # fmt: skip
        return g.quantize(g.op("Relu", g.op("Add", y, s)), 0.05, -128, np.int8)

    got, expected, ex = run_both(qconv_graph(x, 0, w, ws, bias, epilogue))
    assert "qconv" in families(ex) and got.dtype == np.int8
    assert_quantized_close(got, expected)


def test_grouped_conv_without_bias() -> None:
    x = integer_data((1, 6, 7, 7), np.int8)
    w, ws = weights((4, 3, 3, 3))
    build = qconv_graph(x, 0, w, ws, None, group=2, strides=[2, 2], pads=[1, 1, 1, 1])
    got, expected, ex = run_both(build)
    assert families(ex) == ["qconv"]
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize(("mult", "stride"), [(1, 1), (2, 2)])
def test_depthwise_with_clip(mult: int, stride: int) -> None:
    x = integer_data((2, 5, 9, 9), np.uint8)
    w, ws = weights((5 * mult, 1, 3, 3))
    bias = RNG.integers(-300, 300, 5 * mult).astype(np.int32)

    def epilogue(g: QGraph, y: Value) -> Value:
        c = g.op("Clip", y, g.const(0.0, np.float32), g.const(6.0, np.float32))
        return g.quantize(c, 6 / 255, 0, np.uint8)

    build = qconv_graph(x, 100, w, ws, bias, epilogue, group=5, strides=[stride] * 2,
                        pads=[1, 1, 1, 1])  # fmt: skip
    got, expected, ex = run_both(build)
    assert families(ex) == ["qconv"]
    assert "direct (depthwise)" in source(ex, "qconv")
    assert_quantized_close(got, expected)


def test_depthwise_float_output_is_exact() -> None:
    x = integer_data((1, 4, 6, 8), np.int8)
    w, ws = weights((4, 1, 5, 5))
    got, expected, _ = run_both(qconv_graph(x, 3, w, ws, None, group=4, pads=[2, 1, 2, 0]))
    np.testing.assert_array_equal(got, expected)


def test_1d_conv_runs_as_2d() -> None:
    x = integer_data((1, 3, 17), np.uint8)
    w, ws = weights((4, 3, 5))
    got, expected, ex = run_both(qconv_graph(x, 9, w, ws, None, strides=[2], pads=[1, 0]))
    assert families(ex) == ["qconv"] and got.shape == (1, 4, 7)
    np.testing.assert_array_equal(got, expected)


def test_long_reduction_is_split_into_exact_chunks() -> None:
    x = np.full((1, 64, 6, 6), 255, np.uint8)
    x[:, ::3] = 1
    w = np.full((3, 64, 3, 3), 127, np.int8)  # 576 * 127 * 255 > 2^24
    w[1] = -128
    build = qconv_graph(x, 0, w, np.ones(3, np.float32), None)
    got, expected, ex = run_both(build)
    assert "in 2 chunk(s) of 288" in source(ex, "qconv")
    np.testing.assert_array_equal(got, expected)
    got, expected, _ = run_tiled(build)  # chunks inside the tiles of output channels
    np.testing.assert_array_equal(got, expected)


def test_parallel_tiles_of_output_channels() -> None:
    x = integer_data((2, 16, 8, 8), np.uint8)
    w, ws = weights((20, 16, 3, 3))
    bias = RNG.integers(-100, 100, 20).astype(np.int32)
    build = qconv_graph(x, 128, w, ws, bias, relu_quantize(np.int8, 5), pads=[1, 1, 1, 1])
    got, expected, src = run_tiled(build)
    assert "for oc in range(oc0, oc1):" in src
    assert_quantized_close(got, expected)


def test_matches_onnxruntime_qlinearconv() -> None:
    x = integer_data((1, 3, 8, 8), np.uint8)
    w, _ = weights((4, 3, 3, 3))
    ws = np.float32([0.01, 0.02, 0.015, 0.005])
    bias = RNG.integers(-1000, 1000, 4).astype(np.int32)
    got, _, _ = run_both(
        qconv_graph(x, 120, w, ws, bias, lambda g, y: g.quantize(y, 0.1, 128, np.uint8),
                    pads=[1, 1, 1, 1])
    )  # fmt: skip
    w_text = ", ".join(str(int(v)) for v in w.reshape(-1))
    b_text = ", ".join(str(int(v)) for v in bias)
    text = f"""
        <ir_version: 10, opset_import: ["" : 21]>
        g (uint8[1, 3, 8, 8] x) => (uint8[1, 4, 8, 8] y)
          <float sx = {{0.03}}, uint8 zx = {{120}}, int8[4, 3, 3, 3] w = {{{w_text}}},
           float[4] sw = {{0.01, 0.02, 0.015, 0.005}}, int8[4] zw = {{0, 0, 0, 0}},
           float sy = {{0.1}}, uint8 zy = {{128}}, int32[4] b = {{{b_text}}}> {{
            y = QLinearConv<pads = [1, 1, 1, 1]>(x, sx, zx, w, sw, zw, sy, zy, b)
        }}"""
    expected = run_onnxruntime(model_from_text(text), {"x": x})["y"]
    assert_quantized_close(got, expected)


def test_3d_conv_falls_back() -> None:
    x = integer_data((1, 2, 4, 4, 4), np.uint8)
    w, ws = weights((3, 2, 2, 2, 2))
    got, expected, ex = run_both(qconv_graph(x, 0, w, ws, None, relu_quantize()))
    assert families(ex) == []
    assert "1-D and 2-D" in next(iter(ex.build_errors.values()))
    np.testing.assert_array_equal(got, expected)


def test_non_constant_input_scale_falls_back() -> None:
    x = integer_data((1, 2, 4, 4), np.uint8)
    w, ws = weights((3, 2, 1, 1))

    def build() -> QGraph:
        g = QGraph()
        y = g.op("lepton.QConv", g.input("x", x), g.input("sx", np.float32([0.1])),
                 g.const(0, np.uint8), g.const(w, np.int8), g.const(ws, np.float32))  # fmt: skip
        g.output(g.op("Relu", y))
        return g

    got, expected, ex = run_both(build)
    assert families(ex) == []
    assert "constant input scale" in next(iter(ex.build_errors.values()))
    np.testing.assert_array_equal(got, expected)


def test_a_uint8_output_feeds_the_next_integer_conv_as_a_view() -> None:
    x = integer_data((1, 4, 6, 6), np.uint8)
    w1, ws1 = weights((5, 4, 3, 3))
    w2, ws2 = weights((3, 5, 1, 1))

    def build() -> QGraph:
        g = qconv_graph(x, 10, w1, ws1, None, relu_quantize(np.uint8, 0), pads=[1, 1, 1, 1])()
        q = g.graph.outputs[0]
        y = g.op("lepton.QConv", q, g.const(0.04, np.float32), g.const(0, np.uint8),
                 g.const(w2, np.int8), g.const(ws2, np.float32))  # fmt: skip
        g.output(g.quantize(y, 0.1, 128, np.uint8))
        return g

    got, expected, ex = run_both(build)
    assert families(ex) == ["qconv", "qconv"]
    assert not ex._steps[1].staged  # the second kernel reads the first one's uint8 buffer
    assert_quantized_close(got, expected)


def test_batch_3_strided_pointwise_to_int8() -> None:
    x = integer_data((3, 7, 9, 5), np.int8)
    w, ws = weights((5, 7, 1, 1))
    build = qconv_graph(x, -4, w, ws, None, relu_quantize(np.int8, -100), strides=[2, 2])
    got, expected, ex = run_both(build)
    assert families(ex) == ["qconv"] and got.shape == (3, 5, 5, 3)
    assert_quantized_close(got, expected)


def test_dilated_depthwise_with_channel_multiplier_int8() -> None:
    x = integer_data((1, 3, 10, 11), np.int8)
    w, ws = weights((6, 1, 3, 3), per_channel=False)
    bias = RNG.integers(-50, 50, 6).astype(np.int32)
    build = qconv_graph(x, 1, w, ws, bias, group=3, dilations=[2, 2], pads=[2, 2, 2, 2])
    got, expected, ex = run_both(build)
    assert "direct (depthwise)" in source(ex, "qconv")
    np.testing.assert_array_equal(got, expected)
