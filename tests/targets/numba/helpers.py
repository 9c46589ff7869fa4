"""Shared checks of the Numba template tests: compile a tiny ONNX model (written as text)
with ``compile(backend="numba")`` at O2, and compare with the reference interpreter on the
same model, unoptimized."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest

pytest.importorskip("numba")
pytest.importorskip("scipy")

import lepton_compiler
from lepton_compiler.ir import Graph
from lepton_compiler.testing import graph_from_text, random_inputs, run_reference

#: Tolerances of every template test (float32 kernels with fastmath against NumPy).
RTOL, ATOL = 1e-4, 1e-5


def compile_text(text: str, **kwargs: Any) -> lepton_compiler.CompiledModel:
    """`text` compiled by the Numba backend (warnings about fallbacks silenced)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return lepton_compiler.compile(graph_from_text(text), backend="numba", **kwargs)


def check(
    text: str,
    families: Mapping[str, int],
    feeds: Mapping[str, np.ndarray] | None = None,
    fallbacks: int = 0,
    rtol: float = RTOL,
    atol: float = ATOL,
) -> lepton_compiler.CompiledModel:
    """Compile `text`, check which templates took its nodes, and compare with the reference.

    Args:
        text: the model in ONNX's textual syntax.
        families: expected number of kernels per template ``NAME``.
        feeds: inputs (random from the signature when None).
        fallbacks: expected number of top-level nodes run by reference kernels.
    """
    model = compile_text(text)
    ex = model.executor
    got: dict[str, int] = {}
    for step in ex._steps:
        if step.kernel is not None:
            got[step.kernel.family] = got.get(step.kernel.family, 0) + 1
    assert got == dict(families), (got, ex.build_errors)
    n_fallback = sum(1 for s in ex._steps if s.kernel is None and s.view_shape is None)
    assert n_fallback == fallbacks, ex.build_errors
    ref_graph: Graph = graph_from_text(text)
    feeds = dict(feeds) if feeds is not None else random_inputs(ref_graph, seed=1)
    expected = run_reference(ref_graph, feeds)
    for _ in range(2):  # the second run reuses every planned buffer
        actual = model.run(feeds)
        for name, ref in expected.items():
            assert actual[name].shape == np.shape(ref), name
            np.testing.assert_allclose(actual[name], ref, rtol=rtol, atol=atol, err_msg=name)
    return model


def source_of(model: lepton_compiler.CompiledModel, family: str) -> str:
    """The generated source of the model's first kernel from `family`, read from its file."""
    for k in model.executor.kernels:
        if k.family == family:
            assert k.path.is_file()
            return k.path.read_text(encoding="utf-8")
    raise AssertionError(f"no {family} kernel")
