"""The conv template: im2col + np.dot for ordinary and grouped convs, direct loops for
depthwise ones, bias and epilogue fused into the store; odd sizes, strides, dilations,
asymmetric pads, batch 2; refused convs fall back."""

from __future__ import annotations

import pytest

from .helpers import check, source_of


def test_3x3_with_bias_relu_is_one_kernel_with_the_epilogue_in_its_source() -> None:
    model = check(
        """
        g (float[1, 5, 9, 7] x, float[6, 5, 3, 3] w, float[6] b) => (float[1, 6, 9, 7] y) {
            c = Conv<pads = [1, 1, 1, 1]>(x, w, b)
            y = Relu(c)
        }""",
        {"conv": 1},
    )
    src = source_of(model, "conv")
    assert "epilogue: Relu" in src
    assert "np.dot(w, cols, out[n])" in src
    assert "acc = out[n, oc, p] + b[oc]" in src
    assert "v0 = max(acc, C0)" in src and "out[n, oc, p] = v0" in src


def test_strided_dilated_asymmetric_pads_batch_2() -> None:
    check(
        """
        g (float[2, 3, 11, 10] x, float[4, 3, 3, 2] w) => (float[2, 4, 5, 5] y) {
            y = Conv<strides = [2, 2], dilations = [2, 1], pads = [2, 0, 1, 1]>(x, w)
        }""",
        {"conv": 1},
    )


def test_pointwise_with_residual_add_and_relu() -> None:
    model = check(
        """
        g (float[2, 8, 5, 3] x, float[6, 8, 1, 1] w, float[6] b, float[2, 6, 5, 3] r)
            => (float[2, 6, 5, 3] y) {
            c = Conv(x, w, b)
            a = Add(c, r)
            y = Relu(a)
        }""",
        {"conv": 1},
    )
    src = source_of(model, "conv")
    assert "np.dot (1x1)" in src and "e0[n, oc, p]" in src


def test_grouped_conv() -> None:
    check(
        """
        g (float[1, 6, 7, 7] x, float[4, 3, 3, 3] w, float[4] b) => (float[1, 4, 4, 4] y) {
            y = Conv<group = 2, strides = [2, 2], pads = [1, 1, 1, 1]>(x, w, b)
        }""",
        {"conv": 1},
    )


@pytest.mark.parametrize(("mult", "stride"), [(1, 1), (2, 2)])
def test_depthwise_with_clip(mult: int, stride: int) -> None:
    out = 9 if stride == 1 else 5
    model = check(
        f"""
        g (float[2, 5, 9, 9] x, float[{5 * mult}, 1, 3, 3] w, float[{5 * mult}] b)
            => (float[2, {5 * mult}, {out}, {out}] y) <float lo = {{0.0}}, float hi = {{6.0}}> {{
            c = Conv<group = 5, strides = [{stride}, {stride}], pads = [1, 1, 1, 1]>(x, w, b)
            y = Clip(c, lo, hi)
        }}""",
        {"conv": 1},
    )
    src = source_of(model, "conv")
    assert "direct (depthwise)" in src and "min(max(acc, C0), C1)" in src


def test_1d_conv_runs_as_2d() -> None:
    check(
        """
        g (float[1, 3, 17] x, float[4, 3, 5] w) => (float[1, 4, 7] y) {
            y = Conv<strides = [2], pads = [1, 0]>(x, w)
        }""",
        {"conv": 1},
    )


def test_3d_conv_falls_back() -> None:
    model = check(
        """
        g (float[1, 2, 4, 4, 4] x, float[3, 2, 2, 2, 2] w) => (float[1, 3, 3, 3, 3] y) {
            y = Conv(x, w)
        }""",
        {},
        fallbacks=1,
    )
    assert "1-D and 2-D" in next(iter(model.executor.build_errors.values()))


def test_epilogue_operand_broadcast_along_part_of_the_pixels_falls_back() -> None:
    model = check(
        """
        g (float[1, 2, 4, 5] x, float[3, 2, 1, 1] w, float[4, 1] s) => (float[1, 3, 4, 5] y) {
            c = Conv(x, w)
            y = Mul(c, s)
        }""",
        {},
        fallbacks=1,
    )
    assert "part of a merged loop dimension" in next(iter(model.executor.build_errors.values()))
