"""Whole models through `lepton_compiler.compile` at O2 (cleanup + fusion): fused groups
form as expected and the outputs still match ONNX Runtime, with a symbolic batch too."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

import lepton_compiler
from tests.e2e.conftest import ModelCache
from tests.e2e.test_models import make_feeds, ort_timed

COMPILED = ["small_cnn", "mlp", "bert_tiny", "mobilenetv2", "resnet50"]


@pytest.mark.parametrize("name", COMPILED)
def test_o2_matches_onnxruntime_with_symbolic_batch(models: ModelCache, name: str) -> None:
    path = models.path(name, batch="batch")
    compiled = lepton_compiler.compile(str(path), opt_level=2)
    report = compiled.report
    assert report.kernels_after < report.kernels_before
    assert report.fused_groups, "O2 formed no fused group"
    for batch in (1, 2):
        feeds = make_feeds(name, batch)
        ours = compiled.run(feeds)
        theirs, _ = ort_timed(path, feeds)
        for key, ref in theirs.items():
            np.testing.assert_allclose(ours[key], ref, rtol=1e-3, atol=1e-4, err_msg=key)


def test_resnet50_is_one_kernel_per_conv(models: ModelCache) -> None:
    compiled = lepton_compiler.compile(str(models.path("resnet50")), opt_level=2)
    ops = compiled.graph.op_counts()
    groups = Counter((g["anchor"], tuple(g["epilogue"])) for g in compiled.report.fused_groups)
    conv_kernels = ops.get("Conv", 0) + sum(n for (a, _), n in groups.items() if a == "Conv")
    assert conv_kernels == 53
    assert groups[("Conv", ("Relu",))] == 33  # stem + two per bottleneck
    assert groups[("Conv", ("Add", "Relu"))] == 16  # every bottleneck's residual join
    assert compiled.report.kernels_after <= 60


def test_bert_layers_fuse_into_a_handful_of_kernels(models: ModelCache) -> None:
    compiled = lepton_compiler.compile(str(models.path("bert_tiny")), opt_level=2)
    ops = compiled.graph.op_counts()
    layers = 2
    assert ops["lepton.Attention"] == layers
    assert ops["lepton.SkipLayerNorm"] == 2 * layers + 1  # + the embedding LayerNorm
    gelu_groups = [g for g in compiled.report.fused_groups if "lepton.Gelu" in g["epilogue"]]
    assert len(gelu_groups) == layers
    compute = {"lepton.Attention", "lepton.SkipLayerNorm", "lepton.Fused", "Gemm",
               "lepton.MatMulAdd", "MatMul"}  # fmt: skip
    assert sum(n for op, n in ops.items() if op in compute) <= 10 * layers + 3
