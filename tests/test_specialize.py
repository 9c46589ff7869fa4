"""`specialize`: a graph with a symbolic batch copied to concrete shapes, types re-inferred,
fused-group bodies included; the original is untouched; bad shapes are clear errors."""

from __future__ import annotations

import numpy as np
import pytest

import lepton_compiler
from lepton_compiler.errors import InputError
from lepton_compiler.ir import verify
from lepton_compiler.specialize import clone_graph, has_symbolic_shapes, specialize
from lepton_compiler.testing import graph_from_text, run_reference

TEXT = """
<ir_version: 8, opset_import: ["" : 18]>
g (float[N, 4] x) => (float[N, 3] y) <float[4, 3] w = {1,2,3,4,5,6,7,8,9,10,11,12},
                                        float[3] b = {1, 2, 3}> {
    m = MatMul(x, w)
    a = Add(m, b)
    y = Relu(a)
}
"""


def test_specialize_sets_every_shape_and_keeps_the_original() -> None:
    graph = graph_from_text(TEXT)
    assert has_symbolic_shapes(graph)
    g8 = specialize(graph, {"x": [8, 4]})
    verify(g8)
    assert not has_symbolic_shapes(g8)
    assert [tuple(o.shape) for n in g8 for o in n.outputs] == [(8, 3)] * 3
    assert graph.inputs[0].shape == ("N", 4)  # untouched
    x = np.arange(32, dtype=np.float32).reshape(8, 4)
    want = run_reference(graph, {"x": x})["y"]
    np.testing.assert_array_equal(run_reference(g8, {"x": x})["y"], want)


def test_specialize_reaches_into_fused_bodies() -> None:
    graph = lepton_compiler.compile(graph_from_text(TEXT), opt_level=2).graph
    fused = [n for n in graph if n.op == "lepton.Fused"]
    assert fused, "O2 fuses MatMul+Add+Relu"
    g2 = specialize(graph, {"x": [2, 4]})
    verify(g2)
    body = next(n for n in g2 if n.op == "lepton.Fused").attrs["body"]
    assert all(o.shape[0] == 2 for n in body for o in n.outputs)
    assert not has_symbolic_shapes(g2)


def test_clone_shares_constants_not_structure() -> None:
    graph = graph_from_text(TEXT)
    copy = clone_graph(graph)
    verify(copy)
    assert [n.op for n in copy] == [n.op for n in graph]
    assert not set(map(id, copy.nodes)) & set(map(id, graph.nodes))
    w = next(v for v in graph.initializers.values() if v.name == "w")
    assert copy.initializers["w"] is not w and copy.initializers["w"].const is w.const


@pytest.mark.parametrize(
    ("shape", "match"), [([8], "expected rank 2"), ([8, 5], r"expected shape \('N', 4\)")]
)
def test_bad_shape_is_an_input_error(shape: list[int], match: str) -> None:
    with pytest.raises(InputError, match=match):
        specialize(graph_from_text(TEXT), {"x": shape})
