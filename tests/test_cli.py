"""``lepton-compile``: compile, run, info, and errors without tracebacks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import lepton_compiler
from lepton_compiler import LeptonError, cli
from tests.runtime.models import mlp_model, run_onnxruntime, two_input_model, write


@pytest.fixture
def model_path(tmp_path: Path) -> Path:
    return write(mlp_model(), tmp_path, "mlp")


@pytest.fixture
def artifact(model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    out = tmp_path / "mlp.lepton"
    assert cli.main([str(model_path), "-o", str(out)]) == 0
    capsys.readouterr()
    return out


@pytest.fixture
def x_file(tmp_path: Path) -> Path:
    path = tmp_path / "x.npy"
    np.save(path, np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32))
    return path


def assert_clean_error(code: int, err: str, *needles: str) -> None:
    assert code == 1
    assert err.startswith("error:"), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, err


# -- help ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("argv", [["--help"], ["run", "--help"], ["info", "--help"]])
def test_help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "usage: lepton-compile" in out and "example" in out


def test_help_explains_every_compile_option(capsys: pytest.CaptureFixture[str]) -> None:
    cli.main(["--help"])
    out = capsys.readouterr().out
    options = ["--target", "--backend", "-O", "--no-simplify", "--input-shape", "--report"]
    options += ["--dump-ir", "--debug", "run ARTIFACT_OR_MODEL", "info ARTIFACT_OR_MODEL"]
    for option in options:
        assert option in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--version"]) == 0
    assert lepton_compiler.__version__ in capsys.readouterr().out


# -- compile ------------------------------------------------------------------------------------


def test_compile_then_run(
    model_path: Path, x_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "mlp.lepton"
    assert cli.main([str(model_path), "-o", str(out), "-O1", "--target", "x86:avx512"]) == 0
    summary = capsys.readouterr().out
    assert "compiled" in summary and str(out) in summary and "x: float32[batch,4]" in summary
    assert (out / "manifest.json").is_file()

    outputs = tmp_path / "outputs"
    argv = ["run", str(out), "--input", f"x={x_file}", "--output-dir", str(outputs)]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "y" in printed and "shape (2, 3)" in printed and "float32" in printed
    assert "min" in printed and "mean" in printed
    saved = np.load(outputs / "y.npy")
    expected = run_onnxruntime(model_path, {"x": np.load(x_file)})["y"]
    np.testing.assert_allclose(saved, expected, rtol=1e-5, atol=1e-5)


def test_compile_with_report_and_ir_dump(
    model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ir_dir = tmp_path / "ir"
    argv = [str(model_path), "-o", str(tmp_path / "o"), "--report", "--dump-ir", str(ir_dir),
            "--time-passes"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "Compile report: mlp" in out and "MatMul" in out
    assert "pass timings:" in out and "dead_code_elimination" in out
    dumps = sorted(p.name for p in ir_dir.iterdir())
    assert dumps[0] == "001_input.txt" and "MatMul" in (ir_dir / dumps[0]).read_text()


def test_list_passes(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--list-passes"]) == 0
    out = capsys.readouterr().out
    assert "constant_folding" in out and "Replace nodes whose inputs are all constants" in out
    assert "-O1: cleanup: qoperator_to_qdq -> dead_code_elimination ->" in out
    assert "quantize: quantize_int8 -> quantize_before_maxpool -> lower_qdq" in out
    assert "fuse_groups" in out


def test_passes_and_disable_pass(
    model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "o"
    argv = [str(model_path), "-o", str(out), "--passes", "dead_code_elimination",
            "--time-passes"]
    assert cli.main(argv) == 0
    timings = capsys.readouterr().out.split("pass timings:")[1]
    assert "dead_code_elimination" in timings and "constant_folding" not in timings
    argv = [str(model_path), "-o", str(out), "--disable-pass", "constant_folding", "--time-passes"]
    assert cli.main(argv) == 0
    timings = capsys.readouterr().out.split("pass timings:")[1]
    assert "constant_folding" not in timings and "canonicalize" in timings
    assert cli.main([str(model_path), "-o", str(out), "--passes", "nope"]) == 1
    assert "unknown pass 'nope'" in capsys.readouterr().err


def test_trace_rules_explains_a_rule_that_does_not_fire(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from lepton_compiler.testing import model_from_text

    model = model_from_text("""
