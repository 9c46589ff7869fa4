"""Pattern rewriting: local rewrites written as a pattern of op calls, a check and a rewrite.

A rule reads like the subgraph it replaces::

    x, c = Var("x"), Const("c", lambda a: a.size == 1)
    rule = Rule(
        "sub_const_to_add",
        pattern=Op("Sub", x, c, name="sub"),
        check=lambda m: None if m["c"].dtype.is_float else "integer Sub stays",
        rewrite=lambda m, b: [b.op("Add", m["x"], b.const(-m["c"].const))],
    )

The driver (`apply_rules`) owns every mutation: it matches, refuses matches whose inner values
escape (are read outside the match or are graph outputs), asks the rule's `check` (which returns
a reason when it refuses), builds the replacement through a `Builder` that tags new nodes with
the rule name, rewires uses, deletes what became dead, and repeats up to an iteration cap.
Commutative ops (per the op registry) are matched with their first two inputs in either order.
With tracing on, it records for each rule that never fired the best partial match and why it
failed, which is what ``--trace-rules`` prints.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .ir import Graph, Node, Value, tensor_type_of
from .ops import lookup
from .ops.infer import refresh_types
from .pass_manager import Pass, PassContext, PassResult

# -- patterns ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Var:
    """Matches any value (the same Var name must bind the same value everywhere)."""

    name: str
    pred: Callable[[Value], bool] | None = None

    def describe(self) -> str:
        return f"${self.name}"


@dataclass(frozen=True)
class Const:
    """Matches a value with a constant payload, optionally satisfying `pred(array)`."""

    name: str
    pred: Callable[[np.ndarray], bool] | None = None

    def describe(self) -> str:
        return f"const ${self.name}"


@dataclass(frozen=True)
class Op:
    """Matches a value produced by a node of op `op` whose inputs match `inputs`.

    Args:
        op: qualified op name (``"Conv"``, ``"lepton.Fused"``).
        inputs: sub-patterns per input position; trailing optional inputs may be left out,
            ``None`` matches an omitted input.
        name: capture name of the matched node (``match.nodes[name]``).
        attrs: required attribute values (equality).
        where: extra predicate on the node.
        output: which output of the node the value must be.
    """

    op: str
    inputs: tuple[Any, ...] = ()
    name: str = ""
    attrs: Mapping[str, Any] = field(default_factory=dict)
    where: Callable[[Node], bool] | None = None
    output: int = 0
    exact_arity: bool = True

    def __init__(
        self,
        op: str,
        *inputs: Any,
        name: str = "",
        attrs: Mapping[str, Any] | None = None,
        where: Callable[[Node], bool] | None = None,
        output: int = 0,
        exact_arity: bool = True,
    ) -> None:
        object.__setattr__(self, "op", op)
        object.__setattr__(self, "inputs", tuple(inputs))
        object.__setattr__(self, "name", name or op.lower())
        object.__setattr__(self, "attrs", dict(attrs or {}))
        object.__setattr__(self, "where", where)
        object.__setattr__(self, "output", output)
        object.__setattr__(self, "exact_arity", exact_arity)

    def describe(self) -> str:
        return f"{self.op}({', '.join(_describe(i) for i in self.inputs)})"

    def size(self) -> int:
        """Number of op nodes in the pattern."""
        return 1 + sum(i.size() for i in self.inputs if isinstance(i, Op))


Pattern = Op | Var | Const | None


def _describe(p: Pattern) -> str:
    return "_" if p is None else p.describe()


# -- matches ----------------------------------------------------------------------------------


@dataclass
class Match:
    """A successful match: captured values by Var/Const name and nodes by Op capture name."""

    root: Node
    values: dict[str, Value] = field(default_factory=dict)
    nodes: dict[str, Node] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Value:
        return self.values[name]

    def node(self, name: str) -> Node:
        """A matched node by capture name."""
        return self.nodes[name]

    def const(self, name: str) -> np.ndarray:
        """The payload of a captured constant."""
        c = self.values[name].const
        assert c is not None
        return np.asarray(c)


class _Fail(Exception):
    def __init__(self, reason: str, depth: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.depth = depth


def _match_value(p: Pattern, v: Value | None, m: Match, depth: int) -> int:
    """Bind `v` to pattern `p`; returns the number of op nodes matched. Raises _Fail."""
    if p is None:
        if v is not None:
            raise _Fail(f"expected an omitted input, found %{v.name}", depth)
        return 0
    if v is None:
        raise _Fail(f"expected {_describe(p)}, found an omitted input", depth)
    if isinstance(p, Var):
        bound = m.values.get(p.name)
        if bound is not None and bound is not v:
            raise _Fail(f"${p.name} is bound to %{bound.name} but here is %{v.name}", depth)
        if p.pred is not None and not p.pred(v):
            raise _Fail(f"%{v.name} does not satisfy the condition on ${p.name}", depth)
        m.values[p.name] = v
        return 0
    if isinstance(p, Const):
        if v.const is None:
            src = v.producer.op if v.producer is not None else "a graph input"
            raise _Fail(f"${p.name} must be a constant, but %{v.name} comes from {src}", depth)
        bound = m.values.get(p.name)
        if bound is not None and bound is not v:
            raise _Fail(f"const ${p.name} bound twice to different values", depth)
        if p.pred is not None and not p.pred(np.asarray(v.const)):
            raise _Fail(f"constant %{v.name} does not satisfy the condition on ${p.name}", depth)
        m.values[p.name] = v
        return 0
    node = v.producer
    if node is None:
        what = "a constant" if v.const is not None else "a graph input"
        raise _Fail(f"expected {p.op} producing %{v.name}, but it is {what}", depth)
    return _match_node(p, node, v.index, m, depth)


def _match_node(p: Op, node: Node, out_index: int, m: Match, depth: int) -> int:
    if node.op != p.op:
        raise _Fail(f"expected {p.op}, found {node.op} ({node.name})", depth)
    if out_index != p.output:
        raise _Fail(f"expected output {p.output} of {node.name}, found output {out_index}", depth)
    if p.exact_arity and len(node.inputs) != len(p.inputs):
        raise _Fail(
            f"{node.name} has {len(node.inputs)} inputs, the pattern has {len(p.inputs)}", depth
        )
    if len(node.inputs) < len(p.inputs):
        raise _Fail(f"{node.name} has only {len(node.inputs)} inputs", depth)
    for k, want in p.attrs.items():
        have = node.attrs.get(k)
        if not _attr_equal(have, want):
            raise _Fail(f"{node.name}: attribute {k}={have!r}, the pattern wants {want!r}", depth)
    if p.where is not None and not p.where(node):
        raise _Fail(f"{node.name} does not satisfy the pattern's condition", depth)
    prev = m.nodes.get(p.name)
    if prev is not None and prev is not node:
        raise _Fail(f"capture {p.name!r} bound to two nodes", depth)
    m.nodes[p.name] = node
    orders = [list(range(len(p.inputs)))]
    opdef = lookup(node.domain, node.op_type)
    if opdef is not None and opdef.commutative and len(p.inputs) >= 2:
        orders.append([1, 0, *range(2, len(p.inputs))])
    last: _Fail | None = None
    for order in orders:
        trial = Match(m.root, dict(m.values), dict(m.nodes))
        try:
            count = 1
            for pi, ni in enumerate(order):
                count += _match_value(p.inputs[pi], node.inputs[ni], trial, depth + count)
        except _Fail as f:
            if last is None or f.depth > last.depth:
                last = f
            continue
        m.values, m.nodes = trial.values, trial.nodes
        return count
    assert last is not None
    raise last


def _attr_equal(have: Any, want: Any) -> bool:
    """Attribute equality; floats compare at float32 precision (ONNX stores them as float32)."""
    if isinstance(want, float) and isinstance(have, (int, float)):
        return bool(np.isclose(float(have), want, rtol=1e-6, atol=0.0))
    return bool(have == want)


def match(pattern: Op, node: Node) -> Match | str:
    """Match `pattern` rooted at `node`; a `Match`, or the reason it fails."""
    m = Match(node)
    try:
        _match_node(pattern, node, 0, m, 0)
    except _Fail as f:
        return f.reason
    return m


# -- rules and the builder ----------------------------------------------------------------------


class Builder:
    """Creates the replacement nodes of a rewrite, before the matched root, tagged by rule."""

    def __init__(self, graph: Graph, anchor: Node, rule: str) -> None:
        self.graph, self.anchor, self.rule = graph, anchor, rule
        self.created: list[Node] = []

    def op(self, op: str, *inputs: Value | None, num_outputs: int = 1, **attrs: Any) -> Value:
        """Add a node; returns its (first) output. Output types come from the op's inference."""
        node = self.graph.make_node(op, list(inputs), attrs, num_outputs, before=self.anchor)
        node.meta["rule"] = self.rule
        refresh_types(node)
        self.created.append(node)
        return node.outputs[0]

    def const(self, array: Any, name: str = "const") -> Value:
        """A new constant of the graph."""
        arr = np.asarray(array)
        v = self.graph.add_constant(arr, name)
        v.type = tensor_type_of(arr)
        return v


