"""Kernels with enough work to run in parallel (`work.SMALL_WORK`): one product on
multi-threaded OpenBLAS and a parallel epilogue (default), or one tile of rows per Numba
thread on 1-thread OpenBLAS (``LEPTON_NUMBA_PRODUCTS=tiles``), match the reference."""

from __future__ import annotations

import pytest

from .helpers import check, source_of

MODES = ["blas", "tiles"]


@pytest.mark.parametrize("mode", MODES)
def test_grouped_conv_with_relu(mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEPTON_NUMBA_PRODUCTS", mode)
    model = check(  # 75 MFLOP
        """
        g (float[1, 64, 32, 32] x, float[128, 32, 3, 3] w, float[128] b)
            => (float[1, 128, 32, 32] y) {
            c = Conv<group = 2, pads = [1, 1, 1, 1]>(x, w, b)
            y = Relu(c)
        }""",
        {"conv": 1},
        rtol=1e-3,
        atol=1e-4,
    )
    (kernel,) = model.executor.kernels
    assert kernel.plan.parallel
    src = source_of(model, "conv")
    if mode == "tiles":
        assert "np.dot(w[oc0:oc1], cols, out[n, oc0:oc1])" in src
        assert model.executor._steps[0].threads == (model.executor.threads, 1)
    else:
        assert "np.dot(w[g * 64:g * 64 + 64], cols, out[n, g * 64:g * 64 + 64])" in src
        assert "for oc in prange(g * 64, g * 64 + 64):" in src


@pytest.mark.parametrize("mode", MODES)
def test_gemm_with_bias_and_relu(mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEPTON_NUMBA_PRODUCTS", mode)
    model = check(  # 67 MFLOP
        """
        g (float[250, 512] a, float[512, 262] b, float[262] c) => (float[250, 262] y) {
            m = Gemm(a, b, c)
            y = Relu(m)
        }""",
        {"dense": 1},
        rtol=1e-3,
        atol=1e-4,
    )
    src = source_of(model, "dense")
    if mode == "tiles":
        assert "np.dot(a[i0:i1], b, out[i0:i1])" in src and "for i in range(i0, i1):" in src
    else:
        assert "np.dot(a, b, out)" in src and "for i in prange(250):" in src
