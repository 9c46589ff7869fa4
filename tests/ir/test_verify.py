"""`verify`: each broken invariant is a `VerificationError` whose message names the culprit."""

from __future__ import annotations

import pytest

from lepton_compiler.errors import VerificationError
from lepton_compiler.ir import DType, Graph, Node, TensorType, Value, verify

from .helpers import chain, ftype, if_graph


def problems_of(graph: Graph, check_types: bool = False) -> str:
    with pytest.raises(VerificationError) as info:
        verify(graph, check_types=check_types)
    return str(info.value)


def test_valid_graphs_pass_with_type_checks() -> None:
    g, *_ = chain()
    verify(g)
    h, *_ = if_graph()
    verify(h)


def test_dangling_read_of_a_removed_producer() -> None:
    g, _, relu, _neg, _ = chain()
    g.remove(relu, safe=False)
    text = problems_of(g)
    assert f"%{relu.output.name}, which is defined by a removed node" in text and "neg" in text


def test_read_without_a_recorded_use() -> None:
    g, x, relu, neg, _ = chain()
    neg._inputs[0] = x  # a broken pass writing the input list behind the methods' back
    text = problems_of(g)
    assert "reads %x at input 0, but the value lacks the use" in text
    assert f"%{relu.output.name} lists" in text and "neg" in text


def test_stale_use_on_a_graph_input() -> None:
    g, _x, relu, neg, _ = chain()
    relu._inputs[0] = neg.output  # x still lists (relu, 0)
    x_text = problems_of(g)
    assert "%x lists" in x_text and "relu" in x_text


def test_stale_use_on_a_constant() -> None:
    g, x, _relu, _neg, _add = chain()
    c = g.add_constant([1.0], name="c")
    mul = g.make_node("Mul", [x, c], name="mul")
    mul._inputs[1] = x
    text = problems_of(g)
    assert f"%{c.name} lists" in text and "mul" in text


def test_out_of_order_nodes() -> None:
    g, _, relu, neg, _ = chain()
    early = Node("Abs", [neg.output], name="early")
    g.insert_before(relu, early)
    text = problems_of(g)
    assert "early" in text and f"%{neg.output.name}" in text and "later" in text


def test_duplicate_value_names() -> None:
    g, _, relu, neg, _ = chain()
    neg.output.name = relu.output.name
    text = problems_of(g)
    assert f"name {relu.output.name!r} is used twice" in text


def test_duplicate_node_names() -> None:
    g, x, _relu, *_ = chain()
    g.make_node("Abs", [x], name="relu")
    assert "node name 'relu' is used twice" in problems_of(g)


def test_duplicate_names_across_a_subgraph() -> None:
    g, _a, _, if_node = if_graph()
    then_g = if_node.attrs["then_branch"]
    then_g.nodes[0].output.name = "x"  # same as the outer graph input
    assert "name 'x' is used twice" in problems_of(g)


def test_input_not_in_scope() -> None:
    g, *_ = chain()
    stray = Value("stray", ftype("batch", 4))
    g.make_node("Abs", [stray], name="reader")
    text = problems_of(g)
    assert "reader" in text and "%stray" in text and "nowhere in scope" in text


def test_outer_graph_cannot_read_a_subgraph_value() -> None:
    g, _a, _, if_node = if_graph()
    inner = if_node.attrs["then_branch"].nodes[0].output
    g.make_node("Abs", [inner], name="peek")
    text = problems_of(g)
    assert "peek" in text and f"%{inner.name}" in text


def test_graph_output_not_defined() -> None:
    g, *_ = chain()
    g.outputs.append(Value("ghost", ftype(1)))
    assert "graph output %ghost" in problems_of(g)


def test_subgraph_must_point_back_to_its_node() -> None:
    g, _a, _, if_node = if_graph()
    then_g = if_node.attrs["then_branch"]
    then_g.parent = None
    assert f"subgraph {then_g.name} of" in problems_of(g)


def test_wrong_stored_type_names_node_and_value() -> None:
    g, _, _, _, add = chain()
    add.output.type = ftype("batch", 5)
    verify(g, check_types=False)  # structurally fine
    text = problems_of(g, check_types=True)
    assert "Add node 'add'" in text and f"%{add.output.name}" in text
    assert "float32[batch,5]" in text and "float32[batch,4]" in text


def test_wrong_stored_dtype() -> None:
    g, _, relu, _, _ = chain()
    relu.output.type = TensorType(DType.INT32, ("batch", 4))
    text = problems_of(g, check_types=True)
    assert "Relu node 'relu'" in text and "int32" in text


def test_less_specific_stored_type_is_fine() -> None:
    g, _, relu, _, add = chain()
    relu.output.type = TensorType(DType.FLOAT32, None)
    add.output.type = None
    verify(g)


def test_every_problem_is_listed() -> None:
    g, x, _relu, _neg, _add = chain()
    g.make_node("Abs", [x], name="relu")
    g.outputs.append(Value("ghost"))
    text = problems_of(g)
    assert "2 problem(s)" in text
    assert "node name 'relu'" in text and "%ghost" in text
