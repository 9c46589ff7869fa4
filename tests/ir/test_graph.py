"""Graph editing: use-def links, removal, replacement, ordering, names and the networkx view."""

from __future__ import annotations

import numpy as np
import pytest

from lepton_compiler.errors import VerificationError
from lepton_compiler.ir import DType, Graph, Node, TensorType, Value, verify

from .helpers import assert_use_links, chain, ftype, if_graph


def op_list(graph: Graph) -> list[str]:
    return [n.op for n in graph]


# -- values and nodes ----------------------------------------------------------------------------
def test_node_records_uses_in_order_and_users_are_distinct() -> None:
    g, x, relu, neg, add = chain()
    r = relu.output
    assert r.uses == [(neg, 0), (add, 0)]
    assert r.users == [neg, add]
    sq = g.make_node("Mul", [r, r])
    assert r.uses[-2:] == [(sq, 0), (sq, 1)]
    assert r.users == [neg, add, sq]
    assert x.producer is None and r.producer is relu and r.index == 0
    assert_use_links(g)


def test_values_compare_by_identity() -> None:
    a, b = Value("v", ftype(1)), Value("v", ftype(1))
    assert a != b and a == a
    assert len({a, b}) == 2


def test_output_with_a_producer_cannot_be_reused() -> None:
    _, _, relu, _, _ = chain()
    with pytest.raises(VerificationError, match="already has a producer"):
        Node("Neg", [], outputs=[relu.output])


def test_qualified_op_and_domain() -> None:
    n = Node("lepton.Fused", [], {}, outputs=1)
    assert (n.domain, n.op_type, n.op) == ("lepton", "Fused", "lepton.Fused")
    m = Node("Conv", [])
    assert (m.domain, m.op_type, m.op) == ("", "Conv", "Conv")


def test_attributes_are_frozen_and_changed_with_with_attrs() -> None:
    n = Node("LeakyRelu", [], {"alpha": 0.1})
    with pytest.raises(TypeError):
        n.attrs["alpha"] = 0.2  # type: ignore[index]
    n.with_attrs(alpha=0.3, extra=1)
    assert dict(n.attrs) == {"alpha": 0.3, "extra": 1}
    n.with_attrs(extra=None)
    assert dict(n.attrs) == {"alpha": 0.3}
    assert n.attr("missing", 7) == 7


# -- input editing -----------------------------------------------------------------------------
def test_set_input_moves_the_use() -> None:
    g, x, relu, neg, add = chain()
    neg.set_input(0, x)
    assert neg.inputs == (x,)
    assert (neg, 0) not in relu.output.uses and (neg, 0) in x.uses
    assert relu.output.uses == [(add, 0)]
    assert_use_links(g)
    verify(g, check_types=False)


def test_set_input_on_one_slot_keeps_the_other_slot_of_the_same_value() -> None:
    g, x, relu, _, _ = chain()
    sq = g.make_node("Mul", [relu.output, relu.output])
    sq.set_input(0, x)
    assert (sq, 1) in relu.output.uses and (sq, 0) not in relu.output.uses
    assert (sq, 0) in x.uses
    assert_use_links(g)


def test_set_input_to_none_and_back() -> None:
    g, x, relu, _, _ = chain()
    clip = g.make_node("Clip", [relu.output, None, None])
    clip.set_input(0, None)
    assert clip.inputs == (None, None, None)
    assert all(u is not clip for u, _ in relu.output.uses)
    clip.set_input(2, x)
    assert x.uses[-1] == (clip, 2)
    assert_use_links(g)


def test_set_inputs_changes_length_and_links() -> None:
    g, x, relu, _, add = chain()
    add.set_inputs([x, x, relu.output])
    assert add.inputs == (x, x, relu.output)
    assert (add, 0) in x.uses and (add, 1) in x.uses and (add, 2) in relu.output.uses
    assert (add, 0) not in relu.output.uses
    add.set_inputs([x])
    assert add.inputs == (x,) and (add, 1) not in x.uses and (add, 2) not in relu.output.uses
    assert_use_links(g)


