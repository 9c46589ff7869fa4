"""The dense template: Gemm (alpha, beta, transposed operands, broadcast C) and MatMul (rows
of any rank against a 2-D matrix, batched products) with the epilogue fused; refused shapes
fall back."""

from __future__ import annotations

from .helpers import check, source_of


def test_gemm_trans_b_alpha_beta_broadcast_c_relu() -> None:
    model = check(
        """
        g (float[7, 13] a, float[5, 13] b, float[1, 5] c) => (float[7, 5] y) {
            m = Gemm<transB = 1, alpha = 0.5, beta = 2.0>(a, b, c)
            y = Relu(m)
        }""",
        {"dense": 1},
    )
    src = source_of(model, "dense")
    assert "np.dot(a, b.T, out)" in src
    assert "acc = out[i, j] * C0 + C1 * c[0, j]" in src and "out[i, j] = v0" in src


def test_gemm_trans_a_without_c() -> None:
    check(
        "g (float[13, 7] a, float[13, 3] b) => (float[7, 3] y) { y = Gemm<transA = 1>(a, b) }",
        {"dense": 1},
    )


def test_matmul_rows_of_rank_3_with_bias_and_gelu() -> None:
    check(
        """
        g (float[2, 9, 11] a, float[11, 6] b, float[6] c) => (float[2, 9, 6] y) {
            m = MatMul(a, b)
            s = Add(m, c)
            y = Tanh(s)
        }""",
        {"dense": 1},
    )


def test_batched_matmul() -> None:
    model = check(
        "g (float[2, 3, 5, 4] a, float[2, 3, 4, 7] b) => (float[2, 3, 5, 7] y) "
        "{ y = MatMul(a, b) }",
        {"dense": 1},
    )
    assert "for q in range(6)" in source_of(model, "dense")


def test_matmul_with_a_vector_falls_back() -> None:
    model = check(
        "g (float[3, 4] a, float[4] b) => (float[3] y) { y = MatMul(a, b) }", {}, fallbacks=1
    )
    assert "1-D" in next(iter(model.executor.build_errors.values()))
