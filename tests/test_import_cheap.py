"""Importing `lepton_compiler` must stay cheap: no onnx, onnxruntime, tvm or numba at import."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("onnx", "onnxruntime", "onnxsim", "tvm", "numba")


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    )
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120
    )


def test_import_does_not_load_heavy_packages() -> None:
    code = (
        "import sys, lepton_compiler\n"
        f"loaded = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "assert not loaded, loaded\n"
        "assert lepton_compiler.__version__\n"
        "assert issubclass(lepton_compiler.InputError, lepton_compiler.LeptonError)\n"
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr


def test_public_names_resolve_lazily() -> None:
    code = (
        "import sys, lepton_compiler\n"
        "assert 'lepton_compiler.api' not in sys.modules\n"
        "assert {'compile', 'load', 'CompiledModel'} <= set(dir(lepton_compiler))\n"
        "assert callable(lepton_compiler.compile) and callable(lepton_compiler.load)\n"
        "assert lepton_compiler.CompiledModel.__name__ == 'CompiledModel'\n"
        "assert 'tvm' not in sys.modules and 'numba' not in sys.modules\n"
        "from lepton_compiler import compile, load, CompiledModel, TensorSpec, CompileReport\n"
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr


def test_unknown_attribute_is_an_attribute_error() -> None:
    result = run_python("import lepton_compiler; lepton_compiler.nope")
    assert result.returncode == 1
    assert "AttributeError" in result.stderr and "nope" in result.stderr
