"""The vectorized Erf kernel against Python's math.erf and ONNX Runtime."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lepton_compiler.ops.kernels import erf
from lepton_compiler.testing import model_from_text, run_onnxruntime


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.float64])
def test_erf_matches_math_erf(dtype: type) -> None:
    x = np.concatenate([
        np.linspace(-6, 6, 20001), [0.0, -0.0, 1e-30, -1e-7, 3.999999, 4.0, 1e4, -np.inf, np.inf],
    ]).astype(dtype)  # fmt: skip
    (y,) = erf([x], {}, 18)
    assert y.dtype == dtype
    expect = np.array([math.erf(float(v)) for v in x]).astype(dtype)
    if dtype == np.float64:
        np.testing.assert_array_equal(y, expect)
    else:
        ulp = np.spacing(np.abs(expect).astype(dtype)).astype(np.float64)
        assert np.all(np.abs(y.astype(np.float64) - expect.astype(np.float64)) <= 2 * ulp)


def test_erf_nan_and_onnxruntime() -> None:
    (y,) = erf([np.array([np.nan, 0.5], np.float32)], {}, 18)
    assert np.isnan(y[0])
    x = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32) * 3
    model = model_from_text("""
<ir_version: 8, opset_import: ["" : 18]>
g (float[64,64] x) => (float[64,64] y) { y = Erf(x) }
""")
    (ref,) = run_onnxruntime(model, {"x": x}).values()
    np.testing.assert_allclose(erf([x], {}, 18)[0], ref, rtol=1e-6, atol=1e-7)
