"""`compile` and `CompiledModel`: running, signatures, input checks, benchmark, report, options."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import lepton_compiler
from lepton_compiler import CompiledModel, InputError, LeptonError, TensorSpec
from lepton_compiler.api import parse_target
from lepton_compiler.runtime.report import CompileReport
from tests.runtime.models import (
    conv_model,
    identity_model,
    mlp_model,
    run_onnxruntime,
    two_input_model,
    write,
)


@pytest.fixture(scope="module")
def mlp_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write(mlp_model(), tmp_path_factory.mktemp("models"), "mlp")


@pytest.fixture(scope="module")
def mlp(mlp_path: Path) -> CompiledModel:
    return lepton_compiler.compile(mlp_path)


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory) -> CompiledModel:
    return lepton_compiler.compile(write(two_input_model(), tmp_path_factory.mktemp("m"), "two"))


def x_of(batch: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, 4)).astype(np.float32)


# -- running ------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch", [1, 2, 5])
def test_run_matches_onnxruntime(mlp: CompiledModel, mlp_path: Path, batch: int) -> None:
    x = x_of(batch)
    out = mlp.run({"x": x})
    expected = run_onnxruntime(mlp_path, {"x": x})
    assert list(out) == ["y"]
    assert out["y"].shape == (batch, 3)
    np.testing.assert_allclose(out["y"], expected["y"], rtol=1e-5, atol=1e-5)


def test_call_by_keyword_equals_run(mlp: CompiledModel) -> None:
    x = x_of(3)
    np.testing.assert_array_equal(mlp(x=x)["y"], mlp.run({"x": x})["y"])


def test_conv_model_matches_onnxruntime(tmp_path: Path) -> None:
    path = write(conv_model(), tmp_path, "conv")
    model = lepton_compiler.compile(path)
    x = np.random.default_rng(1).standard_normal((1, 2, 5, 5)).astype(np.float32)
    np.testing.assert_allclose(
        model.run({"x": x})["y"], run_onnxruntime(path, {"x": x})["y"], rtol=1e-5, atol=1e-5
    )


def test_two_inputs_match_onnxruntime(two: CompiledModel, tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    feeds = {
        "a": rng.standard_normal((4, 3)).astype(np.float32),
        "b": rng.standard_normal((4, 3)).astype(np.float32),
        "k": np.array([3, -7], np.int64),
    }
    out = two.run(feeds)
    expected = run_onnxruntime(write(two_input_model(), tmp_path, "two"), feeds)
    assert list(out) == ["y", "k_out"]
    np.testing.assert_allclose(out["y"], expected["y"], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(out["k_out"], expected["k_out"])


@pytest.mark.parametrize("opt_level", [0, 1, 2, 3])
def test_every_opt_level_gives_the_same_outputs(mlp_path: Path, opt_level: int) -> None:
    model = lepton_compiler.compile(mlp_path, opt_level=opt_level)
    assert model.opt_level == opt_level == model.report.opt_level
    expected = run_onnxruntime(mlp_path, {"x": x_of(2)})["y"]
    np.testing.assert_allclose(model.run({"x": x_of(2)})["y"], expected, rtol=1e-5, atol=1e-5)


def test_compile_from_bytes_and_proto(mlp: CompiledModel) -> None:
    x = x_of(2)
    for source in (mlp_model(), mlp_model().SerializeToString()):
        model = lepton_compiler.compile(source)
        np.testing.assert_allclose(model.run({"x": x})["y"], mlp.run({"x": x})["y"], rtol=1e-6)
        assert model.name == "mlp"


def test_python_lists_are_converted(mlp: CompiledModel) -> None:
    x = [[1.0, -2.0, 3.0, 0.5]]
    np.testing.assert_allclose(
        mlp.run({"x": x})["y"], mlp.run({"x": np.array(x, np.float32)})["y"], rtol=1e-6
    )
    ints = [[1, 2, 3, 4]]
    np.testing.assert_allclose(
        mlp.run({"x": ints})["y"], mlp.run({"x": np.array(ints, np.float32)})["y"], rtol=1e-6
    )


# -- signatures ---------------------------------------------------------------------------------


def test_signatures(mlp: CompiledModel, two: CompiledModel) -> None:
    assert mlp.input_signature == [TensorSpec("x", "float32", ("batch", 4))]
    assert mlp.output_signature == [TensorSpec("y", "float32", ("batch", 3))]
    assert [s.name for s in two.input_signature] == ["a", "b", "k"]
    assert two.input_signature[2] == TensorSpec("k", "int64", (2,))
    assert str(mlp.input_signature[0]) == "x: float32[batch,4]"
    spec = mlp.input_signature[0]
    assert TensorSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(AttributeError):
        spec.name = "z"  # type: ignore[misc]


def test_repr_names_backend_and_signature(mlp: CompiledModel) -> None:
    text = repr(mlp)
    assert "reference" in text and "x: float32[batch,4]" in text


# -- bad inputs ---------------------------------------------------------------------------------


def test_unknown_input_name(mlp: CompiledModel) -> None:
    with pytest.raises(InputError, match=r"unknown input name.*'z'.*x: float32\[batch,4\]"):
        mlp.run({"x": x_of(1), "z": x_of(1)})


def test_missing_input(two: CompiledModel) -> None:
    a = np.zeros((1, 3), np.float32)
    with pytest.raises(InputError, match=r"missing input.*\bb: float32.*k: int64") as info:
        two.run({"a": a})
    assert "a: float32" in str(info.value)  # the full list of expected inputs


def test_wrong_rank(mlp: CompiledModel) -> None:
    with pytest.raises(InputError, match=r"input 'x' has rank 3.*expected rank 2"):
        mlp.run({"x": np.zeros((1, 4, 1), np.float32)})


def test_wrong_static_dim(mlp: CompiledModel) -> None:
    with pytest.raises(InputError, match=r"input 'x' has shape \(2, 5\).*dim 1 must be 4, got 5"):
        mlp.run({"x": np.zeros((2, 5), np.float32)})


def test_wrong_dtype(mlp: CompiledModel) -> None:
    with pytest.raises(InputError, match=r"input 'x' has dtype float64, expected float32"):
        mlp.run({"x": np.zeros((2, 4), np.float64)})


def test_symbolic_dim_must_agree_across_inputs(two: CompiledModel) -> None:
    feeds = {
        "a": np.zeros((2, 3), np.float32),
        "b": np.zeros((3, 3), np.float32),
        "k": np.zeros(2, np.int64),
    }
    with pytest.raises(
        InputError, match=r"input 'b'.*'batch'.*is 3, but 'batch' is 2 in input 'a'"
    ):
        two.run(feeds)


def test_symbolic_dim_accepts_any_size(two: CompiledModel) -> None:
    for batch in (1, 7):
        z = np.zeros((batch, 3), np.float32)
        assert two.run({"a": z, "b": z, "k": np.zeros(2, np.int64)})["y"].shape == (batch, 3)


def test_lists_of_the_wrong_kind_are_refused(two: CompiledModel) -> None:
    z = np.zeros((1, 3), np.float32)
    with pytest.raises(InputError, match=r"input 'k' has dtype float64, expected int64"):
        two.run({"a": z, "b": z, "k": [1.5, 2.0]})
    assert two.run({"a": z, "b": z, "k": [1, 2]})["k_out"].tolist() == [2, 4]


def test_inputs_must_be_a_mapping(mlp: CompiledModel) -> None:
    with pytest.raises(InputError, match="must be a dict"):
        mlp.run([x_of(1)])  # type: ignore[arg-type]


def test_input_error_is_a_lepton_error() -> None:
    assert issubclass(InputError, LeptonError)


# -- benchmark and random inputs ----------------------------------------------------------------


def test_random_inputs_fit_the_signature(two: CompiledModel) -> None:
    feeds = two.random_inputs(dim_size=3)
    assert feeds["a"].shape == feeds["b"].shape == (3, 3)
    assert feeds["k"].dtype == np.int64
    two.run(feeds)


def test_benchmark(mlp: CompiledModel) -> None:
    stats = mlp.benchmark(warmup=1, repeat=5)
    for key in ("median_ms", "p90_ms", "mean_ms", "min_ms", "max_ms"):
        assert stats[key] >= 0
    assert stats["repeat"] == 5
    assert stats["min_ms"] <= stats["median_ms"] <= stats["max_ms"]
    assert mlp.benchmark({"x": x_of(8)}, warmup=0, repeat=1)["repeat"] == 1
    with pytest.raises(InputError):
        mlp.benchmark({"x": np.zeros((2, 2), np.float32)})


# -- report -------------------------------------------------------------------------------------


def test_report(mlp: CompiledModel) -> None:
    r = mlp.report
    assert (r.model_name, r.backend, r.target, r.opt_level) == ("mlp", "reference", "host", 2)
    assert list(r.timings) == ["import", "optimize", "verify", "compile"]
    assert r.op_counts_before == {"MatMul": 1, "Add": 1, "Relu": 1}
    assert sum(r.op_counts_after.values()) == r.num_nodes == len(mlp.graph)
    assert r.num_constants == 2
    assert r.weights_bytes == (4 * 3 + 3) * 4
    assert r.fallbacks == []
    text = str(r)
    assert "Compile report: mlp" in text
    for word in ("backend", "reference", "MatMul", "import", "total", "fallbacks: none"):
        assert word in text
    assert CompileReport.from_dict(r.to_dict()) == r


# -- options ------------------------------------------------------------------------------------


def test_numba_backend_without_numba(mlp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lepton_compiler import api

    monkeypatch.setattr(api, "numba_available", lambda: False)
    with pytest.raises(LeptonError, match=r"not available.*pip install 'lepton-compiler\[numba\]'"):
        lepton_compiler.compile(mlp_path, backend="numba")


def test_tvm_backend_without_tvm(mlp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lepton_compiler import api

    monkeypatch.setattr(api, "tvm_available", lambda: False)
    with pytest.raises(LeptonError, match=r"not available.*pip install 'lepton-compiler\[tvm\]'"):
        lepton_compiler.compile(mlp_path, backend="tvm")


def test_unknown_backend(mlp_path: Path) -> None:
    with pytest.raises(LeptonError, match="unknown backend 'llvm'"):
        lepton_compiler.compile(mlp_path, backend="llvm")


@pytest.mark.parametrize(
    ("text", "arch", "features"),
    [
        ("x86", "x86_64", ()),
        ("x86:avx512,vnni", "x86_64", ("avx512f", "avx512vnni")),
        ("arm:neon,dotprod", "aarch64", ("neon", "dotprod")),
        ("aarch64", "aarch64", ()),
        ("cuda:sm_80", "cuda", ()),
    ],
)
def test_targets_accepted(text: str, arch: str, features: tuple[str, ...]) -> None:
    spec = parse_target(text)  # details: tests/targets/test_target.py
    assert spec.arch == arch and set(features) <= spec.features
    assert parse_target(str(spec)) == spec


@pytest.mark.parametrize("bad", ["", "mips", "riscv:v", "x86:", "x86:avx512,,vnni", "cuda:SM 80!"])
def test_bad_targets_refused(mlp_path: Path, bad: str) -> None:
    with pytest.raises(LeptonError, match="target"):
        lepton_compiler.compile(mlp_path, target=bad)


def test_target_is_recorded(mlp_path: Path) -> None:
    model = lepton_compiler.compile(mlp_path, target="x86:avx512,vnni", opt_level=1)
    assert model.target == model.report.target == "x86:avx512,vnni"


@pytest.mark.parametrize("level", [-1, 4, 2.0, True, "2"])
def test_bad_opt_level(mlp_path: Path, level: object) -> None:
    with pytest.raises(LeptonError, match="opt_level"):
        lepton_compiler.compile(mlp_path, opt_level=level)  # type: ignore[arg-type]


def test_input_shapes_fix_dims(mlp_path: Path) -> None:
    model = lepton_compiler.compile(mlp_path, input_shapes={"x": [2, 4]})
    assert model.input_signature == [TensorSpec("x", "float32", (2, 4))]
    with pytest.raises(InputError, match="dim 0 must be 2, got 3"):
        model.run({"x": x_of(3)})


def test_progress_goes_to_stderr_only_when_asked(
    mlp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lepton_compiler.compile(mlp_path)
    quiet = capsys.readouterr()
    assert quiet.err == "" and quiet.out == ""
    lepton_compiler.compile(mlp_path, progress=True)
    loud = capsys.readouterr()
    assert "importing" in loud.err and "verifying" in loud.err
    assert loud.out == ""


def test_compile_accepts_an_ir_graph(mlp: CompiledModel) -> None:
    from lepton_compiler.frontend.onnx import import_model

    model = lepton_compiler.compile(import_model(mlp_model()), opt_level=0)
    np.testing.assert_allclose(model.run({"x": x_of(2)})["y"], mlp.run({"x": x_of(2)})["y"])


# -- passes -------------------------------------------------------------------------------------


@pytest.mark.parametrize("opt_level", [0, 2])
def test_pipeline_runs_per_opt_level(opt_level: int) -> None:
    model = lepton_compiler.compile(identity_model(), opt_level=opt_level, simplify=False)
    r = model.report
    assert r.op_counts_before == {"Identity": 2, "Relu": 1}
    if opt_level == 0:
        assert r.passes == [] and r.op_counts_after == r.op_counts_before
    else:
        assert r.op_counts_after.get("Identity", 0) < 2
        assert any(modified for _, _, modified in r.passes)
        assert "identity_elimination" in [name for name, _, _ in r.passes]
    x = np.array([[-1.0, 0.5, 2.0]], np.float32)
    out = model.run({"x": x})
    np.testing.assert_array_equal(out["y"], np.maximum(x, 0))
    np.testing.assert_array_equal(out["c_out"], [0.0, 1.0, 2.0])


@pytest.mark.parametrize("opt_level", [0, 2])
def test_outputs_do_not_alias_constants(opt_level: int) -> None:
    model = lepton_compiler.compile(identity_model(), opt_level=opt_level, simplify=False)
    x = np.zeros((1, 3), np.float32)
    model.run({"x": x})["c_out"][:] = 42
    np.testing.assert_array_equal(model.run({"x": x})["c_out"], [0.0, 1.0, 2.0])
