"""The O1 pipeline: random valid graphs keep their outputs and verify clean (hypothesis), and
pipeline plumbing (disabled passes, instruments, errors naming the pass)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lepton_compiler.errors import PassError
from lepton_compiler.interpreter import run_graph
from lepton_compiler.ir import DType, Graph, TensorType, Value, verify
from lepton_compiler.pass_manager import (
    DumpIR,
    Pass,
    PassContext,
    PassManager,
    PassResult,
    PassTiming,
    get_pass,
    list_passes,
)
from lepton_compiler.pipeline import CLEANUP, run_pipeline

SHAPE = (2, 3)
UNARY = ["Relu", "Neg", "Abs", "Sigmoid", "Tanh", "Identity", "Dropout", "Softsign", "Floor",
         "Ceil", "Sin", "Cos", "Erf", "HardSigmoid", "LeakyRelu", "Elu", "Softplus"]
BINARY = ["Add", "Mul", "Sub", "Max", "Min"]
CONST_OPS = ["add_zero", "mul_one", "mul_const", "sub_const", "div_pow2", "div_const",
             "transpose_pair", "reshape_same", "cast_same", "const_chain", "shape_gather"]


@st.composite
def graphs(draw: st.DrawFn) -> Graph:
    """A random valid graph of up to 14 steps over [2,3] float tensors."""
    x = Value("x", TensorType(DType.FLOAT32, SHAPE))
    y = Value("y", TensorType(DType.FLOAT32, SHAPE))
    g = Graph([x, y], opset_imports={"": 18})
    pool = [x, y]
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))

    def const(value: float | np.ndarray, shape: tuple = ()) -> Value:
        return g.add_constant(np.full(shape, value, np.float32) if np.isscalar(value) else value)

    for _ in range(draw(st.integers(1, 14))):
        kind = draw(st.sampled_from(["unary", "binary", "const"]))
        a = draw(st.sampled_from(pool))
        if kind == "unary":
            node = g.make_node(draw(st.sampled_from(UNARY)), [a])
        elif kind == "binary":
            node = g.make_node(draw(st.sampled_from(BINARY)), [a, draw(st.sampled_from(pool))])
        else:
            which = draw(st.sampled_from(CONST_OPS))
            if which == "add_zero":
                node = g.make_node("Add", [a, const(0.0, (3,))])
            elif which == "mul_one":
                node = g.make_node("Mul", [const(1.0), a])
            elif which == "mul_const":
                node = g.make_node("Mul", [a, const(float(rng.uniform(-2, 2)), (3,))])
            elif which == "sub_const":
                node = g.make_node("Sub", [a, const(float(rng.uniform(-2, 2)))])
            elif which == "div_pow2":
                node = g.make_node("Div", [a, const(4.0)])
            elif which == "div_const":
                node = g.make_node("Div", [a, const(3.0)])
            elif which == "transpose_pair":
                t = g.make_node("Transpose", [a], {"perm": [1, 0]})
                node = g.make_node("Transpose", [t.output], {"perm": [1, 0]})
            elif which == "reshape_same":
                node = g.make_node("Reshape", [a, g.add_constant(np.array(SHAPE, np.int64))])
            elif which == "cast_same":
                node = g.make_node("Cast", [a], {"to": DType.FLOAT32.onnx_code})
            elif which == "const_chain":
                c = g.make_node("Mul", [const(2.0, (3,)), const(1.5, (3,))])
                e = g.make_node("Sqrt", [c.output])
                node = g.make_node("Add", [a, e.output])
            else:
                s = g.make_node("Shape", [a])
                i = g.make_node("Gather", [s.output, g.add_constant(np.array(1, np.int64))])
                f = g.make_node("Cast", [i.output], {"to": DType.FLOAT32.onnx_code})
                node = g.make_node("Mul", [a, f.output])
        from lepton_compiler.ops.infer import refresh_types

        for n in g:
            if any(o.type is None for o in n.outputs):
                refresh_types(n)
        pool.append(node.output)
    outs = draw(st.lists(st.sampled_from(pool[2:]), min_size=1, max_size=3, unique_by=id))
    g.outputs = list(outs)
    return g


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graphs())
def test_o1_preserves_outputs_and_verifies(graph: Graph) -> None:
    verify(graph)
    rng = np.random.default_rng(0)
    feeds = {v.name: rng.standard_normal(SHAPE).astype(np.float32) for v in graph.inputs}
    before = [np.array(o) for o in run_graph(graph, feeds).values()]
    n_before = len(graph)
    run_pipeline(graph, PassContext(opt_level=1, verify_each=True))
    verify(graph)
    after = list(run_graph(graph, feeds).values())
    assert len(graph) <= n_before
    for a, b in zip(before, after, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)


def _tiny() -> Graph:
    x = Value("x", TensorType(DType.FLOAT32, SHAPE))
    g = Graph([x], opset_imports={"": 18})
    a = g.make_node("Identity", [x])
    b = g.make_node("Relu", [a.output])
    g.outputs = [b.output]
    return g


def test_disabled_pass_does_not_run() -> None:
    g = _tiny()
    ctx = PassContext(opt_level=1, disabled={"identity_elimination"})
    run_pipeline(g, ctx)
    assert [n.op for n in g] == ["Identity", "Relu"]
    run_pipeline(g, PassContext(opt_level=1))
    assert [n.op for n in g] == ["Relu"]


def test_o0_runs_nothing() -> None:
    g = _tiny()
    assert not run_pipeline(g, PassContext(opt_level=0)).modified


def test_timing_and_ir_dumps(tmp_path) -> None:
    g = _tiny()
    timing = PassTiming()
    ctx = PassContext(opt_level=1, instruments=[timing, DumpIR(tmp_path / "ir")])
    run_pipeline(g, ctx)
    names = {r[0] for r in timing.records}
    assert "identity_elimination" in names and "identity_elimination" in timing.summary()
    dumps = sorted(p.name for p in (tmp_path / "ir").iterdir())
    assert dumps[0] == "001_input.txt" and any("identity_elimination" in d for d in dumps)
    assert "Relu" in (tmp_path / "ir" / dumps[-1]).read_text()


def test_registry_lists_every_cleanup_pass_with_a_description() -> None:
    names = {p.name for p in list_passes()}
    assert set(CLEANUP.passes) <= names
    assert all(p.description() for p in list_passes())
    with pytest.raises(PassError, match=r"unknown pass 'nope'.*dead_code_elimination"):
        get_pass("nope")


class _Broken(Pass):
    """Breaks use links on purpose."""

    name = "broken_for_test"

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        node = graph.nodes[-1]
        node._inputs[0] = Value("ghost", TensorType(DType.FLOAT32, SHAPE))
        return PassResult(graph, True)


class _Raises(Pass):
    """Raises inside."""

    name = "raises_for_test"

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        raise ValueError("boom")


def test_pass_errors_name_the_pass_and_history() -> None:
    ctx = PassContext(verify_each=True)
    with pytest.raises(PassError, match=r"'broken_for_test' left the IR broken(.|\n)*ghost"):
        PassManager([get_pass("identity_elimination")(), _Broken()]).run(_tiny(), ctx)
    ctx = PassContext()
    with pytest.raises(PassError, match=r"'raises_for_test' failed: ValueError: boom"
                                        r"(.|\n)*passes before it: dead_code_elimination"):
        PassManager([get_pass("dead_code_elimination")(), _Raises()]).run(_tiny(), ctx)