def test_replace_input_with_replaces_every_slot() -> None:
    g, x, relu, _, _ = chain()
    sq = g.make_node("Mul", [relu.output, relu.output])
    sq.replace_input_with(relu.output, x)
    assert sq.inputs == (x, x)
    assert all(u is not sq for u, _ in relu.output.uses)
    assert_use_links(g)


# -- replace_all_uses ------------------------------------------------------------------------
def test_replace_all_uses_moves_every_use_and_graph_outputs() -> None:
    g, x, relu, neg, add = chain()
    abs_ = g.make_node("Abs", [x], before=neg)
    g.replace_all_uses(relu.output, abs_.output)
    assert relu.output.uses == []
    assert neg.inputs == (abs_.output,) and add.inputs[0] is abs_.output
    g.replace_all_uses(add.output, neg.output)
    assert g.outputs == [neg.output]
    assert_use_links(g)
    verify(g, check_types=False)


def test_replace_all_uses_reaches_captures_inside_subgraphs() -> None:
    g, a, _cond, if_node = if_graph()
    then_g, else_g = if_node.attrs["then_branch"], if_node.attrs["else_branch"]
    inner = then_g.nodes[0]
    assert (inner, 0) in a.uses  # the capture is recorded on the outer value
    x = g.inputs[0]
    b = g.make_node("Abs", [x], before=if_node).output
    g.replace_all_uses(a, b)
    assert inner.inputs == (b,)
    assert a.uses == []
    assert else_g.outputs == [b], "a subgraph output holding the captured value must follow"
    assert if_node.outer_values() == [b]
    assert_use_links(g)
    verify(g, check_types=False)


def test_replace_all_uses_with_itself_is_a_no_op() -> None:
    g, _, relu, _neg, _add = chain()
    before = relu.output.uses
    g.replace_all_uses(relu.output, relu.output)
    assert relu.output.uses == before


# -- remove ----------------------------------------------------------------------------------
def test_remove_unused_node_drops_its_uses() -> None:
    g, x, _relu, _, _ = chain()
    dead = g.make_node("Abs", [x])
    g.remove(dead)
    assert dead.graph is None and dead not in g.nodes
    assert all(u is not dead for u, _ in x.uses)
    assert_use_links(g)


def test_remove_safe_refuses_a_used_node_and_names_the_value() -> None:
    g, _, relu, _neg, _ = chain()
    with pytest.raises(VerificationError, match=f"%{relu.output.name} is still used"):
        g.remove(relu)
    assert relu.graph is g and op_list(g) == ["Relu", "Neg", "Add"]
    assert_use_links(g)


def test_remove_safe_refuses_a_graph_output() -> None:
    g, _, _, _, add = chain()
    with pytest.raises(VerificationError, match="graph output"):
        g.remove(add)
    assert add.graph is g


def test_remove_safe_is_atomic_for_a_group() -> None:
    g, x, relu, neg, _add = chain()
    dead = g.make_node("Abs", [x])
    uses_before = {id(v): v.uses for v in [x, relu.output, neg.output]}
    # `dead` could go, but `neg` is still used by `add` (which stays): nothing may change.
    with pytest.raises(VerificationError, match="still used"):
        g.remove([dead, neg])
    assert op_list(g) == ["Relu", "Neg", "Add", "Abs"]
    assert dead.graph is g and (dead, 0) in x.uses
    assert {id(v): v.uses for v in [x, relu.output, neg.output]} == uses_before
    assert_use_links(g)


def test_remove_a_group_whose_uses_are_all_inside_it() -> None:
    g, x, relu, neg, add = chain()
    g.outputs = [x]
    g.remove([add, neg, relu])
    assert len(g) == 0 and x.uses == []
    verify(g, check_types=False)


def test_remove_unsafe_leaves_dangling_reads_that_verify_reports() -> None:
    g, _, relu, _, _ = chain()
    g.remove(relu, safe=False)
    assert relu.graph is None
    with pytest.raises(VerificationError, match=relu.output.name):
        verify(g, check_types=False)


def test_remove_with_a_node_listed_twice() -> None:
    g, x, *_ = chain()
    dead = g.make_node("Abs", [x], name="dead")
    g.remove([dead, dead])
    assert dead.graph is None and op_list(g) == ["Relu", "Neg", "Add"]
    assert_use_links(g)


