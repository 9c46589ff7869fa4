"""Shared builders and checks for the IR tests."""

from __future__ import annotations

from lepton_compiler.ir import DType, Graph, Node, TensorType, Value

F32 = DType.FLOAT32


def ftype(*shape: int | str | None) -> TensorType:
    """A float32 tensor type of the given shape."""
    return TensorType(F32, shape)


def chain() -> tuple[Graph, Value, Node, Node, Node]:
    """``y = Add(Relu(x), Neg(Relu(x)))`` with typed values; returns graph, x and the nodes."""
    x = Value("x", ftype("batch", 4))
    g = Graph(inputs=[x], name="main", opset_imports={"": 18})
    relu = g.make_node("Relu", [x], name="relu")
    neg = g.make_node("Neg", [relu.output], name="neg")
    add = g.make_node("Add", [relu.output, neg.output], name="add")
    for n in (relu, neg, add):
        n.output.type = ftype("batch", 4)
    g.outputs = [add.output]
    return g, x, relu, neg, add


def if_graph() -> tuple[Graph, Value, Value, Node]:
    """A graph whose If node captures outer values.

    ``then`` computes ``Neg(a)`` from the outer ``a``; ``else`` returns the outer ``a``
    itself (a capture as a subgraph output). Returns graph, a, cond and the If node.
    """
    x = Value("x", ftype(2))
    cond = Value("cond", TensorType(DType.BOOL, ()))
    g = Graph(inputs=[x, cond], name="main", opset_imports={"": 18})
    a_node = g.make_node("Relu", [x], name="make_a")
    a = a_node.output
    a.type = ftype(2)
    then_g = Graph(name="then")
    neg = then_g.make_node("Neg", [a], name="then_neg")
    neg.output.type = ftype(2)
    then_g.outputs = [neg.output]
    else_g = Graph(name="else", outputs=[a])
    if_node = g.make_node("If", [cond], {"then_branch": then_g, "else_branch": else_g}, name="if")
    if_node.output.type = ftype(2)
    g.outputs = [if_node.output]
    return g, a, cond, if_node


def all_values(graph: Graph) -> list[Value]:
    """Inputs, constants and node outputs of a graph and all its subgraphs."""
    out = list(graph.values())
    for sub in graph.subgraphs_recursive():
        out.extend(sub.values())
    return out


def assert_use_links(graph: Graph) -> None:
    """Check use-def links in both directions over the graph and its subgraphs."""
    for node in graph.walk():
        for i, v in enumerate(node.inputs):
            if v is not None:
                assert (node, i) in v.uses, f"{node!r} reads %{v.name} at {i}, use missing"
        for i, out in enumerate(node.outputs):
            assert out.producer is node and out.index == i
    seen: set[int] = set()
    for v in all_values(graph):
        seen.add(id(v))
        for user, j in v.uses:
            assert user.graph is not None, f"%{v.name} lists removed node {user!r}"
            assert user.inputs[j] is v, f"%{v.name} lists {user!r}[{j}], which reads another"