@dataclass
class Rule:
    """A local rewrite.

    Attributes:
        name: tags created nodes (``node.meta["rule"]``) and names the rule in traces.
        pattern: what to find; its root is the node whose outputs get replaced.
        rewrite: ``rewrite(match, builder) -> replacement values for the root's outputs``,
            or None to decline.
        check: ``check(match) -> reason`` to refuse a match (None accepts).
        allow_escapes: capture names of inner nodes whose outputs may be read outside
            the match (they are then kept).
    """

    name: str
    pattern: Op
    rewrite: Callable[[Match, Builder], Sequence[Value] | None]
    check: Callable[[Match], str | None] | None = None
    allow_escapes: frozenset[str] = frozenset()


@dataclass
class RuleTrace:
    """Why a rule did or did not fire during one pass run."""

    rule: str
    fired: int = 0
    best_size: int = -1
    best_reason: str = "no node of the root op"
    best_at: str = ""

    def note(self, size: int, reason: str, at: str) -> None:
        if size > self.best_size:
            self.best_size, self.best_reason, self.best_at = size, reason, at

    def __str__(self) -> str:
        if self.fired:
            return f"rule {self.rule}: fired {self.fired} time(s)"
        where = f" at {self.best_at}" if self.best_at else ""
        return f"rule {self.rule}: did not fire; best partial match{where}: {self.best_reason}"