def test_insert_is_atomic_when_a_node_is_taken() -> None:
    g, x, relu, _neg, _add = chain()
    other, *_ = chain()
    fresh = Node("Abs", [x], name="fresh")
    taken = other.nodes[0]
    with pytest.raises(VerificationError, match="already belongs"):
        g.insert_after(relu, [fresh, taken])
    assert fresh.graph is None and fresh not in g.nodes and taken.graph is other
    g.insert_after(relu, fresh)  # still usable
    assert g.nodes[1] is fresh


def test_remove_a_node_of_another_graph_is_refused() -> None:
    g, *_ = chain()
    other, _, relu, _, _ = chain()
    with pytest.raises(VerificationError, match="not in graph"):
        g.remove(relu)
    assert relu.graph is other


def test_remove_node_with_subgraph_drops_capture_uses() -> None:
    g, a, _, if_node = if_graph()
    g.outputs = [a]
    g.remove(if_node)
    assert a.uses == []
    verify(g, check_types=False)


def test_remove_safe_refuses_producer_of_a_value_a_subgraph_returns() -> None:
    g, a, _, if_node = if_graph()
    then_g = if_node.attrs["then_branch"]
    # Only the else branch's output reads %a now: that is still a use of it.
    then_g.nodes[0].set_input(0, g.inputs[0])
    with pytest.raises(VerificationError, match=f"%{a.name}"):
        g.remove(a.producer)
    assert a.producer.graph is g


# -- insertion and iteration -----------------------------------------------------------------
def test_insert_before_and_after_keep_order_and_links() -> None:
    g, x, relu, neg, add = chain()
    b = Node("Abs", [x], name="b")
    a = Node("Sigmoid", [x], name="a")
    g.insert_before(neg, [b, a])
    c = Node("Tanh", [relu.output], name="c")
    g.insert_after(relu, c)
    d = g.make_node("Exp", [neg.output], name="d", before=add)
    assert [n.name for n in g] == ["relu", "c", "b", "a", "neg", "d", "add"]
    assert all(n.graph is g for n in (a, b, c, d))
    assert d.output.name and d.output.producer is d
    assert_use_links(g)
    verify(g, check_types=False)


def test_insert_relative_to_a_foreign_node_is_refused() -> None:
    g, x, *_ = chain()
    _, _, foreign, _, _ = chain()
    with pytest.raises(VerificationError, match="not in graph"):
        g.insert_before(foreign, Node("Abs", [x]))


def test_a_node_belongs_to_one_graph() -> None:
    _g, _x, relu, *_ = chain()
    other = Graph()
    with pytest.raises(VerificationError, match="already belongs"):
        other.append(relu)


def test_editing_while_iterating() -> None:
    """Remove the current node, remove a later one, insert new ones: the walk stays sane."""
    g, x, relu, neg, add = chain()
    tail = g.make_node("Abs", [add.output], name="tail")
    g.outputs = [tail.output]
    visited = []
    for node in g:
        visited.append(node.name)
        if node is relu:
            # Rewrite Relu -> Sigmoid: insert after, move uses, drop the old node.
            new = g.make_node("Sigmoid", [x], name="sig", before=neg)
            g.replace_all_uses(relu.output, new.output)
            g.remove(relu)
        elif node is neg:
            # Drop a later node (add) too: replace it with neg's output.
            g.replace_all_uses(add.output, neg.output)
            g.remove(add)
    assert visited == ["relu", "neg", "tail"], "removed nodes are skipped, new ones not visited"
    assert [n.name for n in g] == ["sig", "neg", "tail"]
    assert_use_links(g)
    verify(g, check_types=False)


