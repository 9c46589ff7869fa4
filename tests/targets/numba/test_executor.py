"""The Numba executor: memory plan, free views, fallbacks in the report, symbolic batch,
threads, profile; the generated source in the cache folder and Numba's machine-code cache
reused by a new process; artifacts and the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import lepton_compiler
from lepton_compiler import cli
from lepton_compiler.testing import graph_from_text, run_reference
from tests.runtime.models import mlp_model, write

from .helpers import compile_text

ROOT = Path(__file__).resolve().parents[3]

SOFTMAX_CHAIN = """
    g (float[3, 50] x) => (float[3, 50] y) {
        a = Softmax(x)
        b = Softmax(a)
        c = Softmax(b)
        y = Softmax(c)
    }"""


def test_buffers_are_shared_by_lifetime() -> None:
    ex = compile_text(SOFTMAX_CHAIN).executor
    size = 3 * 50 * 4
    assert ex.num_kernels == 4 and len(ex.kernels) == 1  # one compiled function, four calls
    assert ex.unshared_bytes == 4 * size
    assert ex.activation_bytes == 2 * size  # c reuses a's memory, y reuses b's


def test_views_between_kernels_are_free() -> None:
    model = compile_text(
        """
        g (float[4, 6] x) => (float[2, 12] y) <int64[2] s = {2, 12}> {
            a = Softmax(x)
            r = Reshape(a, s)
            y = Softmax(r)
        }"""
    )
    ex = model.executor
    assert ex.num_views == 1
    assert all(not step.staged for step in ex._steps[1:])  # the second kernel views the buffer
    x = np.random.default_rng(0).standard_normal((4, 6)).astype(np.float32)
    ref = run_reference(
        graph_from_text(
            "g (float[4, 6] x) => (float[2, 12] y) <int64[2] s = {2, 12}> "
            "{ a = Softmax(x) r = Reshape(a, s) y = Softmax(r) }"
        ),
        {"x": x},
    )["y"]
    np.testing.assert_allclose(model.run({"x": x})["y"], ref, rtol=1e-5, atol=1e-6)


def test_fallbacks_warn_and_are_reported() -> None:
    text = """
        g (float[2, 5] x) => (float[2, 5] y) {
            r = Relu(x)
            ax = Constant<value_int = 1>()
            y = CumSum(r, ax)
        }"""
    with pytest.warns(UserWarning, match=r"numba backend: 1 op kind\(s\).*CumSum ×1"):
        model = lepton_compiler.compile(graph_from_text(text), backend="numba")
    assert model.report.fallbacks == ["CumSum ×1 (reference kernel)"]
    assert any(n.startswith("numba: 1 Numba kernels") for n in model.report.notes)
    x = np.arange(10, dtype=np.float32).reshape(2, 5) - 4
    np.testing.assert_allclose(model.run({"x": x})["y"], np.cumsum(np.maximum(x, 0), 1))


def test_symbolic_batch_specializes_per_shape() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = lepton_compiler.compile(mlp_model(), backend="numba")
    ex = model.executor
    assert ex.symbolic
    rng = np.random.default_rng(0)
    for batch in (1, 3, 1):
        x = rng.standard_normal((batch, 4)).astype(np.float32)
        ref = run_reference(model.graph, {"x": x})["y"]
        np.testing.assert_allclose(model.run({"x": x})["y"], ref, rtol=1e-5, atol=1e-6)
    assert len(ex._by_shape) == 2


def test_threads_follow_the_target() -> None:
    import numba

    model = compile_text(SOFTMAX_CHAIN, target="host/threads=1")
    assert model.executor.threads == 1
    model.run({"x": np.ones((3, 50), np.float32)})
    assert numba.get_num_threads() == 1


def test_profile_rows() -> None:
    model = compile_text(SOFTMAX_CHAIN)
    rows = model.executor.profile({"x": np.ones((3, 50), np.float32)}, repeat=2)
    assert [(r["label"], r["kind"], r["count"]) for r in rows] == [("Softmax", "numba:norm", 4)]
    assert rows[0]["share"] == pytest.approx(1.0)


def test_generated_source_is_cached_and_a_new_process_loads_its_machine_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kernel's source file lies in the cache folder with the fused epilogue in it; a
    fresh process compiling the same model loads every kernel from Numba's cache."""
    monkeypatch.setenv("LEPTON_CACHE_DIR", str(tmp_path / "cache"))
    path = write(mlp_model(), tmp_path, "mlp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = lepton_compiler.compile(str(path), backend="numba")
    (kernel,) = model.executor.kernels
    assert kernel.path.parent == tmp_path / "cache" / "numba"
    assert kernel.path.name.startswith("k_") and kernel.path.suffix == ".py"
    text = kernel.path.read_text(encoding="utf-8")
    # little work: a serial function (one thread, faster to compile)
    assert '@njit(fastmath=True, error_model="numpy", cache=True)' in text
    assert not kernel.plan.parallel
    assert "+ C; epilogue: Relu" in text  # MatMul + Add became Gemm's C, Relu its epilogue
    assert "acc = out[i, j] + c[0, j]" in text and "v0 = max(acc, C0)" in text
    assert kernel.func.stats.cache_misses.total() == 1  # compiled here
    assert list(kernel.path.parent.glob("__pycache__/*.nbi"))  # Numba's cache index
    script = (
        "import warnings; warnings.simplefilter('ignore')\n"
        "import lepton_compiler\n"
        f"m = lepton_compiler.compile({str(path)!r}, backend='numba')\n"
        "ks = m.executor.kernels\n"
        "print(len(ks), sum(k.func.stats.cache_hits.total() for k in ks),"
        " sum(k.func.stats.cache_misses.total() for k in ks))\n"
    )
    run = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=dict(os.environ),
                         text=True, capture_output=True, timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.split() == ["1", "1", "0"]  # one kernel, loaded, nothing compiled


def test_cache_off_uses_a_temporary_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    from lepton_compiler.targets.numba.source_cache import source_cache_dir

    monkeypatch.setenv("LEPTON_CACHE_DIR", "off")
    folder = source_cache_dir()
    assert folder.name.startswith("lepton-numba-") and Path.home() not in folder.parents


def test_artifact_reloads_and_runs(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = lepton_compiler.compile(mlp_model(), backend="numba")
    saved = model.save(tmp_path / "mlp.lepton")
    again = lepton_compiler.load(saved)
    assert again.backend == "numba" and again.executor.num_kernels == model.executor.num_kernels
    x = np.random.default_rng(1).standard_normal((2, 4)).astype(np.float32)
    np.testing.assert_allclose(again.run({"x": x})["y"], model.run({"x": x})["y"])


def test_cli_compiles_with_the_numba_backend(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(mlp_model(), tmp_path, "mlp")
    assert cli.main([str(path), "-o", str(tmp_path / "out"), "--backend", "numba"]) == 0
    assert "backend numba" in capsys.readouterr().out
    assert lepton_compiler.load(tmp_path / "out").backend == "numba"
