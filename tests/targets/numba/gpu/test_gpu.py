"""On a real NVIDIA GPU: the tiny CNN through `CudaExecutor` against ONNX Runtime, and the
kernels' PTX for the device's own compute capability. Skipped without a GPU and driver."""

from __future__ import annotations

import importlib.util
import warnings

import numpy as np
import pytest

import lepton_compiler
from lepton_compiler.testing import run_onnxruntime

from .models import tiny_cnn

pytestmark = pytest.mark.cuda


def _gpu_or_skip() -> None:
    pytest.importorskip("numba")
    if importlib.util.find_spec("numba_cuda") is None:
        pytest.skip("numba-cuda is not installed")
    from numba import config, cuda

    if config.ENABLE_CUDASIM or not cuda.is_available():
        pytest.skip("needs an NVIDIA GPU and driver (numba.cuda.is_available() is False)")


def test_tiny_cnn_on_the_gpu_matches_onnxruntime() -> None:
    _gpu_or_skip()
    from numba import cuda

    from lepton_compiler.targets.numba.gpu.executor import CudaExecutor

    model = tiny_cnn(2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = lepton_compiler.compile(model, backend="reference").graph
    cc = cuda.get_current_device().compute_capability
    ex = CudaExecutor(graph, f"cuda:sm_{cc[0]}{cc[1]}")
    feeds = {"x": np.random.default_rng(0).standard_normal((2, 3, 10, 10)).astype(np.float32)}
    want = run_onnxruntime(model, feeds)["logits"]
    for _ in range(2):
        np.testing.assert_allclose(ex.run(feeds)["logits"], want, rtol=1e-4, atol=1e-5)
    assert ex.fallbacks == []
    ptx = ex.emit_ptx()
    assert len(ptx) == len(ex.kernels) and all(
        f".target sm_{cc[0]}{cc[1]}" in p for p in ptx.values()
    )