def _escapes(m: Match, rule: Rule) -> str | None:
    matched = set(m.nodes.values())
    for cap, node in m.nodes.items():
        if node is m.root or cap in rule.allow_escapes:
            continue
        for out in node.outputs:
            if out.is_graph_output():
                return f"%{out.name} (inside the match) is a graph output"
            for user, _ in out.uses:
                if user not in matched:
                    return f"%{out.name} (inside the match) is also read by {user.op} {user.name}"
    return None


def _try_rule(rule: Rule, node: Node, trace: RuleTrace | None) -> bool:
    graph = node.graph
    assert graph is not None
    m = Match(node)
    try:
        _match_node(rule.pattern, node, 0, m, 0)
    except _Fail as f:
        if trace is not None:
            trace.note(f.depth, f.reason, node.name)
        return False
    size = rule.pattern.size()
    reason = _escapes(m, rule) or (rule.check(m) if rule.check is not None else None)
    if reason is not None:
        if trace is not None:
            trace.note(size, reason, node.name)
        return False
    builder = Builder(graph, node, rule.name)
    replacement = rule.rewrite(m, builder)
    if replacement is None:
        graph.remove([n for n in reversed(builder.created)], safe=False)
        if trace is not None:
            trace.note(size, "the rewrite declined", node.name)
        return False
    if len(replacement) != len(node.outputs):
        raise ValueError(
            f"rule {rule.name} returned {len(replacement)} values for {len(node.outputs)} outputs"
        )
    for old, new in zip(node.outputs, replacement, strict=True):
        if new is old:
            continue
        graph.replace_value(old, new)
        if new.type is None:
            new.type = old.type
    dead = [n for n in m.nodes.values() if n.graph is graph]
    _remove_dead(graph, dead)
    _keep_name(node, replacement, builder.created)
    if trace is not None:
        trace.fired += 1
    return True


def _keep_name(root: Node, replacement: Sequence[Value], created: list[Node]) -> None:
    """A rewrite that replaces a named node by one new node hands the name over, so users
    still find their layers by the names of their model (``exclude``, reports)."""
    if root.graph is not None or not root.name or len(replacement) != 1:
        return
    producer = replacement[0].producer
    if producer is not None and producer in created:
        producer.name = root.name


def _remove_dead(graph: Graph, candidates: Iterable[Node]) -> None:
    pending = list(candidates)
    changed = True
    while changed:
        changed = False
        for n in list(pending):
            if n.graph is graph and not any(o.uses or o.is_graph_output() for o in n.outputs):
                graph.remove(n)
                pending.remove(n)
                changed = True


def apply_rules(
    graph: Graph,
    rules: Sequence[Rule],
    max_iterations: int = 10,
    traces: dict[str, RuleTrace] | None = None,
) -> int:
    """Apply `rules` over `graph` (and its subgraphs) until none fires; returns rewrite count."""
    by_root: dict[str, list[Rule]] = {}
    for r in rules:
        by_root.setdefault(r.pattern.op, []).append(r)
    total = 0
    for _ in range(max_iterations):
        fired = 0
        for g in [graph, *graph.subgraphs_recursive()]:
            for node in g:
                for rule in by_root.get(node.op, ()):
                    if node.graph is None:
                        break
                    trace = None if traces is None else traces.setdefault(
                        rule.name, RuleTrace(rule.name)
                    )
                    if _try_rule(rule, node, trace):
                        fired += 1
                        break
        total += fired
        if not fired:
            break
    if traces is not None:
        for r in rules:
            traces.setdefault(r.name, RuleTrace(r.name))
    if total:
        graph.remove_unused_constants()
    return total


class RewritePass(Pass):
    """A pass made of pattern rules; subclasses set `name` and `rules()`."""

    max_iterations = 10

    def rules(self) -> list[Rule]:
        """The rules this pass applies."""
        return []

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        traces: dict[str, RuleTrace] | None = {} if ctx.trace_rules else None
        count = apply_rules(graph, self.rules(), self.max_iterations, traces)
        if traces is not None:
            ctx.traces.extend(f"[{self.name}] {t}" for t in traces.values())
        return PassResult(graph, count > 0)


def commuted(rule: Rule) -> list[Rule]:
    """The rule plus a variant with the root's first two inputs swapped (for rules whose root
    is not commutative in the registry but should match both orders)."""
    p = rule.pattern
    if len(p.inputs) < 2:
        return [rule]
    swapped = Op(p.op, p.inputs[1], p.inputs[0], *p.inputs[2:], name=p.name, attrs=p.attrs,
                 where=p.where, output=p.output, exact_arity=p.exact_arity)
    return [rule, Rule(rule.name + "_commuted", swapped, rule.rewrite, rule.check,
                       rule.allow_escapes)]
