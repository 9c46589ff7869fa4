"""The norm template (Softmax, LayerNormalization, lepton.SkipLayerNorm), the attention
template (lepton.Attention) and the transpose template, on odd sizes; refused cases fall
back."""

from __future__ import annotations

import numpy as np

from lepton_compiler.ir import DType, Graph, Node, TensorType, Value

from .helpers import check


def test_softmax_last_axis_with_epilogue() -> None:
    check(
        """
        g (float[3, 5, 37] x) => (float[3, 5, 37] y) <float k = {3.0}> {
            s = Softmax<axis = -1>(x)
            y = Mul(s, k)
        }""",
        {"norm": 1},
    )


def test_softmax_over_a_leading_axis_falls_back() -> None:
    check("g (float[3, 5] x) => (float[3, 5] y) { y = Softmax<axis = 0>(x) }", {}, fallbacks=1)


def test_layer_norm_over_two_axes() -> None:
    check(
        """
        g (float[2, 3, 4, 5] x, float[4, 5] s, float[4, 5] b) => (float[2, 3, 4, 5] y) {
            y = LayerNormalization<axis = 2, epsilon = 0.001>(x, s, b)
        }""",
        {"norm": 1},
    )


def _skip_and_attention_graph() -> Graph:
    """SkipLayerNorm (with bias), then attention over 3 heads with a padding mask."""
    f32 = DType.FLOAT32
    g = Graph(opset_imports={"": 18})
    x = g.add_input(Value("x", TensorType(f32, (2, 5, 12))))
    skip = g.add_input(Value("skip", TensorType(f32, (2, 5, 12))))
    mask = g.add_input(Value("mask", TensorType(f32, (2, 1, 1, 5))))
    rng = np.random.default_rng(3)
    gamma, beta, bias = (
        g.add_constant(rng.standard_normal(12).astype(np.float32), name=n)
        for n in ("gamma", "beta", "bias")
    )
    ln = Value("ln", TensorType(f32, (2, 5, 12)))
    g.append(
        Node(
            "lepton.SkipLayerNorm",
            [x, skip, gamma, beta, bias],
            {"epsilon": 1e-5},
            outputs=[ln],
            name="sln",
        )
    )
    shape = g.add_constant(np.array([2, 5, 3, 4], np.int64), name="shape")
    heads = Value("heads", TensorType(f32, (2, 5, 3, 4)))
    g.append(Node("Reshape", [ln, shape], {}, outputs=[heads], name="split"))
    q = Value("q", TensorType(f32, (2, 3, 5, 4)))
    g.append(Node("Transpose", [heads], {"perm": [0, 2, 1, 3]}, outputs=[q], name="tr"))
    y = Value("y", TensorType(f32, (2, 3, 5, 4)))
    g.append(Node("lepton.Attention", [q, q, q, mask], {"scale": 0.5}, outputs=[y], name="att"))
    g.outputs = [y]
    return g


def test_skip_layer_norm_transpose_and_attention_match_the_reference() -> None:
    import warnings

    import lepton_compiler
    from lepton_compiler.testing import run_reference

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback
        model = lepton_compiler.compile(_skip_and_attention_graph(), backend="numba")
    families = sorted(k.family for k in model.executor.kernels)
    assert families == ["attention", "norm", "transpose"]
    rng = np.random.default_rng(0)
    mask = np.zeros((2, 1, 1, 5), np.float32)
    mask[1, ..., 3:] = -10000.0
    feeds = {
        "x": rng.standard_normal((2, 5, 12)).astype(np.float32),
        "skip": rng.standard_normal((2, 5, 12)).astype(np.float32),
        "mask": mask,
    }
    expected = run_reference(_skip_and_attention_graph(), feeds)["y"]
    np.testing.assert_allclose(model.run(feeds)["y"], expected, rtol=1e-4, atol=1e-5)