# -- sort ------------------------------------------------------------------------------------
def test_sort_is_stable_and_restores_order() -> None:
    x = Value("x", ftype(2))
    g = Graph(inputs=[x])
    # Independent nodes in a deliberate order, then a consumer placed first.
    a = Node("Abs", [x], name="a")
    b = Node("Neg", [x], name="b")
    c = Node("Exp", [x], name="c")
    s = Node("Sum", [a.output, c.output], name="s", outputs=[Value("s_out")])
    for n in (s, c, b, a):
        g.append(n)
    g.outputs = [s.output, b.output]
    g.sort()
    # c, b and a keep their relative order; s moves right after its last dependency.
    assert [n.name for n in g] == ["c", "b", "a", "s"]
    g.sort()
    assert [n.name for n in g] == ["c", "b", "a", "s"], "sorting a sorted graph changes nothing"
    verify(g, check_types=False)


def test_sort_leaves_a_valid_order_untouched() -> None:
    g, *_ = chain()
    before = g.nodes
    g.sort()
    assert g.nodes == before


def test_sort_respects_captures_of_subgraphs() -> None:
    x = Value("x", ftype(2))
    cond = Value("cond", TensorType(DType.BOOL, ()))
    producer = Node("Relu", [x], name="make_a")
    a = producer.output
    then_g = Graph(name="then")
    then_g.outputs = [then_g.make_node("Neg", [a], name="then_neg").output]
    else_g = Graph(name="else", outputs=[x])
    if_node = Node("If", [cond], {"then_branch": then_g, "else_branch": else_g}, name="if")
    # The If (which captures %a) sits before the node producing %a.
    g = Graph(inputs=[x, cond], nodes=[if_node, producer], outputs=[if_node.output])
    with pytest.raises(VerificationError, match="defined later"):
        verify(g, check_types=False)
    g.sort()
    assert g.nodes == [producer, if_node]
    verify(g, check_types=False)


def test_sort_detects_a_cycle_and_leaves_the_graph_alone() -> None:
    g, _x, relu, neg, _add = chain()
    relu.set_input(0, neg.output)  # relu -> neg -> relu
    before = g.nodes
    with pytest.raises(VerificationError, match="cycle"):
        g.sort()
    assert g.nodes == before


# -- networkx --------------------------------------------------------------------------------
def test_to_networkx_edges() -> None:
    g, _x, relu, neg, add = chain()
    nxg = g.to_networkx()
    assert set(nxg.nodes) == {relu, neg, add}
    assert nxg.nodes[relu]["op"] == "Relu" and nxg.nodes[add]["name"] == "add"
    edges = sorted(
        (u.name, v.name, d["value"].name, d["index"]) for u, v, d in nxg.edges(data=True)
    )
    r, n = relu.output.name, neg.output.name
    assert edges == [("neg", "add", n, 1), ("relu", "add", r, 0), ("relu", "neg", r, 0)]


def test_to_networkx_keeps_parallel_edges_and_captures() -> None:
    import networkx as nx

    g, a, _cond, if_node = if_graph()
    sq = g.make_node("Mul", [a, a], name="sq")
    nxg = g.to_networkx()
    producer = a.producer
    assert nxg.number_of_edges(producer, sq) == 2
    assert nxg.has_edge(producer, if_node), "a capture is an edge to the node owning the subgraph"
    assert next(iter(nx.topological_sort(nxg))) is producer


# -- names -----------------------------------------------------------------------------------
def test_unique_name_never_collides_with_existing_names() -> None:
    x = Value("v_0", ftype(1))
    g = Graph(inputs=[x], initializers=[Value("v_1", const=np.ones(1, np.float32))])
    n = g.make_node("Abs", [x], name="v_2")
    n.output.name = "v_3"  # renamed after the name table exists
    m = g.make_node("Neg", [x])
    m.name = "v_4"
    names = {g.unique_name("v") for _ in range(50)}
    assert len(names) == 50
    assert not names & {"v_0", "v_1", "v_2", "v_3", "v_4"}


def test_unique_name_sees_names_inside_subgraphs() -> None:
    g, _a, _, if_node = if_graph()
    then_g = if_node.attrs["then_branch"]
    deep = then_g.nodes[0]
    deep.output.name = "then_neg_x"
    taken = {v.name for v in then_g.values()} | {n.name for n in then_g}
    fresh = {g.unique_name("then_neg") for _ in range(20)}
    assert not fresh & taken
    sub_fresh = {then_g.unique_name("then_neg") for _ in range(20)}
    assert not sub_fresh & (taken | fresh), "a subgraph draws from the same model-wide pool"


