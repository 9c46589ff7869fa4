"""``lepton-compile --int8 --calibrate``: quantize from .npz/.npy files, print the accuracy
report, and refuse bad calibration input with one clear message."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import lepton_compiler
from lepton_compiler import cli
from tests.runtime.models import mlp_model, write
from tests.test_cli import assert_clean_error


@pytest.fixture
def model_path(tmp_path: Path) -> Path:
    return write(mlp_model(), tmp_path, "mlp")


def _inputs(model_path: Path) -> tuple[str, list]:
    sig = lepton_compiler.compile(str(model_path)).input_signature[0]
    return sig.name, list(sig.shape)


def test_int8_from_npz(
    model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name, shape = _inputs(model_path)
    data = np.random.default_rng(0).standard_normal(
        (16, *[d if isinstance(d, int) else 1 for d in shape[1:]])
    )
    np.savez(tmp_path / "calib.npz", **{name: data})  # float64: cast to the input's type
    out = tmp_path / "mlp.lepton"
    code = cli.main(
        [
            str(model_path),
            "-o",
            str(out),
            "--int8",
            "--calibrate",
            str(tmp_path / "calib.npz"),
            "--int8-method",
            "minmax",
            "--report",
            "--int8-export",
            str(tmp_path / "mlp.qdq.onnx"),
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "int8:" in captured.out and "layers quantized (minmax calibration on 16 samples" in (
        captured.out
    )
    assert "alone dB" in captured.out  # the per-layer table with --report
    assert (tmp_path / "mlp.qdq.onnx").exists() and "wrote the int8 QDQ model" in captured.out
    loaded = lepton_compiler.load(out)
    assert any(
        n.op == "lepton.QMatMul"
        or (n.op == "lepton.Fused" and any(m.op == "lepton.QMatMul" for m in n.attrs["body"]))
        for n in loaded.graph
    )


def test_int8_without_calibration_is_an_error(
    model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main([str(model_path), "-o", str(tmp_path / "out"), "--int8"])
    assert_clean_error(code, capsys.readouterr().err, "--int8 needs calibration inputs")
    assert not (tmp_path / "out").exists()


def test_calibrate_without_int8_is_an_error(
    model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main([str(model_path), "-o", str(tmp_path / "out"), "--calibrate", "x.npz"])
    assert_clean_error(
        code, capsys.readouterr().err, "--calibrate and --int8-export are used with --int8"
    )


def test_bad_calibration_file_is_one_clear_error(
    model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "calib.npz"
    bad.write_bytes(b"not a zip file")
    code = cli.main(
        [str(model_path), "-o", str(tmp_path / "out"), "--int8", "--calibrate", str(bad)]
    )
    assert_clean_error(code, capsys.readouterr().err, str(bad))
    assert not (tmp_path / "out").exists()


def test_help_explains_int8(capsys: pytest.CaptureFixture[str]) -> None:
    cli.main(["--help"])
    out = capsys.readouterr().out
    for option in ["--int8", "--calibrate", "--int8-method", "--int8-exclude", "--int8-max-drop"]:
        assert option in out
