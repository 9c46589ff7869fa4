"""Pass manager contracts: registration, return checks, composition, fixed-point caps."""

from __future__ import annotations

import pytest

from lepton_compiler.errors import PassError
from lepton_compiler.ir import DType, Graph, TensorType, Value
from lepton_compiler.pass_manager import (
    FixedPoint,
    Pass,
    PassContext,
    PassManager,
    PassResult,
    Sequential,
    function_pass,
    get_pass,
    register_pass,
)


def _graph() -> Graph:
    x = Value("x", TensorType(DType.FLOAT32, (2,)))
    g = Graph([x], opset_imports={"": 18})
    n = g.make_node("Relu", [x])
    g.outputs = [n.output]
    return g


class _Counter(Pass):
    """Reports a change the first `limit` times it runs."""

    name = "counter_for_test"

    def __init__(self, limit: int) -> None:
        self.limit, self.runs = limit, 0

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        self.runs += 1
        return PassResult(graph, self.runs <= self.limit)


def test_fixed_point_repeats_until_stable_and_respects_the_cap() -> None:
    c = _Counter(limit=3)
    assert FixedPoint([c], max_iterations=10).run(_graph(), PassContext()).modified
    assert c.runs == 4  # three changing rounds, one quiet round
    capped = _Counter(limit=100)
    FixedPoint([capped], max_iterations=5).run(_graph(), PassContext())
    assert capped.runs == 5


def test_sequential_reports_any_change() -> None:
    a, b = _Counter(limit=0), _Counter(limit=1)
    assert Sequential([a, b]).run(_graph(), PassContext()).modified
    assert a.runs == b.runs == 1


def test_a_pass_must_return_a_pass_result_for_the_same_graph() -> None:
    class Wrong(Pass):
        """Returns a bool."""

        name = "wrong_for_test"

        def run(self, graph, ctx):  # type: ignore[no-untyped-def]
            return True

    class Other(Pass):
        """Returns another graph."""

        name = "other_for_test"

        def run(self, graph, ctx):  # type: ignore[no-untyped-def]
            return PassResult(_graph(), False)

    with pytest.raises(PassError, match="must return PassResult"):
        PassManager([Wrong()]).run(_graph())
    with pytest.raises(PassError, match="edit the graph in place"):
        PassManager([Other()]).run(_graph())


def test_registration_rejects_duplicates_and_unnamed_passes() -> None:
    class Unnamed(Pass):
        """No name."""

    with pytest.raises(PassError, match="must set a class attribute `name`"):
        register_pass(Unnamed)

    class Dup(Pass):
        """Clashes with a built-in pass."""

        name = "dead_code_elimination"

    get_pass("dead_code_elimination")
    with pytest.raises(PassError, match="two passes are named 'dead_code_elimination'"):
        register_pass(Dup)


def test_function_pass_decorator() -> None:
    @function_pass("rename_graph_for_test")
    def rename(graph: Graph, ctx: PassContext) -> bool:
        """Renames the graph."""
        graph.name = "renamed"
        return True

    g = _graph()
    assert PassManager(["rename_graph_for_test"]).run(g).modified and g.name == "renamed"
    assert get_pass("rename_graph_for_test").description() == "Renames the graph."
