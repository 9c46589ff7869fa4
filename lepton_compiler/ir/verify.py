"""`verify(graph)`: check the IR's invariants, so a broken pass is caught where it broke things.

Checked: every node belongs to the graph it sits in; use links agree in both directions;
nodes are in topological order (captures of subgraphs included); every input is in scope;
value and node names are unique across the model; each output knows its producer; and, when
`check_types` is on, every stored type agrees with its op's inference.
"""

from __future__ import annotations

from ..errors import VerificationError
from .core import Graph, Node, Value
from .types import merge_types


def verify(graph: Graph, check_types: bool = True) -> None:
    """Raise `VerificationError` listing every broken invariant of `graph` (and subgraphs)."""
    problems: list[str] = []
    names: dict[str, str] = {}
    node_names: set[str] = set()
    _verify_graph(graph, set(), problems, names, node_names)
    if check_types and not problems:
        from ..ops.infer import check_node_types

        for node in graph.walk():
            problems.extend(check_node_types(node))
    if problems:
        head = f"IR verification of graph {graph.name!r} failed ({len(problems)} problem(s)):"
        raise VerificationError(head + "\n  - " + "\n  - ".join(problems[:30]))


def _claim(name: str, what: str, names: dict[str, str], problems: list[str]) -> None:
    if not name:
        problems.append(f"{what} has an empty name")
    elif name in names:
        problems.append(f"name {name!r} is used twice ({names[name]} and {what})")
    else:
        names[name] = what


def _verify_graph(
    graph: Graph,
    outer_scope: set[Value],
    problems: list[str],
    names: dict[str, str],
    node_names: set[str],
) -> None:
    scope = set(outer_scope)
    for v in graph.inputs:
        _claim(v.name, f"input of {graph.name}", names, problems)
        if v.producer is not None:
            problems.append(f"graph input %{v.name} has a producer {v.producer!r}")
        _check_uses(v, problems)
        scope.add(v)
    for key, c in graph.initializers.items():
        if c.name != key:
            problems.append(f"constant registered as {key!r} is named {c.name!r}")
        if c.const is None:
            problems.append(f"constant %{c.name} has no payload")
        if c not in scope:
            _claim(c.name, f"constant of {graph.name}", names, problems)
            _check_uses(c, problems)
        scope.add(c)
    for node in graph.nodes:
        _verify_node(node, graph, scope, problems, names, node_names)
        scope.update(node.outputs)
    for v in graph.outputs:
        if v not in scope:
            problems.append(f"graph output %{v.name} of {graph.name} is not defined in scope")


def _verify_node(
    node: Node,
    graph: Graph,
    scope: set[Value],
    problems: list[str],
    names: dict[str, str],
    node_names: set[str],
) -> None:
    if node.graph is not graph:
        problems.append(f"{node!r} sits in {graph.name} but says it belongs to {node.graph}")
    if node.name in node_names:
        problems.append(f"node name {node.name!r} is used twice")
    node_names.add(node.name)
    for i, v in enumerate(node.inputs):
        if v is None:
            continue
        if (node, i) not in v._uses:
            problems.append(f"{node!r} reads %{v.name} at input {i}, but the value lacks the use")
        if v not in scope:
            if v.producer is not None and v.producer.graph is None:
                where = f"by a removed node {v.producer!r}"
            elif v.producer is not None:
                where = "later in the graph"
            else:
                where = "nowhere in scope"
            problems.append(f"{node!r} reads %{v.name}, which is defined {where}")
    for i, out in enumerate(node.outputs):
        _claim(out.name, f"output of {node.name}", names, problems)
        if out.producer is not node or out.index != i:
            problems.append(f"output %{out.name} of {node!r} does not point back to it")
        _check_uses(out, problems)
    for sub in node.subgraphs():
        if sub.parent is not node:
            problems.append(f"subgraph {sub.name} of {node!r} does not point back to it")
        _verify_graph(sub, scope, problems, names, node_names)


def _check_uses(v: Value, problems: list[str]) -> None:
    """Every use a value lists must be a live node reading it at that slot."""
    for user, j in v.uses:
        if user.graph is None:
            problems.append(f"%{v.name} lists a removed node {user!r} as a user")
        elif j >= len(user.inputs) or user.inputs[j] is not v:
            problems.append(f"%{v.name} lists {user!r} input {j} as a use, which is wrong")


def types_conflict(stored: object, inferred: object) -> bool:
    """True when two types of one value cannot both be right."""
    return stored is not None and inferred is not None and merge_types(stored, inferred) is None  # type: ignore[arg-type]
