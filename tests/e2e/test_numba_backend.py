"""Whole models through ``compile(backend="numba")``: outputs match ONNX Runtime on the small
models at batch 1, on MobileNetV2 and ResNet-50 at batch 1 and 2 (one symbolic-batch
compile, specialized per batch), and on the two real models with real inputs (MNIST's 10,000
test images, UltraFace on photos), with every Conv/MatMul/Gemm FLOP in Numba kernels.

Kernels come from Numba's disk cache after the first run on a machine (``~/.cache/lepton/
numba``), so a warm run of this file takes seconds of compile time instead of a minute."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

pytest.importorskip("numba")
pytest.importorskip("scipy")

import lepton_compiler
from tests.e2e.conftest import ModelCache
from tests.e2e.real_models import check_mnist, check_ultraface
from tests.e2e.test_models import make_feeds, ort_timed


def _check(
    models: ModelCache, name: str, batches: tuple[int, ...]
) -> lepton_compiler.CompiledModel:
    path = models.path(name, batch="batch")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fallbacks are checked below
        compiled = lepton_compiler.compile(str(path), backend="numba")
    assert compiled.executor.native_flops_share == pytest.approx(1.0)
    for batch in batches:
        feeds = make_feeds(name, batch)
        ours = compiled.run(feeds)
        theirs, _ = ort_timed(path, feeds)
        for key, ref in theirs.items():
            assert ours[key].shape == ref.shape
            np.testing.assert_allclose(ours[key], ref, rtol=1e-3, atol=1e-4, err_msg=key)
    return compiled


@pytest.mark.parametrize("name", ["small_cnn", "mlp", "bert_tiny"])
def test_small_models_match_onnxruntime(models: ModelCache, name: str) -> None:
    compiled = _check(models, name, (1,))
    # BERT's embedding Gather is the one op without a template
    expected = ["Gather ×1 (reference kernel)"] if name == "bert_tiny" else []
    assert compiled.report.fallbacks == expected


@pytest.mark.parametrize("name", ["mobilenetv2", "resnet50"])
def test_cnn_symbolic_batch_1_and_2_match_onnxruntime(models: ModelCache, name: str) -> None:
    compiled = _check(models, name, (1, 2))
    assert compiled.report.fallbacks == []
    assert len(compiled.executor._by_shape) == 2


def _compile_numba(path: object) -> lepton_compiler.CompiledModel:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fallbacks are checked by the callers
        return lepton_compiler.compile(str(path), backend="numba")


def test_mnist_all_test_images_agree_with_onnxruntime() -> None:
    compiled = check_mnist(_compile_numba)
    assert compiled.executor.native_flops_share == pytest.approx(1.0)


def test_ultraface_on_photos_matches_onnxruntime() -> None:
    compiled = check_ultraface(_compile_numba)
    assert compiled.executor.native_flops_share == pytest.approx(1.0)
