"""Two real, trained models end to end: import, verify, reference run, export, ONNX Runtime.

The models live beside the project (``../shared/models``), not in it; these tests skip when
that folder is absent.
"""

from __future__ import annotations

import gzip
from functools import cache
from pathlib import Path

import numpy as np
import onnx
import pytest

from lepton_compiler.export.onnx import export_model
from lepton_compiler.frontend.onnx import import_model
from lepton_compiler.ir import Graph, verify
from lepton_compiler.testing import assert_outputs_close, run_onnxruntime, run_reference

pytestmark = pytest.mark.filterwarnings("ignore::lepton_compiler.frontend.onnx.ModelImportWarning")

MODELS = Path(__file__).resolve().parents[2] / ".." / "shared" / "models"
MNIST = MODELS / "mnist"
ULTRAFACE = MODELS / "ultraface"
TOL = {"rtol": 1e-3, "atol": 1e-3}


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is absent (real models live in ../shared/models beside the repo)")
    return path


@cache
def _import(path: Path, simplify: bool = True) -> Graph:
    return import_model(path, simplify=simplify)


@cache
def mnist_images(count: int) -> tuple[np.ndarray, np.ndarray]:
    """The first `count` MNIST test images (N, 1, 28, 28) float32 0-255, and their labels."""
    with gzip.open(_need(MNIST / "t10k-images-idx3-ubyte.gz"), "rb") as f:
        header = f.read(16)
        assert int.from_bytes(header[:4], "big") == 2051, "idx3 magic number"
        pixels = np.frombuffer(f.read(count * 28 * 28), dtype=np.uint8)
    with gzip.open(_need(MNIST / "t10k-labels-idx1-ubyte.gz"), "rb") as f:
        header = f.read(8)
        assert int.from_bytes(header[:4], "big") == 2049, "idx1 magic number"
        labels = np.frombuffer(f.read(count), dtype=np.uint8)
    return pixels.reshape(count, 1, 28, 28).astype(np.float32), labels.astype(np.int64)


def face_input(seed: int = 0) -> np.ndarray:
    """A smooth pattern plus noise, normalized like the model expects: ``(pixel - 127) / 128``.

    (The photos in ``images/`` are JPEGs; decoding them would need Pillow.)
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:240, 0:320]
    base = 127 + 100 * np.sin(xx / 23.0)[None] * np.cos(yy / 17.0)[None] * np.ones((3, 1, 1))
    pixels = np.clip(base + rng.normal(0, 20, (3, 240, 320)), 0, 255).round()
    return ((pixels - 127) / 128).astype(np.float32)[None]


# -- MNIST -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mnist() -> tuple[Graph, Path]:
    path = _need(MNIST / "model.onnx")
    return _import(path), path


def test_mnist_imports_and_verifies(mnist: tuple[Graph, Path]) -> None:
    graph, _ = mnist
    verify(graph)
    assert graph.opset("") == 18 and graph.meta["original_opsets"][""] == 8
    assert [v.name for v in graph.inputs] == ["Input3"], "initializer inputs became constants"
    assert graph.inputs[0].shape == (1, 1, 28, 28)
    assert graph.outputs[0].shape == (1, 10)
    counts = graph.op_counts()
    assert counts.get("Conv") == 2 and counts.get("MaxPool") == 2


@pytest.mark.parametrize("simplify", [True, False], ids=["simplified", "unsimplified"])
def test_mnist_reference_matches_onnxruntime(simplify: bool) -> None:
    path = _need(MNIST / "model.onnx")
    graph = _import(path, simplify)
    images, _ = mnist_images(8)
    original = onnx.load(path)
    for image in images[:4]:
        feeds = {"Input3": image[None]}
        assert_outputs_close(run_reference(graph, feeds), run_onnxruntime(original, feeds), **TOL)


def test_mnist_export_checks_and_matches_onnxruntime(mnist: tuple[Graph, Path]) -> None:
    graph, path = mnist
    exported = export_model(graph)
    onnx.checker.check_model(exported, full_check=True)
    images, _ = mnist_images(8)
    original = onnx.load(path)
    for image in images[4:8]:
        feeds = {"Input3": image[None]}
        assert_outputs_close(run_onnxruntime(exported, feeds), run_onnxruntime(original, feeds),
                             **TOL)  # fmt: skip


def test_mnist_accuracy_on_real_images(mnist: tuple[Graph, Path]) -> None:
    graph, _ = mnist
    images, labels = mnist_images(200)
    out_name = graph.outputs[0].name
    predictions = np.array(
        [int(np.argmax(run_reference(graph, {"Input3": im[None]})[out_name])) for im in images]
    )
    accuracy = float(np.mean(predictions == labels))
    assert accuracy >= 0.97, f"top-1 accuracy {accuracy:.3f} on 200 real test images"


# -- UltraFace ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ultraface() -> tuple[Graph, Path]:
    path = _need(ULTRAFACE / "model.onnx")
    return _import(path), path


def test_ultraface_imports_and_verifies(ultraface: tuple[Graph, Path]) -> None:
    graph, _ = ultraface
    verify(graph)
    assert graph.opset("") == 18 and graph.meta["original_opsets"][""] == 9
    assert [v.name for v in graph.inputs] == ["input"]
    assert {v.name: v.shape for v in graph.outputs} == {
        "scores": (1, 4420, 2),
        "boxes": (1, 4420, 4),
    }


def test_ultraface_unsimplified_keeps_its_post_processing() -> None:
    graph = _import(_need(ULTRAFACE / "model.onnx"), simplify=False)
    verify(graph)
    counts = graph.op_counts()
    assert counts["BatchNormalization"] == 35 and counts["Shape"] >= 8 and counts["Gather"] >= 8


@pytest.mark.parametrize("simplify", [True, False], ids=["simplified", "unsimplified"])
def test_ultraface_reference_and_export_match_onnxruntime(simplify: bool) -> None:
    path = _need(ULTRAFACE / "model.onnx")
    graph = _import(path, simplify)
    feeds = {"input": face_input()}
    expected = run_onnxruntime(onnx.load(path), feeds)
    ours = run_reference(graph, feeds)
    assert_outputs_close(ours, expected, **TOL)
    np.testing.assert_allclose(ours["scores"].sum(-1), 1.0, rtol=1e-5)

    exported = export_model(graph)
    onnx.checker.check_model(exported, full_check=True)
    assert_outputs_close(run_onnxruntime(exported, feeds), expected, **TOL)
