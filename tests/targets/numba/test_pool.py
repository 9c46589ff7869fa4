"""The pool template: MaxPool and AveragePool windows (strides, pads, dilations, ceil mode,
count_include_pad) and global pools, with the epilogue fused; refused pools fall back."""

from __future__ import annotations

import pytest

from .helpers import check, source_of


def test_max_pool_3x3_stride_2_pad_1_odd_size() -> None:
    check(
        """
        g (float[2, 3, 11, 9] x) => (float[2, 3, 6, 5] y) {
            y = MaxPool<kernel_shape = [3, 3], strides = [2, 2], pads = [1, 1, 1, 1]>(x)
        }""",
        {"pool": 1},
    )


def test_max_pool_dilated_ceil_mode() -> None:
    check(
        """
        g (float[1, 2, 10, 10] x) => (float[1, 2, 5, 5] y) {
            y = MaxPool<kernel_shape = [2, 2], strides = [2, 2], dilations = [2, 2],
                        ceil_mode = 1>(x)
        }""",
        {"pool": 1},
    )


@pytest.mark.parametrize("include", [0, 1])
def test_average_pool_counts_the_right_taps(include: int) -> None:
    check(
        f"""
        g (float[1, 3, 7, 8] x) => (float[1, 3, 4, 4] y) {{
            y = AveragePool<kernel_shape = [3, 3], strides = [2, 2], pads = [1, 1, 1, 0],
                            count_include_pad = {include}, ceil_mode = 1>(x)
        }}""",
        {"pool": 1},
    )


def test_global_average_pool_with_epilogue() -> None:
    model = check(
        """
        g (float[2, 5, 3, 7] x, float[1, 5, 1, 1] b) => (float[2, 5, 1, 1] y) {
            p = GlobalAveragePool(x)
            a = Add(p, b)
            y = Relu(a)
        }""",
        {"pool": 1},
    )
    assert "epilogue: Add -> Relu" in source_of(model, "pool")


def test_global_max_pool() -> None:
    check("g (float[1, 4, 5, 5] x) => (float[1, 4, 1, 1] y) { y = GlobalMaxPool(x) }", {"pool": 1})


def test_max_pool_with_indices_falls_back() -> None:
    check(
        """
        g (float[1, 2, 4, 4] x) => (float[1, 2, 2, 2] y, int64[1, 2, 2, 2] i) {
            y, i = MaxPool<kernel_shape = [2, 2], strides = [2, 2]>(x)
        }""",
        {},
        fallbacks=1,
    )
