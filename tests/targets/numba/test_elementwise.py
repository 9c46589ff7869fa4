"""The element-wise template: chains of the op table with NumPy broadcasting, as one loop
nest (merged dims), against the reference interpreter; refused chains fall back."""

from __future__ import annotations

import numpy as np

from .helpers import check, source_of


def test_broadcast_chain_is_one_kernel() -> None:
    model = check(
        """
        g (float[2, 3, 5, 7] x, float[3, 1, 1] b, float[7] c) => (float[2, 3, 5, 7] y) {
            a = Add(x, b)
            r = Relu(a)
            s = Sigmoid(r)
            m = Mul(s, c)
            y = Sub(m, x)
        }""",
        {"elementwise": 1},
    )
    src = source_of(model, "elementwise")
    assert "Add -> Relu -> Sigmoid -> Mul -> Sub" in src
    assert "for t in prange(" in src
    assert "e1[0, i1, 0, 0]" in src or "e1[0, i1, 0]" in src  # b broadcast along n and h, w


def test_every_unary_op_of_the_table() -> None:
    check(
        """
        g (float[3, 11] x) => (float[3, 11] y) {
            a = Tanh(x)
            b = Erf(a)
            c = Exp(b)
            d = Abs(x)
            e = Sqrt(d)
            f = Add(c, e)
            h = Neg(f)
            k = LeakyRelu<alpha = 0.3>(h)
            l = HardSigmoid(k)
            m = HardSwish(l)
            y = Reciprocal(m)
        }""",
        {"elementwise": 2},  # x has two readers: Tanh's chain and Abs's chain (joined by Add)
        rtol=1e-4,
    )


def test_binary_ops_with_scalar_constants() -> None:
    check(
        """
        g (float[4, 9] x, float[4, 1] z) => (float[4, 9] y) <float two = {2.0}, float lo = {-0.5},
                                                           float hi = {0.75}> {
            a = Pow(x, two)
            b = Div(a, z)
            c = Max(b, x)
            d = Min(c, z)
            y = Clip(d, lo, hi)
        }""",
        {"elementwise": 1},
        feeds={
            "x": np.linspace(-2, 2, 36, dtype=np.float32).reshape(4, 9),
            "z": np.array([[0.5], [1.5], [-2.0], [3.0]], np.float32),
        },
    )


def test_cast_from_int64_reads_the_integer_operand() -> None:
    check(
        """
        g (int64[1, 1, 1, 13] m) => (float[1, 1, 1, 13] y) <float one = {1.0},
                                                              float big = {-10000.0}> {
            c = Cast<to = 1>(m)
            s = Sub(one, c)
            y = Mul(s, big)
        }""",
        {"elementwise": 1},
        feeds={"m": (np.arange(13) % 3 == 0).astype(np.int64).reshape(1, 1, 1, 13)},
    )


def test_flat_chain_of_odd_size_runs_in_chunks() -> None:
    model = check(
        """
        g (float[3, 4099] x, float[3, 4099] z) => (float[3, 4099] y) {
            a = Mul(x, z)
            y = Tanh(a)
        }""",
        {"elementwise": 1},
    )
    assert "for blk in prange(4)" in source_of(model, "elementwise")


def test_op_without_an_entry_falls_back() -> None:
    model = check(
        """
        g (float[2, 5] x, float[2, 5] z) => (float[2, 5] y) {
            m = Greater(x, z)
            y = Where(m, x, z)
        }""",
        {},
        fallbacks=1,
    )
    assert model.report.fallbacks == ["Greater+Where ×1 (reference kernel)"]
    assert "no Numba template for Greater" in next(iter(model.executor.build_errors.values()))


def test_scalar_output_is_refused() -> None:
    model = check("g (float x) => (float y) { y = Relu(x) }", {}, fallbacks=1)
    assert "scalar" in next(iter(model.executor.build_errors.values()))
