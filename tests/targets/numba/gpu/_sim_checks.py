"""CUDA kernels of the Numba backend run under Numba's CUDA simulator, compared with the
reference interpreter (and, for a whole model, ONNX Runtime).

This module is not collected by the main test run: the simulator only works when
``NUMBA_ENABLE_CUDASIM=1`` is set before ``numba`` is first imported, and other tests import
numba first. `test_simulator.py` runs it with pytest in a fresh process with the variable
set. The simulator runs every CUDA thread as a Python thread, so shapes are tiny but chosen
to cross tile and block edges (sizes that are not multiples of 16, several tiles, batches).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest

if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
    pytest.skip("run by test_simulator.py with NUMBA_ENABLE_CUDASIM=1", allow_module_level=True)

import lepton_compiler
from lepton_compiler.ir import Graph
from lepton_compiler.targets.numba.gpu.executor import CudaExecutor
from lepton_compiler.testing import graph_from_text, random_inputs, run_reference

from .models import skip_and_attention_graph, tiny_cnn

RTOL, ATOL = 1e-4, 1e-5


def optimized(graph: Graph) -> Graph:
    """The graph after the O2 pipeline (fused groups), as the backends receive it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return lepton_compiler.compile(graph, backend="reference").graph


def check(
    make: str | Any,
    families: Mapping[str, int],
    fallbacks: int = 0,
    feeds: Mapping[str, np.ndarray] | None = None,
    runs: int = 2,
) -> CudaExecutor:
    """Build `make` (ONNX text, or a function returning a Graph) for CUDA, check which
    templates took its nodes, and compare `runs` runs with the reference interpreter (a
    second run reuses every planned device buffer)."""
    fresh = (lambda: graph_from_text(make)) if isinstance(make, str) else make
    ex = CudaExecutor(optimized(fresh()), "cuda:sm_80")
    steps = ex._current._steps
    got: dict[str, int] = {}
    for step in steps:
        if step.kernel is not None:
            got[step.kernel.family] = got.get(step.kernel.family, 0) + 1
    assert got == dict(families), (got, ex.build_errors)
    n_fallback = sum(1 for s in steps if s.kernel is None and s.view_shape is None)
    assert n_fallback == fallbacks, ex.build_errors
    ref = fresh()
    feeds = dict(feeds) if feeds is not None else random_inputs(ref, seed=1)
    expected = run_reference(ref, feeds)
    for _ in range(runs):
        actual = ex.run(feeds)
        for name, want in expected.items():
            assert actual[name].shape == np.shape(want), name
            np.testing.assert_allclose(actual[name], want, rtol=RTOL, atol=ATOL, err_msg=name)
    return ex


def source(ex: CudaExecutor, family: str) -> str:
    """The generated source of the executor's first kernel of `family`, read from its file."""
    for k in ex.kernels:
        if k.family == family:
            return k.path.read_text(encoding="utf-8")
    raise AssertionError(f"no {family} kernel")


# -- element-wise ------------------------------------------------------------------------------


def test_elementwise_chain_with_broadcast_operand_and_gelu_pieces() -> None:
    ex = check(
        """
        g (float[3, 37] x, float[37] b) => (float[3, 37] y)
            <float h = {0.5}, float r = {0.70710677}, float one = {1.0}> {
            a = Add(x, b)
            s = Mul(a, r)
            e = Erf(s)
            p = Add(e, one)
            q = Mul(a, p)
            y = Mul(q, h)
        }""",
        {"elementwise": 1},
    )
    src = source(ex, "elementwise")
    assert "@cuda.jit(cache=True)" in src and "cuda.gridsize(1)" in src
    assert "math.erf(" in src and "e1[0, i1]" in src and "lepton.Gelu" in src


# -- matmul / gemm -----------------------------------------------------------------------------


def test_matmul_odd_sizes_several_tiles_bias_relu_fused() -> None:
    ex = check(
        """
        g (float[20, 19] a, float[19, 18] b, float[18] c) => (float[20, 18] y) {
            m = MatMul(a, b)
            s = Add(m, c)
            y = Relu(s)
        }""",
        {"dense": 1},
        runs=1,
    )
    plan = ex.kernels[0].plan
    assert plan.grid == (2, 2, 1) and plan.block == (16, 16)
    src = source(ex, "dense")
    assert "cuda.shared.array((16, 16), float32)" in src and "cuda.syncthreads()" in src
    assert "v0 = acc + e0[0, j]" in src and "out[i, j] = v1" in src


