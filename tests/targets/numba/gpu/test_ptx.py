"""PTX from the generated kernels without a GPU (numba-cuda's NVVM), and the CUDA executor's
refusal where there is neither a GPU nor the simulator. Skipped where NVVM is missing."""

from __future__ import annotations

import importlib.util
import re

import pytest

from lepton_compiler.errors import LeptonError

from .test_codegen import CONV, MATMUL, groups

pytest.importorskip("numba")
if importlib.util.find_spec("numba_cuda") is None:
    pytest.skip("numba-cuda is not installed (pip install numba-cuda)", allow_module_level=True)


def _ptx_or_skip() -> None:
    from lepton_compiler.targets.numba.gpu.ptx import ptx_unavailable

    why = ptx_unavailable()
    if why is not None:
        pytest.skip(f"no PTX here: {why}")


@pytest.mark.parametrize("text", [CONV, MATMUL], ids=["conv", "matmul"])
def test_tiled_kernels_compile_to_ptx_for_sm_80(text: str) -> None:
    _ptx_or_skip()
    from lepton_compiler.targets.numba.gpu.ptx import emit_ptx

    (group,) = groups(text)
    ptx = emit_ptx(group, cc=(8, 0))
    assert ".target sm_80" in ptx
    assert len(re.findall(r"\.visible \.entry", ptx)) == 1
    assert "bar.sync" in ptx  # cuda.syncthreads()
    assert re.search(r"\.shared \.align \d+ \.b8 \S+\[1024\]", ptx)  # two 16x16 float32 tiles
    assert "fma.rn.f32" in ptx or "mul.f32" in ptx


def test_elementwise_gelu_compiles_to_ptx_without_barriers() -> None:
    _ptx_or_skip()
    from lepton_compiler.targets.numba.gpu.ptx import emit_ptx

    text = """
    g (float[3, 37] x) => (float[3, 37] y)
        <float h = {0.5}, float r = {0.70710677}, float one = {1.0}> {
        s = Mul(x, r)
        e = Erf(s)
        p = Add(e, one)
        q = Mul(x, p)
        y = Mul(q, h)
    }"""
    (group,) = groups(text)
    ptx = emit_ptx(group, cc=(9, 0))
    assert ".target sm_90" in ptx and "bar.sync" not in ptx


def test_executor_without_gpu_or_simulator_says_how_to_get_one() -> None:
    from numba import config, cuda

    if config.ENABLE_CUDASIM or cuda.is_available():
        pytest.skip("a GPU or the simulator is present")
    from lepton_compiler.targets.numba.gpu.executor import CudaExecutor

    graph = groups(MATMUL)[0].attrs["body"]
    with pytest.raises(LeptonError, match="NUMBA_ENABLE_CUDASIM=1"):
        CudaExecutor(graph, "cuda:sm_80")


def test_every_other_family_compiles_to_ptx() -> None:
    _ptx_or_skip()
    from lepton_compiler.targets.numba.gpu.ptx import emit_ptx

    from .models import skip_and_attention_graph

    text = """
    g (float[1, 4, 6, 5] x, float[8, 1, 3, 3] w) => (float[1, 8, 3, 3] y, float[1, 4, 3, 3] a,
                                                    float[1, 4, 3, 3] b, float[1, 4, 1, 1] c) {
        y = Conv<group = 4, strides = [2, 2], pads = [1, 1, 1, 1]>(x, w)
        a = MaxPool<kernel_shape = [3, 3], strides = [2, 2], pads = [1, 1, 1, 1]>(x)
        b = AveragePool<kernel_shape = [2, 2], strides = [2, 2], ceil_mode = 1>(x)
        c = GlobalAveragePool(x)
    }"""
    seen = set()
    for group in [*groups(text), *groups(skip_and_attention_graph())]:
        ptx = emit_ptx(group)
        assert ".target sm_80" in ptx and ".visible .entry" in ptx
        seen.add(group.attrs["anchor"])
    assert seen == {
        "Conv",
        "MaxPool",
        "AveragePool",
        "GlobalAveragePool",
        "lepton.SkipLayerNorm",
        "Transpose",
        "lepton.Attention",
    }
