"""ONNX's node tests through the Numba backend (`lepton_compiler.backend.LeptonNumbaBackend`).

Each case is compiled with ``compile(backend="numba")``: ops a template takes run in generated
Numba kernels, the rest through their reference kernels, so every case the reference passes
passes here too. The summary at the end of the run (`conftest.py`) counts the passing cases
and, of those, the ones where every op ran in Numba kernels. Only the ``node`` group runs
here; exclusions are those of `test_onnx_backend`.
"""

from __future__ import annotations

import warnings

import pytest

pytest.importorskip("numba")
pytest.importorskip("scipy")

import onnx.backend.test

from lepton_compiler.backend import LeptonNumbaBackend

pytestmark = pytest.mark.conformance

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    backend_test = onnx.backend.test.BackendTest(LeptonNumbaBackend, __name__)

backend_test.exclude(r"^test_bernoulli")
backend_test.exclude(r"^test_loop16_seq_none_")
backend_test.exclude(r"^test_gradient_of_")
backend_test.exclude(r"_cuda$")

globals().update(
    {
        name: case
        for name, case in backend_test.test_cases.items()
        if name == "OnnxBackendNodeModelTest"
    }
)