def test_unique_name_sees_subgraphs_attached_after_first_use() -> None:
    x = Value("x", ftype(2))
    g = Graph(inputs=[x])
    first = g.unique_name("t")  # builds the model-wide name table
    body = Graph(name="body")
    inner_in = Value("t_1", ftype(2))
    body.add_input(inner_in)
    inner = body.make_node("Neg", [inner_in], name="t_2")
    inner.output.name = "t_3"
    body.outputs = [inner.output]
    g.append(Node("lepton.Fused", [x], {"body": body}, name="fused"))
    later = {g.unique_name("t") for _ in range(5)}
    assert first not in later
    assert not later & {"t_1", "t_2", "t_3"}


def test_appended_nodes_get_fresh_names() -> None:
    g, x, *_ = chain()
    a = g.make_node("Abs", [x])
    b = g.make_node("Abs", [x])
    assert a.name and b.name and a.name != b.name
    assert a.output.name != b.output.name
    verify(g, check_types=False)


def test_add_constant_registers_a_typed_uniquely_named_value() -> None:
    g, *_ = chain()
    c1 = g.add_constant([[1, 2, 3]], name="w")
    c2 = g.add_constant(2.5, name="w")
    assert c1.name != c2.name
    assert g.initializers[c1.name] is c1 and c1.graph is g and c1.is_constant
    assert c1.type == TensorType(DType.INT64, (1, 3))
    assert c2.type == TensorType(DType.FLOAT64, ())
    assert g.find_value(c1.name) is c1
    with pytest.raises(VerificationError, match="no constant payload"):
        g.register_constant(Value("nothing"))


def test_remove_unused_constants_keeps_used_and_output_constants() -> None:
    g, x, _relu, *_ = chain()
    used = g.add_constant([1.0], name="used")
    g.make_node("Add", [x, used])
    out = g.add_constant([2.0], name="out")
    g.outputs.append(out)
    dead = g.add_constant([3.0], name="dead")
    assert g.remove_unused_constants() == 1
    assert set(g.initializers) == {used.name, out.name} and dead.graph is None


# -- queries -----------------------------------------------------------------------------------
def test_queries() -> None:
    g, x, relu, neg, add = chain()
    assert g.find_node("neg") is neg and g.find_node("nope") is None
    assert g.find_value("x") is x and g.find_value(add.output.name) is add.output
    assert g.op_counts() == {"Relu": 1, "Neg": 1, "Add": 1}
    assert len(g) == 3
    assert add.output.is_graph_output() and not relu.output.is_graph_output()
    assert g.opset("") == 18 and g.opset("lepton") is None


def test_subgraph_sees_root_opsets_and_parent() -> None:
    g, a, _, if_node = if_graph()
    then_g = if_node.attrs["then_branch"]
    assert then_g.parent is if_node and then_g.root is g
    assert then_g.opset("") == 18
    assert [n.name for n in g.walk()] == ["make_a", "if", "then_neg"]
    assert g.subgraphs_recursive() == [then_g, if_node.attrs["else_branch"]]
    assert if_node.outer_values() == [a]


def test_tensor_type_accessors_on_values() -> None:
    v = Value("v", TensorType(DType.INT8, ("n", 3)))
    assert v.shape == ("n", 3) and v.dtype is DType.INT8 and v.tensor_type.rank == 2
    unknown = Value("u")
    assert unknown.shape is None and unknown.dtype is None
    with pytest.raises(VerificationError, match="%u is not a tensor"):
        _ = unknown.tensor_type


def test_to_networkx_has_an_edge_for_a_capture_returned_by_a_subgraph() -> None:
    g, a, _, if_node = if_graph()
    then_g = if_node.attrs["then_branch"]
    then_g.nodes[0].set_input(0, g.inputs[0])  # now only the else branch's output reads %a
    nxg = g.to_networkx()
    assert nxg.has_edge(a.producer, if_node)
    data = next(iter(nxg.get_edge_data(a.producer, if_node).values()))
    assert data["value"] is a and data["index"] is None
