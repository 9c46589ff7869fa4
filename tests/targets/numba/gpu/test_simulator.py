"""Runs the CUDA kernel checks (`_sim_checks.py`) under Numba's CUDA simulator in a fresh
process: the simulator must be switched on (``NUMBA_ENABLE_CUDASIM=1``) before ``numba`` is
first imported, which other tests in this process have already done."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("numba")
if importlib.util.find_spec("numba_cuda") is None:
    pytest.skip("numba-cuda is not installed (pip install numba-cuda)", allow_module_level=True)

_CHECKS = Path(__file__).with_name("_sim_checks.py")


def test_cuda_kernels_match_the_reference_under_the_simulator(tmp_path: Path) -> None:
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1", "LEPTON_CACHE_DIR": str(tmp_path)}
    env.pop("PYTEST_ADDOPTS", None)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:xdist",
            str(_CHECKS),
        ],
        cwd=Path(__file__).parents[4],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = proc.stdout + proc.stderr
    expected = len(re.findall(r"^def test_", _CHECKS.read_text(encoding="utf-8"), re.M))
    passed = re.search(r"(\d+) passed", out)
    assert proc.returncode == 0, out[-6000:]
    assert passed is not None and int(passed.group(1)) == expected, out[-3000:]
