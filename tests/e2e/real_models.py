"""The two real trained models of ``../shared/models`` with their real inputs, checked
against ONNX Runtime through any backend: MNIST on all 10,000 test images (same top-1 as ONNX
Runtime on every image, accuracy 98.91 %), UltraFace on photos (same outputs, faces found).
Tests skip when the folder is absent."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest

import lepton_compiler
from lepton_compiler.testing import run_onnxruntime

REAL = Path(__file__).resolve().parents[2] / ".." / "shared" / "models"

Compile = Callable[[Path], lepton_compiler.CompiledModel]


def real_model(name: str) -> Path:
    """The model file, or a skip when the shared folder is absent."""
    path = REAL / name / "model.onnx"
    if not path.exists():
        pytest.skip(f"{path} is absent (real models live in ../shared/models beside the repo)")
    return path


def mnist_test_set() -> tuple[np.ndarray, np.ndarray]:
    """The 10,000 MNIST test images (float32, [N, 1, 28, 28]) and their labels."""
    with gzip.open(REAL / "mnist" / "t10k-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)
    with gzip.open(REAL / "mnist" / "t10k-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    return images.astype(np.float32), labels


def check_mnist(compile_model: Compile) -> lepton_compiler.CompiledModel:
    """All 10,000 test images one by one (the model's Reshape fixes batch 1): the same top-1
    as ONNX Runtime on every image, and its accuracy (98.91 %)."""
    import onnxruntime as ort

    path = real_model("mnist")
    compiled = compile_model(path)
    images, labels = mnist_test_set()
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
    return compiled


def check_ultraface(compile_model: Compile) -> lepton_compiler.CompiledModel:
    """Three photos: every output matches ONNX Runtime (1e-3) and a face is found in each."""
    from PIL import Image

    path = real_model("ultraface")
    compiled = compile_model(path)
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
    return compiled
