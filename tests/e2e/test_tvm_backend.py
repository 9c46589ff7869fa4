"""Whole models through ``compile(backend="tvm")``: outputs match ONNX Runtime on the
standard models (symbolic batch at batch 1 and 8) and on the two real models with real
inputs (MNIST's 10,000 test images, UltraFace on photos)."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest

pytest.importorskip("tvm")

import lepton_compiler
from lepton_compiler.testing import run_onnxruntime
from tests.e2e.conftest import ModelCache
from tests.e2e.test_models import make_feeds, ort_timed

REAL = Path(__file__).resolve().parents[2] / ".." / "shared" / "models"


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


def _real(name: str) -> Path:
    path = REAL / name / "model.onnx"
    if not path.exists():
        pytest.skip(f"{path} is absent (real models live in ../shared/models beside the repo)")
    return path


def _mnist_test_set() -> tuple[np.ndarray, np.ndarray]:
    with gzip.open(REAL / "mnist" / "t10k-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)
    with gzip.open(REAL / "mnist" / "t10k-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    return images.astype(np.float32), labels


def test_mnist_all_test_images_agree_with_onnxruntime() -> None:
    """All 10,000 test images one by one (the model's Reshape fixes batch 1): the same
    top-1 as ONNX Runtime on every image, and its accuracy (98.91 %)."""
    import onnxruntime as ort

    path = _real("mnist")
    compiled = _compile_tvm(path)
    assert compiled.report.fallbacks == []
    images, labels = _mnist_test_set()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    # One runtime after the other: alternating them per image makes each wait for the
    # other's spinning thread pool (about 100x slower here).
    ours_out = np.stack([compiled.run({"Input3": images[i : i + 1]})["Plus214_Output_0"][0]
                         for i in range(len(images))])  # fmt: skip
    theirs_out = np.stack([session.run(None, {"Input3": images[i : i + 1]})[0][0]
                           for i in range(len(images))])  # fmt: skip
    worst = float((np.abs(ours_out - theirs_out).max(1) / (1.0 + np.abs(theirs_out).max(1))).max())
    ours, theirs = ours_out.argmax(1), theirs_out.argmax(1)
    assert worst < 1e-4
    assert (ours == theirs).all()
    assert float((ours == labels).mean()) == pytest.approx(0.9891, abs=1e-4)


def test_ultraface_on_photos_matches_onnxruntime() -> None:
    from PIL import Image

    path = _real("ultraface")
    compiled = _compile_tvm(path)
    assert compiled.report.fallbacks == []  # its Transposes, Concats and Slices included
    model = onnx.load(path)
    photos = sorted((REAL / "ultraface" / "images").glob("*.jpg"))[:3]
    assert photos
    for photo in photos:
        rgb = np.asarray(Image.open(photo).convert("RGB").resize((320, 240)), np.float32)
        x = ((rgb - 127.0) / 128.0).transpose(2, 0, 1)[None].copy()
        ours = compiled.run({"input": x})
        theirs = run_onnxruntime(model, {"input": x})
        for key, ref in theirs.items():
            np.testing.assert_allclose(ours[key], ref, rtol=1e-3, atol=1e-3, err_msg=key)
        assert (ours["scores"][0, :, 1] > 0.7).any(), f"no face found in {photo.name}"
