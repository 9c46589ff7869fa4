"""Whole models through ``compile(backend="tvm")``: outputs match ONNX Runtime on the
standard models (symbolic batch at batch 1 and 8) and on the two real models with real
inputs (MNIST's 10,000 test images, UltraFace on photos)."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tvm")

import lepton_compiler
from tests.e2e.conftest import ModelCache
from tests.e2e.real_models import check_mnist, check_ultraface
from tests.e2e.test_models import make_feeds, ort_timed


def _compile_tvm(path: Path | str, **kwargs: object) -> lepton_compiler.CompiledModel:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fallbacks are checked where they matter
        return lepton_compiler.compile(str(path), backend="tvm", **kwargs)


def _check_batches_1_and_8(name: str, path: Path) -> None:
    compiled = _compile_tvm(path)
    assert compiled.executor.native_flops_share == pytest.approx(1.0)
    for batch in (1, 8):
        feeds = make_feeds(name, batch)
        ours = compiled.run(feeds)
        theirs, _ = ort_timed(path, feeds)
        for key, ref in theirs.items():
            assert ours[key].shape == ref.shape
            np.testing.assert_allclose(ours[key], ref, rtol=1e-3, atol=1e-4, err_msg=key)


@pytest.mark.parametrize("name", ["small_cnn", "mlp", "bert_tiny", "mobilenetv2"])
def test_symbolic_batch_1_and_8_match_onnxruntime(models: ModelCache, name: str) -> None:
    _check_batches_1_and_8(name, models.path(name, batch="batch"))


def test_resnet50_symbolic_batch_1_and_8_in_a_fresh_process(models: ModelCache) -> None:
    """ResNet-50 at batch 1 and 8, in its own process with faulthandler on, so that a
    crash is reported with its stack instead of killing a test worker. (Its max pool once
    read a row before its input and one after it: harmless or a segfault, depending on what
    the allocator had placed next to the buffer. `tests/targets/tvm/test_guard.py` now runs
    models with every buffer against a guard page.)"""
    path = models.path("resnet50", batch="batch")
    script = (
        "import warnings; warnings.simplefilter('ignore')\n"
        "from pathlib import Path\n"
        "from tests.e2e.test_tvm_backend import _check_batches_1_and_8\n"
        f"_check_batches_1_and_8('resnet50', Path({str(path)!r}))\n"
        "print('ok')\n"
    )
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONFAULTHANDLER": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=root, capture_output=True, text=True, env=env,
        timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), (
        f"exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    )


def test_mnist_all_test_images_agree_with_onnxruntime() -> None:
    compiled = check_mnist(_compile_tvm)
    assert compiled.report.fallbacks == []


def test_ultraface_on_photos_matches_onnxruntime() -> None:
    compiled = check_ultraface(_compile_tvm)
    assert compiled.report.fallbacks == []  # its Transposes, Concats and Slices included