def test_gemm_transposed_operands_alpha_beta_row_bias() -> None:
    check(
        """
        g (float[7, 5] a, float[6, 7] b, float[6] c) => (float[5, 6] y) {
            y = Gemm<transA = 1, transB = 1, alpha = 0.5, beta = 2.0>(a, b, c)
        }""",
        {"dense": 1},
    )


def test_batched_matmul_and_rows_merged_matmul() -> None:
    check(
        """
        g (float[2, 5, 4] a, float[2, 4, 6] b, float[6, 3] w) => (float[2, 5, 3] y) {
            m = MatMul(a, b)
            y = MatMul(m, w)
        }""",
        {"dense": 2},
    )


# -- conv --------------------------------------------------------------------------------------


def test_conv_stride_pads_bias_residual_relu_fused() -> None:
    ex = check(
        """
        g (float[1, 3, 7, 6] x, float[4, 3, 3, 3] w, float[4] b, float[1, 4, 4, 3] r)
            => (float[1, 4, 4, 3] y) {
            c = Conv<strides = [2, 2], pads = [1, 1, 1, 1]>(x, w, b)
            a = Add(c, r)
            y = Relu(a)
        }""",
        {"conv": 1},
    )
    src = source(ex, "conv")
    assert "implicit GEMM" in src and "epilogue: Add -> Relu" in src
    assert "acc += b[i]" in src and "v0 = acc + e0[0, i, j]" in src
    assert "if iy >= 0 and iy < 7 and ix >= 0 and ix < 6:" in src


def test_grouped_conv_dilation_asymmetric_pads_batch_2() -> None:
    check(
        """
        g (float[2, 4, 7, 7] x, float[6, 2, 3, 3] w, float[6] b) => (float[2, 6, 3, 4] y) {
            y = Conv<group = 2, strides = [2, 1], dilations = [1, 2], pads = [0, 1, 0, 0]>(x, w, b)
        }""",
        {"conv": 1},
        runs=1,
    )


def test_depthwise_conv_with_channel_multiplier_and_clip() -> None:
    ex = check(
        """
        g (float[1, 3, 6, 5] x, float[6, 1, 3, 3] w) => (float[1, 6, 3, 3] y)
            <float lo = {0.0}, float hi = {0.5}> {
            c = Conv<group = 3, strides = [2, 2], pads = [1, 1, 1, 1]>(x, w)
            y = Clip(c, lo, hi)
        }""",
        {"conv": 1},
    )
    assert "direct (depthwise)" in source(ex, "conv")


def test_conv_1d() -> None:
    check(
        """
        g (float[2, 3, 9] x, float[5, 3, 3] w) => (float[2, 5, 5] y) {
            y = Conv<strides = [2], pads = [1, 1]>(x, w)
        }""",
        {"conv": 1},
    )


# -- pooling -----------------------------------------------------------------------------------


def test_pools() -> None:
    check(
        """
        g (float[1, 3, 7, 7] x) => (float[1, 3, 4, 4] a, float[1, 3, 4, 4] b, float[1, 3, 4, 4] c,
                                     float[1, 3, 1, 1] d) {
            a = MaxPool<kernel_shape = [3, 3], strides = [2, 2], pads = [1, 1, 1, 1]>(x)
            b = AveragePool<kernel_shape = [3, 3], strides = [2, 2], pads = [1, 1, 1, 1],
                            count_include_pad = 1>(x)
            c = AveragePool<kernel_shape = [3, 3], strides = [2, 2], pads = [0, 0, 1, 1],
                            ceil_mode = 1>(x)
            d = GlobalAveragePool(x)
        }""",
        {"pool": 4},
    )


# -- normalizations, attention, transpose ------------------------------------------------------


def test_softmax_odd_row_with_epilogue_and_layer_norm() -> None:
    ex = check(
        """
        g (float[2, 37] x, float[2, 3, 10] z, float[10] s, float[10] b)
            => (float[2, 37] y, float[2, 3, 10] n) <float k = {3.0}> {
            e = Softmax<axis = -1>(x)
            y = Mul(e, k)
            n = LayerNormalization<axis = -1, epsilon = 0.00001>(z, s, b)
        }""",
        {"norm": 2},
    )
    softmax = next(k.source for k in ex.kernels if k.plan.name == "softmax")
    assert "cuda.shared.array(64, float32)" in softmax and "if tid < 32:" in softmax


