"""Shared helpers for pass tests: graphs from ONNX text, run before/after, compare."""

from __future__ import annotations

import numpy as np
import onnx.parser
import pytest

from lepton_compiler.frontend.onnx import import_model
from lepton_compiler.interpreter import run_graph
from lepton_compiler.ir import Graph, TensorType, verify
from lepton_compiler.pass_manager import PassContext


def parse(text: str) -> Graph:
    """An IR graph from ONNX's textual syntax (no simplification, so the graph is as written)."""
    return import_model(onnx.parser.parse_model(text), simplify=False)


def ops(graph: Graph) -> list[str]:
    """The op names of the graph in order."""
    return [n.op for n in graph]


def feeds_for(graph: Graph, seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs matching the graph's (static) input types."""
    rng = np.random.default_rng(seed)
    out = {}
    for v in graph.inputs:
        assert isinstance(v.type, TensorType) and v.type.is_static
        out[v.name] = rng.standard_normal(v.type.shape).astype(v.type.dtype.numpy)
    return out


@pytest.fixture
def ctx() -> PassContext:
    """A pass context that verifies the IR after every pass."""
    return PassContext(opt_level=1, verify_each=True)


def check_equivalent(
    before: Graph,
    after: Graph,
    feeds: dict[str, np.ndarray],
    rtol: float = 1e-6,
    atol: float = 1e-6,
) -> None:
    """Both graphs give the same outputs (by position) and `after` verifies."""
    verify(after)
    a = list(run_graph(before, feeds).values())
    b = list(run_graph(after, feeds).values())
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(y, x, rtol=rtol, atol=atol)
