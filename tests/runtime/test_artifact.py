"""Artifacts: save → load round trips, atomic writes, and clear errors for bad artifacts."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import lepton_compiler
from lepton_compiler import ArtifactError, CompiledModel
from lepton_compiler.runtime import artifact
from tests.runtime.models import mlp_model, run_onnxruntime, two_input_model, write


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write(mlp_model(), tmp_path_factory.mktemp("models"), "mlp")


@pytest.fixture(scope="module")
def compiled(model_path: Path) -> CompiledModel:
    return lepton_compiler.compile(model_path, target="x86:avx512", opt_level=1)


@pytest.fixture
def saved(compiled: CompiledModel, tmp_path: Path) -> Path:
    return compiled.save(tmp_path / "mlp.lepton")


def feeds(batch: int = 3) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(batch).standard_normal((batch, 4)).astype(np.float32)}


def entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def edit_manifest(path: Path, **changes: Any) -> None:
    mpath = path / "manifest.json"
    data = json.loads(mpath.read_text())
    data.update(changes)
    mpath.write_text(json.dumps(data))


# -- round trip ---------------------------------------------------------------------------------


def test_round_trip_gives_identical_outputs(
    compiled: CompiledModel, saved: Path, model_path: Path
) -> None:
    loaded = lepton_compiler.load(saved)
    for batch in (1, 4):
        expected = compiled.run(feeds(batch))["y"]
        np.testing.assert_array_equal(loaded.run(feeds(batch))["y"], expected)
        ort = run_onnxruntime(model_path, feeds(batch))["y"]
        np.testing.assert_allclose(loaded.run(feeds(batch))["y"], ort, rtol=1e-5, atol=1e-5)
    assert loaded.input_signature == compiled.input_signature
    assert loaded.output_signature == compiled.output_signature
    assert (loaded.backend, loaded.target, loaded.opt_level) == ("reference", "x86:avx512", 1)
    assert loaded.report == compiled.report
    assert loaded.metadata["format_version"] == artifact.FORMAT_VERSION


def test_round_trip_with_several_inputs(tmp_path: Path) -> None:
    model = lepton_compiler.compile(write(two_input_model(), tmp_path, "two"))
    loaded = lepton_compiler.load(model.save(tmp_path / "two.lepton"))
    inputs = model.random_inputs(dim_size=2, seed=5)
    for name, value in model.run(inputs).items():
        np.testing.assert_array_equal(loaded.run(inputs)[name], value)


def test_manifest_contents(saved: Path) -> None:
    assert entries(saved) == ["manifest.json", "model.onnx"]
    m = json.loads((saved / "manifest.json").read_text())
    assert m["format_version"] == artifact.FORMAT_VERSION
    assert m["lepton_version"] == lepton_compiler.__version__
    assert m["onnx_version"]
    assert (m["backend"], m["target"], m["opt_level"]) == ("reference", "x86:avx512", 1)
    assert m["inputs"] == [{"name": "x", "dtype": "float32", "shape": ["batch", 4]}]
    assert m["outputs"] == [{"name": "y", "dtype": "float32", "shape": ["batch", 3]}]
    assert m["created"] and m["report"]["model_name"] == "mlp"
    digest = hashlib.sha256((saved / "model.onnx").read_bytes()).hexdigest()
    assert m["files"]["model.onnx"]["sha256"] == digest


def test_load_does_not_recompile(saved: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import lepton_compiler.frontend.onnx as frontend
    import lepton_compiler.pipeline as pipeline

    calls: list[dict[str, Any]] = []
    real_import = frontend.import_model

    def spy(model: Any, **kwargs: Any) -> Any:
        calls.append(kwargs)
        return real_import(model, **kwargs)

    def no_pipeline(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("load must not run the pass pipeline")

    monkeypatch.setattr(frontend, "import_model", spy)
    monkeypatch.setattr(pipeline, "run_pipeline", no_pipeline)
    lepton_compiler.load(saved).run(feeds())
    assert calls == [{"simplify": False, "convert_opset": False}]


def test_save_replaces_an_existing_artifact(compiled: CompiledModel, saved: Path) -> None:
    other = lepton_compiler.compile(mlp_model(seed=7))
    other.save(saved)
    np.testing.assert_array_equal(
        lepton_compiler.load(saved).run(feeds())["y"], other.run(feeds())["y"]
    )
    assert entries(saved.parent) == ["mlp.lepton"]


def test_save_creates_parent_directories(compiled: CompiledModel, tmp_path: Path) -> None:
    path = compiled.save(tmp_path / "a" / "b" / "m.lepton")
    assert (path / "manifest.json").is_file()


def test_save_refuses_to_replace_a_foreign_directory(
    compiled: CompiledModel, tmp_path: Path
) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "cat.jpg").write_bytes(b"meow")
    with pytest.raises(ArtifactError, match=r"not a Lepton artifact; refusing"):
        compiled.save(folder)
    assert entries(folder) == ["cat.jpg"]


def test_save_over_a_file_is_an_error(compiled: CompiledModel, tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("x")
    with pytest.raises(ArtifactError, match=r"exists and is not a directory"):
        compiled.save(tmp_path / "taken")


def test_unwritable_path(compiled: CompiledModel) -> None:
    with pytest.raises(ArtifactError, match=r"/proc/forbidden/out"):
        compiled.save("/proc/forbidden/out")


# -- atomic writes ------------------------------------------------------------------------------


def fail_mid_write(monkeypatch: pytest.MonkeyPatch, error: BaseException) -> None:
    """Make the write fail after model.onnx is on disk, before the manifest is written."""

    def checksum(path: Path) -> str:
        assert (path.parent / "model.onnx").is_file()
        raise error

    monkeypatch.setattr(artifact, "_sha256", checksum)


def test_failed_write_leaves_nothing(
    compiled: CompiledModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fail_mid_write(monkeypatch, OSError(28, "No space left on device"))
    with pytest.raises(ArtifactError, match=r"No space left on device") as info:
        compiled.save(tmp_path / "m.lepton")
    assert str(tmp_path / "m.lepton") in str(info.value)
    assert entries(tmp_path) == []


def test_failed_write_keeps_the_previous_artifact(
    compiled: CompiledModel, saved: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = {p.name: p.read_bytes() for p in saved.iterdir()}
    other = lepton_compiler.compile(mlp_model(seed=3))
    fail_mid_write(monkeypatch, OSError(28, "No space left on device"))
    with pytest.raises(ArtifactError):
        other.save(saved)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in saved.iterdir()} == before
    assert entries(saved.parent) == ["mlp.lepton"]
    lepton_compiler.load(saved)


def test_failed_rename_leaves_nothing(
    compiled: CompiledModel, saved: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_replace = os.replace

    def replace(src: Any, dst: Any) -> None:
        if Path(dst) == saved and ".tmp-" in Path(src).name:
            raise OSError(5, "Input/output error")
        real_replace(src, dst)

    monkeypatch.setattr(artifact.os, "replace", replace)
    with pytest.raises(ArtifactError, match=r"Input/output error"):
        compiled.save(saved)
    monkeypatch.undo()
    assert entries(saved.parent) == ["mlp.lepton"]
    lepton_compiler.load(saved)


def test_interrupted_write_leaves_nothing(
    compiled: CompiledModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fail_mid_write(monkeypatch, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        compiled.save(tmp_path / "m.lepton")
    assert entries(tmp_path) == []


# -- bad artifacts ------------------------------------------------------------------------------


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match=r"no artifact at .*nowhere"):
        lepton_compiler.load(tmp_path / "nowhere")


def test_onnx_file_is_not_an_artifact(model_path: Path) -> None:
    with pytest.raises(ArtifactError, match=r"not an artifact directory.*compile it"):
        lepton_compiler.load(model_path)


def test_missing_manifest(saved: Path) -> None:
    (saved / "manifest.json").unlink()
    with pytest.raises(ArtifactError, match=r"manifest.json is missing"):
        lepton_compiler.load(saved)


def test_corrupt_manifest(saved: Path) -> None:
    (saved / "manifest.json").write_bytes(b"\x00\xffnot json{")
    with pytest.raises(ArtifactError, match=r"manifest.json is corrupt"):
        lepton_compiler.load(saved)


def test_manifest_missing_a_key(saved: Path) -> None:
    mpath = saved / "manifest.json"
    data = json.loads(mpath.read_text())
    del data["backend"]
    mpath.write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match=r"'backend' is missing"):
        lepton_compiler.load(saved)


def test_wrong_format_version(saved: Path) -> None:
    edit_manifest(saved, format_version=99)
    with pytest.raises(ArtifactError, match=r"format version 99.*reads format version 1"):
        lepton_compiler.load(saved)


def test_checksum_mismatch(saved: Path) -> None:
    with open(saved / "model.onnx", "ab") as f:
        f.write(b"\x00")
    with pytest.raises(ArtifactError, match=r"checksum mismatch for model.onnx"):
        lepton_compiler.load(saved)


def test_missing_model_file(saved: Path) -> None:
    (saved / "model.onnx").unlink()
    with pytest.raises(ArtifactError, match=r"model.onnx is missing"):
        lepton_compiler.load(saved)


def test_model_file_that_fails_to_load(saved: Path) -> None:
    garbage = b"this is not a protobuf \xff\xfe" * 4
    (saved / "model.onnx").write_bytes(garbage)
    edit_manifest(
        saved,
        files={
            "model.onnx": {"sha256": hashlib.sha256(garbage).hexdigest(), "bytes": len(garbage)}
        },
    )
    with pytest.raises(ArtifactError, match=r"model.onnx fails to load"):
        lepton_compiler.load(saved)


def test_backend_this_build_cannot_run(saved: Path) -> None:
    edit_manifest(saved, backend="openvino")
    with pytest.raises(ArtifactError, match=r"'openvino' backend.*recompile"):
        lepton_compiler.load(saved)


def test_signature_mismatch(saved: Path) -> None:
    edit_manifest(saved, inputs=[{"name": "image", "dtype": "float32", "shape": [1]}])
    with pytest.raises(ArtifactError, match=r"inconsistent"):
        lepton_compiler.load(saved)
