"""The O1 and O2 pipelines on the two real models: fewer nodes (O1), fused groups (O2), and
outputs still equal to ONNX Runtime's on the original model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from lepton_compiler.frontend.onnx import import_model
from lepton_compiler.interpreter import run_graph
from lepton_compiler.ir import verify
from lepton_compiler.pass_manager import PassContext
from lepton_compiler.pipeline import run_pipeline
from lepton_compiler.testing import run_onnxruntime

MODELS = Path(__file__).resolve().parents[2] / ".." / "shared" / "models"


def _model(name: str) -> Path:
    path = MODELS / name / "model.onnx"
    if not path.exists():
        pytest.skip(f"{path} is absent (real models live in ../shared/models beside the repo)")
    return path


def _input(name: str) -> np.ndarray:
    rng = np.random.default_rng(0)
    if name == "mnist":
        return rng.uniform(0, 255, (1, 1, 28, 28)).astype(np.float32)
    return rng.uniform(-1, 1, (1, 3, 240, 320)).astype(np.float32)


@pytest.mark.parametrize("name", ["mnist", "ultraface"])
@pytest.mark.parametrize("simplify", [False, True])
@pytest.mark.parametrize("level", [1, 2])
def test_pipeline_keeps_outputs(name: str, simplify: bool, level: int) -> None:
    path = _model(name)
    graph = import_model(path, simplify=simplify)
    n_before = len(graph)
    run_pipeline(graph, PassContext(opt_level=level, verify_each=True))
    verify(graph)
    assert len(graph) <= n_before
    if not simplify:
        assert len(graph) < n_before  # the unsimplified models have something to clean up
    if level == 2:
        assert sum(n.op == "lepton.Fused" for n in graph) >= (2 if name == "mnist" else 20)
    x = _input(name)
    ours = run_graph(graph, {graph.inputs[0].name: x})
    theirs = run_onnxruntime(onnx.load(path), {graph.inputs[0].name: x})
    for (key, a), b in zip(ours.items(), theirs.values(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3, err_msg=key)
