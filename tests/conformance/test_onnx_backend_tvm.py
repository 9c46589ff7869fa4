"""ONNX's node tests through the TVM backend (`lepton_compiler.backend.LeptonTvmBackend`).

Each case is compiled with ``compile(backend="tvm")``: ops with a TVM kernel run natively,
the rest through their reference kernels. The summary at the end of the run (`conftest.py`)
counts the cases that pass and, of those, the ones where every op ran in TVM kernels; the
native count is recorded in the README. Only the ``node`` group runs here (the model groups
add nothing the node group does not cover for kernels). Exclusions are those of
`test_onnx_backend`.
"""

from __future__ import annotations

import warnings

import pytest

pytest.importorskip("tvm")

import onnx.backend.test

from lepton_compiler.backend import LeptonTvmBackend

pytestmark = pytest.mark.conformance

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    backend_test = onnx.backend.test.BackendTest(LeptonTvmBackend, __name__)

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