<ir_version: 8, opset_import: ["" : 18]>
g (float[2,3] x) => (float[2,3] y) {
  c = Constant<value = float {3.0}>()
  y = Div(x, c)
}
""")
    path = tmp_path / "div.onnx"
    path.write_bytes(model.SerializeToString())
    argv = [str(path), "-o", str(tmp_path / "o"), "-O1", "--no-simplify", "--trace-rules"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "div_const_to_mul: did not fire" in out and "not a power of two" in out


def test_compile_with_input_shape(
    model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "o"
    assert cli.main([str(model_path), "-o", str(out), "--input-shape", "x=2,4", "-O0"]) == 0
    assert lepton_compiler.load(out).input_signature[0].shape == (2, 4)


@pytest.mark.parametrize("bad", ["x", "x=", "=1,2", "x=1,-2", "x=1,2.5"])
def test_bad_input_shape_is_a_usage_error(
    model_path: Path, tmp_path: Path, bad: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main([str(model_path), "-o", str(tmp_path / "o"), "--input-shape", bad]) == 2
    assert "--input-shape" in capsys.readouterr().err


def test_missing_output_is_a_usage_error(
    model_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main([str(model_path)]) == 2
    assert "-o/--output" in capsys.readouterr().err


def test_explicit_compile_command(
    model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["compile", str(model_path), "-o", str(tmp_path / "o")]) == 0


# -- run and info -------------------------------------------------------------------------------


def test_run_without_inputs_uses_random_ones(
    artifact: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["run", str(artifact)]) == 0
    captured = capsys.readouterr()
    assert "random inputs" in captured.err
    assert "shape (1, 3)" in captured.out and "argmax" in captured.out


def test_run_an_onnx_model_directly_with_benchmark(
    model_path: Path, x_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["run", str(model_path), "--input", str(x_file), "--benchmark", "--repeat", "3"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "shape (2, 3)" in out and "median" in out and "p90" in out


def test_run_several_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(two_input_model(), tmp_path, "two")
    files = {}
    for name, value in {
        "a": np.ones((2, 3), np.float32),
        "b": np.full((2, 3), 2, np.float32),
        "k": np.array([1, 2], np.int64),
    }.items():
        files[name] = tmp_path / f"{name}.npy"
        np.save(files[name], value)
    argv = ["run", str(path), "--output-dir", str(tmp_path / "out")]
    argv += [a for name, f in files.items() for a in ("--input", f"{name}={f}")]
    assert cli.main(argv) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "y.npy"), np.full((2, 3), 3.0))
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "k_out.npy"), [2, 4])


def test_info_on_artifact_and_model(
    artifact: Path, model_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["info", str(artifact)]) == 0
    out = capsys.readouterr().out
    assert "format 1" in out and "x: float32[batch,4]" in out and "y: float32[batch,3]" in out
    assert "ops: Gemm 1" in out and "Compile report" in out
    assert cli.main(["info", str(model_path), "-O0"]) == 0
    assert "compiled on the fly" in capsys.readouterr().out


# -- errors -------------------------------------------------------------------------------------


def test_garbage_model_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "x.onnx"
    bad.write_bytes(b"\x08\x07garbage\xff\xfe\x00 not a model" * 3)
    code = cli.main([str(bad), "-o", str(tmp_path / "out")])
    assert_clean_error(code, capsys.readouterr().err, "x.onnx")
    assert not (tmp_path / "out").exists()


def test_truncated_model_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = mlp_model().SerializeToString()
    bad = tmp_path / "cut.onnx"
    bad.write_bytes(data[: len(data) // 2])
    code = cli.main([str(bad), "-o", str(tmp_path / "out")])
    assert_clean_error(code, capsys.readouterr().err, "cut.onnx")
    assert not (tmp_path / "out").exists()


def test_missing_model_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main([str(tmp_path / "nope.onnx"), "-o", str(tmp_path / "out")])
    assert_clean_error(code, capsys.readouterr().err, "nope.onnx")


def test_unwritable_output(model_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main([str(model_path), "-o", "/proc/forbidden/out"])
    assert_clean_error(code, capsys.readouterr().err, "/proc/forbidden/out")


def test_unknown_backend(
    model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main([str(model_path), "-o", str(tmp_path / "o"), "--backend", "cuda"])
    assert_clean_error(code, capsys.readouterr().err, "unknown backend 'cuda'")


def test_unknown_target(
    model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main([str(model_path), "-o", str(tmp_path / "o"), "--target", "mips"])
    assert_clean_error(code, capsys.readouterr().err, "mips")


def test_missing_input_file(artifact: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["run", str(artifact), "--input", "x=/nonexistent/x.npy"])
    assert_clean_error(code, capsys.readouterr().err, "not found", "/nonexistent/x.npy")


def test_input_file_not_npy(
    artifact: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    txt = tmp_path / "x.txt"
    txt.write_text("1 2 3 4")
    code = cli.main(["run", str(artifact), "--input", f"x={txt}"])
    assert_clean_error(code, capsys.readouterr().err, "not a .npy file")


def test_corrupt_npy(artifact: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "x.npy"
    bad.write_bytes(b"\x93NUMPY garbage")
    code = cli.main(["run", str(artifact), "--input", f"x={bad}"])
    assert_clean_error(code, capsys.readouterr().err, "not a valid .npy")


def test_wrong_input_name_and_shape(
    artifact: Path, x_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(["run", str(artifact), "--input", f"image={x_file}"])
    assert_clean_error(code, capsys.readouterr().err, "'image'", "x: float32[batch,4]")
    wrong = tmp_path / "w.npy"
    np.save(wrong, np.zeros((2, 5), np.float32))
    code = cli.main(["run", str(artifact), "--input", f"x={wrong}"])
    assert_clean_error(code, capsys.readouterr().err, "dim 1 must be 4")


def test_corrupt_artifact(artifact: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (artifact / "manifest.json").write_text("{")
    code = cli.main(["run", str(artifact)])
    assert_clean_error(code, capsys.readouterr().err, "manifest.json is corrupt")


def test_missing_artifact(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["info", str(tmp_path / "gone.lepton")])
    assert_clean_error(code, capsys.readouterr().err, "gone.lepton")


def test_debug_shows_the_exception(tmp_path: Path) -> None:
    bad = tmp_path / "x.onnx"
    bad.write_bytes(b"garbage")
    with pytest.raises(LeptonError):
        cli.main([str(bad), "-o", str(tmp_path / "out"), "--debug"])


def test_keyboard_interrupt_exits_130(
    model_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_compile", interrupted)
    assert cli.main([str(model_path), "-o", str(tmp_path / "o")]) == 130
    assert "Traceback" not in capsys.readouterr().err


# -- tvm backend ----------------------------------------------------------------------------------


def test_tvm_artifact_runs_with_profile(
    model_path: Path, tmp_path: Path, x_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("tvm")
    out = tmp_path / "mlp_tvm.lepton"
    assert cli.main([str(model_path), "-o", str(out), "--backend", "tvm"]) == 0
    assert "backend tvm" in capsys.readouterr().out
    assert (out / "kernels").is_dir() and any((out / "kernels").iterdir())
    argv = ["run", str(out), "--input", str(x_file), "--profile", "--repeat", "3"]
    assert cli.main(argv) == 0
    text = capsys.readouterr().out
    assert "profile (3 runs" in text
    assert "tvm:dense" in text  # the MatMul+Add(+Relu) groups


def test_profile_needs_the_tvm_backend(
    artifact: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["run", str(artifact), "--profile"]) == 1
    assert_clean_error(1, capsys.readouterr().err, "--profile needs the tvm backend")


def test_tune_needs_the_tvm_backend(
    model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main([str(model_path), "-o", str(tmp_path / "o"), "--tune", "4"])
    assert_clean_error(code, capsys.readouterr().err, "tvm backend only")
    assert not (tmp_path / "o").exists()
