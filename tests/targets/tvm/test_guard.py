"""Guarded memory (`targets.tvm.guard`, ``LEPTON_TVM_GUARD``): the guard pages really fault,
the executor honours the mode, and whole models run guarded on either side (a kernel that
reads before or after any of its buffers would kill the process)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tvm")

from lepton_compiler.targets.tvm.guard import guard_side, guarded_array

ROOT = Path(__file__).resolve().parents[3]


def _python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True,
        text=True, env={**os.environ, "PYTHONFAULTHANDLER": "1", **env}, timeout=600,
    )  # fmt: skip


def test_guard_side_values(monkeypatch: pytest.MonkeyPatch) -> None:
    for value, side in (("", None), ("0", None), ("after", "after"), ("BEFORE", "before")):
        monkeypatch.setenv("LEPTON_TVM_GUARD", value)
        assert guard_side() == side
    monkeypatch.setenv("LEPTON_TVM_GUARD", "1")
    with pytest.raises(ValueError, match="LEPTON_TVM_GUARD"):
        guard_side()


@pytest.mark.parametrize("side", ["after", "before"])
def test_guarded_array_is_usable_and_aligned(side: str) -> None:
    a = guarded_array((3, 16), "float32", side)
    assert a.shape == (3, 16) and a.flags.c_contiguous and not a.any()
    assert a.ctypes.data % 64 == 0
    a[...] = 1.0
    assert a.sum() == 48.0


@pytest.mark.parametrize(("side", "index"), [("after", 16), ("before", -1)])
def test_touching_the_guard_page_faults(side: str, index: int) -> None:
    """One float past the end (or before the start) of a 64-byte buffer kills the process."""
    proc = _python(f"""
        import ctypes
        from lepton_compiler.targets.tvm.guard import guarded_array
        a = guarded_array((16,), "float32", {side!r})
        a[:] = 2.0
        print("inside", a.sum(), flush=True)
        ctypes.c_float.from_address(a.ctypes.data + 4 * {index}).value = 1.0
        print("not reached", flush=True)
    """)
    assert "inside 32.0" in proc.stdout and "not reached" not in proc.stdout
    assert proc.returncode == -11, proc.stderr[-2000:]


@pytest.mark.filterwarnings("ignore:tvm backend")
def test_executor_in_guard_mode_runs_steps_from_python(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Guarded: no Relax program, no shared buffers, the same results as unguarded."""
    import onnx

    import lepton_compiler
    from tests.targets.tvm.test_executor import conv_block_model

    path = tmp_path / "block.onnx"
    onnx.save(conv_block_model(), path)
    monkeypatch.setenv("LEPTON_TVM_GUARD", "0")
    plain = lepton_compiler.compile(str(path), backend="tvm")
    monkeypatch.setenv("LEPTON_TVM_GUARD", "before")
    guarded = lepton_compiler.compile(str(path), backend="tvm")
    ex = guarded.executor
    assert ex.program is None and ex.activation_bytes == ex.unshared_bytes
    feeds = plain.random_inputs(seed=1)
    want, got = plain.run(feeds), guarded.run(feeds)
    for key, value in want.items():
        np.testing.assert_array_equal(got[key], value)


@pytest.mark.parametrize("side", ["after", "before"])
def test_models_stay_inside_their_buffers(side: str) -> None:
    """Every kernel of a small CNN, a small transformer (key length 23, so padded and
    masked key columns) and MobileNetV2, at batch 2, guarded on `side`: no fault, and the
    same outputs as ONNX Runtime."""
    proc = _python("""
        import warnings; warnings.simplefilter("ignore")
        import tempfile
        import numpy as np
        import lepton_compiler
        from benchmarks.models import build
        from lepton_compiler.testing import run_onnxruntime
        from tests.e2e.test_models import make_feeds
        folder = tempfile.mkdtemp()
        rng = np.random.default_rng(0)
        mask = np.ones((2, 23), np.int64)
        mask[1, 17:] = 0
        bert_feeds = {"input_ids": rng.integers(0, 100, (2, 23)), "attention_mask": mask}
        for name, kwargs, feeds in (("small_cnn", {}, make_feeds("small_cnn", 2)),
                                    ("bert_tiny", {"seq": 23}, bert_feeds),
                                    ("mobilenetv2", {}, make_feeds("mobilenetv2", 2))):
            path = build(name, cache_dir=folder, batch="batch", **kwargs)
            compiled = lepton_compiler.compile(str(path), backend="tvm")
            assert compiled.executor.native_flops_share == 1.0, name
            ours = compiled.run(feeds)
            for key, ref in run_onnxruntime(str(path), feeds).items():
                np.testing.assert_allclose(ours[key], ref, rtol=1e-3, atol=1e-4, err_msg=name)
            print("ok", name, flush=True)
    """, LEPTON_TVM_GUARD=side)
    assert proc.returncode == 0 and proc.stdout.count("ok ") == 3, (
        f"exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    )


def _windowed_pools() -> list[str]:
    from tests.targets.tvm.test_x86_pool import WINDOWED

    return sorted(WINDOWED)


@pytest.mark.parametrize("name", _windowed_pools())
def test_windowed_pools_read_nothing_before_their_input(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pool kernels guarded before their buffers (the conftest guards after them): a
    padded top row is not loaded from the row above the input."""
    from tests.targets.tvm.test_x86_pool import test_windowed_pool_matches_reference

    monkeypatch.setenv("LEPTON_TVM_GUARD", "before")
    test_windowed_pool_matches_reference(name)