def test_skip_layer_norm_transpose_and_attention() -> None:
    rng = np.random.default_rng(0)
    mask = np.zeros((2, 1, 1, 2), np.float32)
    mask[1, ..., 1:] = -10000.0
    feeds = {
        "x": rng.standard_normal((2, 2, 8)).astype(np.float32),
        "skip": rng.standard_normal((2, 2, 8)).astype(np.float32),
        "mask": mask,
    }
    ex = check(skip_and_attention_graph, {"norm": 1, "transpose": 1, "attention": 1}, feeds=feeds)
    assert "mask[b0, 0, 0, j]" in source(ex, "attention")


# -- fallbacks ---------------------------------------------------------------------------------


REFUSED = """
g (float[3, 5] x, float[5, 4] w, float[4, 2] v) => (float[3, 2] y, float[3, 5] z) {
    a = MatMul(x, w)
    s = Softmax<axis = 0>(a)
    y = MatMul(s, v)
    z = Cos(x)
}"""


def test_refused_and_unknown_groups_run_on_the_host_between_kernels() -> None:
    ex = check(REFUSED, {"dense": 2}, fallbacks=2)
    assert any("non-last axis" in why for why in ex.build_errors.values()), ex.build_errors
    assert sorted(ex.fallbacks) == ["Cos ×1 (reference kernel)", "Softmax ×1 (reference kernel)"]
    rows = ex.profile(random_inputs(graph_from_text(REFUSED), seed=2), repeat=1)
    steps: dict[str, int] = {}
    for r in rows:
        steps[r["kind"]] = steps.get(r["kind"], 0) + r["count"]
    assert steps == {"cuda:dense": 2, "reference": 2}


def test_build_reports_and_warns_about_fallbacks() -> None:
    from types import SimpleNamespace

    from lepton_compiler.targets.numba.gpu.build import build_cuda_executor

    graph = optimized(graph_from_text("g (float[3, 5] x) => (float[3, 5] y) { y = Cos(x) }"))
    report = SimpleNamespace(fallbacks=[], notes=[])
    with pytest.warns(UserWarning, match=r"Cos ×1 \(reference kernel\)"):
        ex = build_cuda_executor(graph, "cuda:sm_80", report)
    assert report.fallbacks == ["Cos ×1 (reference kernel)"]
    assert report.notes == [
        "numba-cuda: 0 CUDA kernels (0 distinct, 0.0 s to build); 100.0% of "
        "Conv/MatMul/Gemm FLOPs run in CUDA kernels"
    ]
    np.testing.assert_allclose(
        ex.run({"x": np.ones((3, 5), np.float32)})["y"],
        np.full((3, 5), np.cos(np.float32(1.0))),
        rtol=1e-6,
    )


# -- a whole model against ONNX Runtime --------------------------------------------------------


def test_tiny_cnn_with_symbolic_batch_matches_onnxruntime() -> None:
    from lepton_compiler.testing import run_onnxruntime

    model = tiny_cnn("N")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = lepton_compiler.compile(model, backend="reference").graph
    ex = CudaExecutor(graph, "cuda:sm_80")
    rng = np.random.default_rng(1)
    for batch in (1, 2):
        feeds = {"x": rng.standard_normal((batch, 3, 6, 6)).astype(np.float32)}
        want = run_onnxruntime(model, feeds)["logits"]
        got = ex.run(feeds)["logits"]
        assert got.shape == (batch, 5)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
        assert ex.fallbacks == [] and ex.native_flops_share == 1.0
        assert sorted(k.family for k in ex._current.kernels) == [
            "conv",
            "conv",
            "dense",
            "pool",
            "pool",
        ]
        assert ex.device_bytes < ex.unshared_bytes  # buffers shared by liveness
    assert len(ex._by_shape) == 2


def test_compile_api_on_a_cuda_target() -> None:
    """``compile(..., backend="numba", target="cuda:sm_80")`` builds the CUDA executor, and
    the compiled model runs and matches ONNX Runtime."""
    from lepton_compiler.targets.numba.gpu.executor import CudaExecutor as Executor
    from lepton_compiler.testing import run_onnxruntime

    model = tiny_cnn(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        compiled = lepton_compiler.compile(model, backend="numba", target="cuda:sm_80")
    assert isinstance(compiled.executor, Executor)
    assert any(n.startswith("numba-cuda:") for n in compiled.report.notes)
    feeds = {"x": np.random.default_rng(3).standard_normal((1, 3, 6, 6)).astype(np.float32)}
    want = run_onnxruntime(model, feeds)["logits"]
    np.testing.assert_allclose(compiled.run(feeds)["logits"], want, rtol=1e-4, atol=1e-5)
