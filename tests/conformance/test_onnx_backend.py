"""ONNX's own backend test suite, run through the whole import path and the reference
interpreter (`lepton_compiler.backend`).

Every exclusion below says why. The pass counts per group are printed at the end of the run
(see `conftest.py`) and recorded in the README.
"""

from __future__ import annotations

import warnings

import onnx.backend.test
import pytest

from lepton_compiler.backend import LeptonBackend

pytestmark = pytest.mark.conformance

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # the case generators warn about overflowing casts
    backend_test = onnx.backend.test.BackendTest(LeptonBackend, __name__)

# Random ops: the expected outputs come from one particular generator; any other correct
# sampler gives other numbers.
backend_test.exclude(r"^test_bernoulli")
# The suite's own comparison cannot compare a sequence of 0-d arrays (it calls len() on them);
# our outputs are right, the runner raises TypeError before comparing.
backend_test.exclude(r"^test_loop16_seq_none_")
# "real" models are downloaded from the ONNX model zoo at test time; no network here.
backend_test.exclude(r"^test_(bvlc_alexnet|densenet121|inception_v1|inception_v2|resnet50"
                     r"|shufflenet|squeezenet|vgg19|zfnet512)_")
# Gradient (ai.onnx.preview.training) is a training-only op: ONNX defines no inference
# semantics or reference kernel for it, and a deployment compiler never runs it.
backend_test.exclude(r"^test_gradient_of_")
# The suite tests every device the backend claims; we only run on the CPU.
backend_test.exclude(r"_cuda$")

globals().update(backend_test.test_cases)
