"""The text form of the IR: exact output for small graphs, so changes to it are deliberate."""

from __future__ import annotations

import numpy as np

from lepton_compiler.ir import (
    DType,
    Graph,
    Node,
    OptionalType,
    SequenceType,
    TensorType,
    Value,
    format_graph,
    format_node,
)

from .helpers import if_graph


def small_graph() -> Graph:
    x = Value("x", TensorType(DType.FLOAT32, ("batch", 3, None)))
    g = Graph(inputs=[x], name="main", opset_imports={"": 18, "lepton": 1})
    w = g.add_constant(np.array([1.5, -2.0], np.float32), name="w")
    big = g.add_constant(np.zeros((4, 4), np.float32), name="big")
    mul = g.make_node("Mul", [x, w], name="mul")
    mul.output.type = TensorType(DType.FLOAT32, ("batch", 3, None))
    attrs = {"note": "hi", "alpha": 0.5, "axes": [0, 1], "t": np.array([1, 2], np.int64)}
    clip = g.make_node("Clip", [mul.output, None, big], attrs, name="clip")
    clip.meta["rule"] = "fold"
    g.outputs = [clip.output]
    return g


def test_small_graph_exact_text() -> None:
    expected = "\n".join([
        'graph main(%x: float32[batch,3,?]) -> (%clip_3: ?) opset{"":18,"lepton":1}',
        "  const %w_0: float32[2] = [1.5, -2.0]",
        "  const %big_1: float32[4,4]",
        "  %mul_2: float32[batch,3,?] = Mul(%x, %w_0)  # mul",
        "  %clip_3: ? = Clip(%mul_2, _, %big_1) {alpha=0.5, axes=[0,1], note='hi', "
        "t=tensor<int64>[1, 2]}  # clip [rule fold]",
        "  return %clip_3",
    ])  # fmt: skip
    g = small_graph()
    assert format_graph(g) == expected
    assert str(g) == expected


def test_subgraphs_are_nested_and_indented() -> None:
    g, *_ = if_graph()
    expected = "\n".join([
        'graph main(%x: float32[2], %cond: bool[]) -> (%if_1: float32[2]) opset{"":18}',
        "  %make_a_0: float32[2] = Relu(%x)  # make_a",
        "  %if_1: float32[2] = If(%cond) {else_branch={",
        "      graph else() -> (%make_a_0: float32[2])",
        "        return %make_a_0",
        "    }, then_branch={",
        "      graph then() -> (%then_neg_0: float32[2])",
        "        %then_neg_0: float32[2] = Neg(%make_a_0)  # then_neg",
        "        return %then_neg_0",
        "    }}  # if",
        "  return %if_1",
    ])  # fmt: skip
    assert format_graph(g) == expected


def test_symbolic_unknown_and_scalar_dims() -> None:
    v = Value("v", TensorType(DType.INT8, ("N", None, 7)))
    s = Value("s", TensorType(DType.BOOL, ()))
    u = Value("u", TensorType(DType.FLOAT16, None))
    laid = Value("l", TensorType(DType.FLOAT32, (1, 16, 8, 8), layout="NCHW16c"))
    g = Graph(inputs=[v, s, u, laid], name="dims")
    g.outputs = [v]
    header = format_graph(g).splitlines()[0]
    assert header == (
        "graph dims(%v: int8[N,?,7], %s: bool[], %u: float16?, %l: float32[1,16,8,8]@NCHW16c)"
        " -> (%v: int8[N,?,7])"
    )


def test_sequence_and_optional_types() -> None:
    seq = Value("seq", SequenceType(TensorType(DType.FLOAT32, ("n",))))
    opt = Value("opt", OptionalType(None))
    node = Node("SequenceLength", [seq], outputs=[Value("len", TensorType(DType.INT64, ()))],
                name="seq_len")  # fmt: skip
    assert format_node(node) == "  %len: int64[] = SequenceLength(%seq)  # seq_len"
    g = Graph(inputs=[seq, opt], name="g")
    assert format_graph(g).splitlines()[0] == ("graph g(%seq: seq<float32[n]>, %opt: opt<?>) -> ()")


def test_large_constant_attribute_prints_shape_only() -> None:
    node = Node("Foo", [], {"value": np.zeros((3, 5), np.float32), "f": 1.0},
                outputs=[Value("y")], name="n")  # fmt: skip
    assert format_node(node, indent="") == (
        "%y: ? = Foo() {f=1.0, value=tensor<float32[3, 5]>}  # n"
    )
