"""TVM x86 norm family: ``lepton.SkipLayerNorm`` (optional beta and bias, broadcast skip) and
``LayerNormalization`` (any axis, optional B) match the reference kernels; unsupported forms
are refused with `LoweringError`."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pytest

pytest.importorskip("tvm")
os.environ.setdefault("TVM_NUM_THREADS", "2")

from lepton_compiler.ir import DType
from lepton_compiler.targets.tvm.kernels import attention as attention_family
from lepton_compiler.targets.tvm.kernels import plan_group
from lepton_compiler.targets.tvm.te_ops import LoweringError

from .test_x86_attention import _tvm_target, check_lone, lone_group

SKIP_LAYER_NORM = {
    # name: (x, skip, gamma, beta, bias, out)
    "bert_base": ((1, 128, 768), (1, 128, 768), (768,), (768,), None, (1, 128, 768)),
    "with_bias": ((2, 37, 64), (2, 37, 64), (64,), (64,), (64,), (2, 37, 64)),
    "no_beta_with_bias": ((3, 5, 40), (3, 5, 40), (40,), None, (40,), (3, 5, 40)),
    "no_beta": ((4, 19), (4, 19), (19,), None, None, (4, 19)),
    "skip_broadcast": ((2, 7, 24), (7, 24), (24,), (24,), None, (2, 7, 24)),
    "odd_width": ((1, 3, 7), (1, 3, 7), (7,), (7,), (7,), (1, 3, 7)),
}


@pytest.mark.parametrize("name", sorted(SKIP_LAYER_NORM))
def test_skip_layer_norm_matches_reference(name: str) -> None:
    *ins, out = SKIP_LAYER_NORM[name]
    check_lone("lepton.SkipLayerNorm", ins, out, {"epsilon": 1e-12})


def test_skip_layer_norm_large_offset() -> None:
    """Rows with a large common offset: the two-pass variance stays accurate."""
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((8, 96)) + 1000.0).astype(np.float32)
    skip = rng.standard_normal((8, 96)).astype(np.float32)
    gamma = rng.standard_normal(96).astype(np.float32)
    check_lone("lepton.SkipLayerNorm", [x.shape, skip.shape, gamma.shape], x.shape,
               {"epsilon": 1e-5}, data=[x, skip, gamma], rtol=1e-4)  # fmt: skip


LAYER_NORM = {
    # name: (x, scale, b, axis)
    "last_axis": ((2, 33, 768), (768,), (768,), -1),
    "no_b": ((5, 20), (20,), None, -1),
    "two_axes": ((2, 3, 4, 5), (4, 5), (4, 5), 2),
    "axis_zero": ((3, 17), (3, 17), (3, 17), 0),
    "scale_leading_ones": ((6, 48), (1, 48), (48,), 1),
}


@pytest.mark.parametrize("name", sorted(LAYER_NORM))
def test_layer_norm_matches_reference(name: str) -> None:
    x, scale, b, axis = LAYER_NORM[name]
    check_lone("LayerNormalization", [x, scale, b] if b else [x, scale], x,
               {"axis": axis, "epsilon": 1e-5})  # fmt: skip


@pytest.mark.parametrize("name", ["last_axis", "no_b", "two_axes", "axis_zero"])
def test_rms_norm_matches_reference(name: str) -> None:
    """RMSNormalization (opset 23): ``x / sqrt(mean(x^2) + eps) * scale``."""
    x, scale, _, axis = LAYER_NORM[name]
    check_lone("RMSNormalization", [x, scale], x, {"axis": axis, "epsilon": 1e-5}, opset=23)


@pytest.mark.parametrize("case", ["scale_broadcast", "fp16", "stash", "no_gamma", "bad_skip"])
def test_norm_refusals(case: str) -> None:
    op = "LayerNormalization"
    shapes: list[Any] = [(4, 8), (8,), (8,)]
    attrs: dict[str, Any] = {"axis": -1}
    dtypes = [DType.FLOAT32] * 3
    if case == "scale_broadcast":
        shapes[1] = (1,)
    if case == "fp16":
        dtypes[0] = DType.FLOAT16
    if case == "stash":
        attrs["stash_type"] = 0
    if case == "no_gamma":
        op, shapes, dtypes = "lepton.SkipLayerNorm", [(4, 8), (4, 8), None], dtypes
    if case == "bad_skip":
        op, shapes = "lepton.SkipLayerNorm", [(4, 8), (3, 8), (8,)]
    _, fused = lone_group(op, shapes, (4, 8), attrs, dtypes)
    with pytest.raises(LoweringError):
        plan_group(fused, _tvm_target())


@pytest.mark.parametrize("name", ["with_bias", "skip_broadcast"])
def test_skip_layer_norm_parallel_form(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows split into parallel tasks (threshold forced to 0) give the same results."""
    monkeypatch.setattr(attention_family, "SERIAL_ELEMENTS", 0)
    *ins, out = SKIP_LAYER_NORM[name]
    _, fused = lone_group("lepton.SkipLayerNorm", ins, out, {"epsilon": 1e-12})
    assert plan_group(fused, _tvm_target()).config.tasks > 1
    check_lone("lepton.SkipLayerNorm", ins, out, {"epsilon": 1e-12})


def test_large_layer_norm_runs_in_parallel() -> None:
    _, fused = lone_group("LayerNormalization", [(4, 512, 300), (300,)], (4, 512, 300), {})
    assert plan_group(fused, _tvm_target()).config.tasks > 1
    check_lone("LayerNormalization", [(4, 512, 300), (300,)], (4, 512, 300), {})
