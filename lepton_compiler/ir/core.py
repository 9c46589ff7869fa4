"""The graph IR: `Value`, `Node` and `Graph` with use-def links kept right by their methods.

Rules that passes rely on:
- A `Value` is produced by at most one node (its `producer`) or is a graph input or a constant;
  it knows every `(node, input_index)` that uses it. Values compare by identity.
- A node's inputs change only through `Node.set_input` / `Node.replace_input_with` /
  `Graph.replace_all_uses`, which keep the use lists of both the old and new value right.
- Iterating a graph (`for node in graph`) walks a snapshot, skipping nodes removed meanwhile;
  nodes inserted during the walk are not visited by it. So passes may edit while iterating.
- Nodes inside a subgraph (the body of If/Loop/Scan or of a fused group) may use values of an
  enclosing graph directly; those uses are recorded on the outer value like any other.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import VerificationError
from .types import QuantParams, TensorType, ValueType, tensor_type_of

if TYPE_CHECKING:
    import networkx as nx

_node_ids = itertools.count()


class Value:
    """A tensor (or sequence/optional) flowing along one edge of the graph.

    Attributes:
        name: unique name within the model.
        type: its type, or None when unknown.
        const: the payload when this value is a constant (initializer), else None.
        quant: quantization parameters attached by quantization passes.
        doc: free-form documentation carried over from the model.
    """

    __slots__ = ("__weakref__", "_name", "_producer", "_uses", "const", "doc", "graph", "index",
                 "quant", "type")  # fmt: skip

    def __init__(
        self,
        name: str,
        type: ValueType | None = None,
        const: np.ndarray | None = None,
        quant: QuantParams | None = None,
    ) -> None:
        self._name = name
        if const is not None and type is None and isinstance(const, np.ndarray):
            type = tensor_type_of(const)
        self.type = type
        self.const = const
        self.quant = quant
        self.doc = ""
        self._producer: Node | None = None
        self.index = 0
        #: graph owning this value when it is a graph input or a constant of that graph.
        self.graph: Graph | None = None
        self._uses: dict[tuple[Node, int], None] = {}

    @property
    def name(self) -> str:
        """Unique name within the model; renaming keeps `Graph.unique_name` collision-free."""
        return self._name

    @name.setter
    def name(self, name: str) -> None:
        old, self._name = getattr(self, "_name", None), name
        g = self._owning_graph()
        if g is not None:
            g._note_names(name)
            if old is not None and g.initializers.get(old) is self:  # keep the index by name
                del g.initializers[old]
                g.initializers[name] = self

    @property
    def producer(self) -> Node | None:
        """The node that computes this value, or None for inputs and constants."""
        return self._producer

    @property
    def uses(self) -> list[tuple[Node, int]]:
        """Every `(node, input_index)` that reads this value, in insertion order."""
        return list(self._uses)

    @property
    def users(self) -> list[Node]:
        """The distinct nodes that read this value."""
        return list(dict.fromkeys(n for n, _ in self._uses))

    @property
    def is_constant(self) -> bool:
        """True when the value carries a constant payload."""
        return self.const is not None

    @property
    def tensor_type(self) -> TensorType:
        """The type as a `TensorType`; raises when it is something else or unknown."""
        if not isinstance(self.type, TensorType):
            raise VerificationError(f"value %{self.name} is not a tensor (type {self.type})")
        return self.type

    @property
    def shape(self) -> tuple | None:
        """Shortcut for the tensor shape, or None when unknown or not a tensor."""
        return self.type.shape if isinstance(self.type, TensorType) else None

    @property
    def dtype(self) -> Any:
        """Shortcut for the tensor element type, or None when not a tensor."""
        return self.type.dtype if isinstance(self.type, TensorType) else None

    def is_graph_output(self) -> bool:
        """True when some graph lists this value among its outputs."""
        g = self._owning_graph()
        return g is not None and any(o is self for o in g.outputs)

    def _owning_graph(self) -> Graph | None:
        if self._producer is not None:
            return self._producer.graph
        return self.graph

    def _add_use(self, node: Node, index: int) -> None:
        self._uses[(node, index)] = None

    def _remove_use(self, node: Node, index: int) -> None:
        self._uses.pop((node, index), None)

    def __repr__(self) -> str:
        return f"%{self.name}: {self.type}"


class Node:
    """One operation: op name, inputs, owned outputs, frozen attributes, optional subgraphs.

    Attributes:
        domain: operator domain, "" for the standard ONNX domain, "lepton" for our own ops.
        op_type: operator name within its domain, e.g. "Conv" or "Fused".
        name: node name, unique within the model.
        meta: free side table for passes (e.g. ``meta["rule"]`` tags the rule that created it).
    """

    def __init__(
        self,
        op: str,
        inputs: Sequence[Value | None] = (),
        attrs: Mapping[str, Any] | None = None,
        outputs: Sequence[Value] | int = 1,
        name: str = "",
        domain: str | None = None,
    ) -> None:
        if domain is None:
            domain, _, op_type = op.rpartition(".")
        else:
            op_type = op
        self.domain = domain
        self.op_type = op_type
        self._name = name
        self.id = next(_node_ids)
        self.graph: Graph | None = None
        self.meta: dict[str, Any] = {}
        self._attrs: Mapping[str, Any] = MappingProxyType(dict(attrs or {}))
        self._inputs: list[Value | None] = []
        for v in inputs:
            self._inputs.append(v)
            if v is not None:
                v._add_use(self, len(self._inputs) - 1)
        if isinstance(outputs, int):
            outputs = [Value("") for _ in range(outputs)]
        self._outputs: tuple[Value, ...] = tuple(outputs)
        for i, out in enumerate(self._outputs):
            if out._producer is not None:
                raise VerificationError(f"value %{out.name} already has a producer")
            out._producer = self
            out.index = i
        for sub in self.subgraphs():
            sub.parent = self

    # -- identity & display ---------------------------------------------------------------
    @property
    def name(self) -> str:
        """Node name, unique within the model; renaming keeps `Graph.unique_name` right."""
        return self._name

    @name.setter
    def name(self, name: str) -> None:
        self._name = name
        if self.graph is not None:
            self.graph._note_names(name)

    @property
    def op(self) -> str:
        """Qualified op name: ``"Conv"`` in the ONNX domain, ``"lepton.Fused"`` elsewhere."""
        return f"{self.domain}.{self.op_type}" if self.domain else self.op_type

    def __hash__(self) -> int:
        return self.id

    def __eq__(self, other: object) -> bool:
        return self is other

    def __repr__(self) -> str:
        ins = ", ".join("_" if v is None else f"%{v.name}" for v in self._inputs)
        outs = ", ".join(f"%{v.name}" for v in self._outputs)
        return f"<{outs} = {self.op}({ins}) name={self.name!r}>"

    # -- inputs ----------------------------------------------------------------------------
    @property
    def inputs(self) -> tuple[Value | None, ...]:
        """Input values in ONNX order; None marks an omitted optional input."""
        return tuple(self._inputs)

    def set_input(self, index: int, value: Value | None) -> None:
        """Replace input `index`, keeping use lists of the old and new value right."""
        old = self._inputs[index]
        if old is value:
            return
        if old is not None:
            old._remove_use(self, index)
        self._inputs[index] = value
        if value is not None:
            value._add_use(self, index)

    def set_inputs(self, values: Sequence[Value | None]) -> None:
        """Replace the whole input list (its length may change)."""
        for i, old in enumerate(self._inputs):
            if old is not None:
                old._remove_use(self, i)
        self._inputs = list(values)
        for i, v in enumerate(self._inputs):
            if v is not None:
                v._add_use(self, i)

    def replace_input_with(self, old: Value, new: Value | None) -> None:
        """Replace every use of `old` among this node's inputs by `new`."""
        for i, v in enumerate(self._inputs):
            if v is old:
                self.set_input(i, new)

    # -- outputs & attributes ----------------------------------------------------------------
    @property
    def outputs(self) -> tuple[Value, ...]:
        """Output values, owned by this node."""
        return self._outputs

    @property
    def output(self) -> Value:
        """The single output; raises for multi-output nodes."""
        if len(self._outputs) != 1:
            raise VerificationError(f"{self!r} has {len(self._outputs)} outputs, not one")
        return self._outputs[0]

    @property
    def attrs(self) -> Mapping[str, Any]:
        """Attributes (read-only). Use `with_attrs` to change them."""
        return self._attrs

    def attr(self, name: str, default: Any = None) -> Any:
        """One attribute, or `default` when absent."""
        return self._attrs.get(name, default)

    def with_attrs(self, **changes: Any) -> None:
        """Replace attributes (a value of None removes one). Subgraph parents are updated."""
        merged = dict(self._attrs)
        for k, v in changes.items():
            if v is None:
                merged.pop(k, None)
            else:
                merged[k] = v
        self._attrs = MappingProxyType(merged)
        for sub in self.subgraphs():
            sub.parent = self
            if self.graph is not None and "_names" in self.graph.root.meta:
                self.graph._note_names(*sub._collect_names())

    def subgraphs(self) -> list[Graph]:
        """Graphs held in attributes (If branches, Loop/Scan bodies, fused-group bodies)."""
        subs: list[Graph] = []
        for v in self._attrs.values():
            if isinstance(v, Graph):
                subs.append(v)
            elif isinstance(v, (list, tuple)) and v and isinstance(v[0], Graph):
                subs.extend(v)
        return subs

    def outer_values(self) -> list[Value]:
        """Values of enclosing graphs that this node's subgraphs read (captures)."""
        found: dict[Value, None] = {}
        for sub in self.subgraphs():
            local: set[Value] = set(sub.inputs) | set(sub.initializers.values())
            for n in sub.walk():
                local.update(n.outputs)
                if n.graph is not sub:
                    local.update(n.graph.inputs if n.graph else ())
                    local.update(n.graph.initializers.values() if n.graph else ())
            for n in sub.walk():
                for v in n.inputs:
                    if v is not None and v not in local:
                        found[v] = None
            for v in sub.outputs:
                if v not in local:
                    found[v] = None
        return list(found)

    def _detach(self) -> None:
        """Drop this node's uses of its inputs (and of its subgraphs' captures)."""
        for i, v in enumerate(self._inputs):
            if v is not None:
                v._remove_use(self, i)
        for sub in self.subgraphs():
            for n in sub.walk():
                for i, v in enumerate(n._inputs):
                    if v is not None:
                        v._remove_use(n, i)


class Graph:
    """An ordered list of nodes with inputs, outputs, constants and opset imports.

    The top-level graph stands for the whole model (`opset_imports`, `meta` hold model-level
    data); a subgraph has `parent` set to the node that owns it and resolves opsets through it.
    """

    def __init__(
        self,
        inputs: Sequence[Value] = (),
        outputs: Sequence[Value] = (),
        nodes: Iterable[Node] = (),
        name: str = "main",
        opset_imports: Mapping[str, int] | None = None,
        initializers: Iterable[Value] = (),
    ) -> None:
        self.name = name
        self.parent: Node | None = None
        self._counter = itertools.count()
        self._opset_imports: dict[str, int] = dict(opset_imports or {})
        self.meta: dict[str, Any] = {}
        self.doc = ""
        self._nodes: dict[Node, None] = {}
        self.initializers: dict[str, Value] = {}
        self.inputs: list[Value] = []
        for v in inputs:
            self.add_input(v)
        for c in initializers:
            self.register_constant(c)
        for n in nodes:
            self.append(n)
        self.outputs: list[Value] = list(outputs)

    # -- model-level data --------------------------------------------------------------------
    @property
    def opset_imports(self) -> dict[str, int]:
        """Opset versions by domain; subgraphs see their root graph's imports."""
        root = self.root
        return root._opset_imports

    @property
    def root(self) -> Graph:
        """The top-level graph this graph belongs to."""
        g = self
        while g.parent is not None and g.parent.graph is not None:
            g = g.parent.graph
        return g

    def opset(self, domain: str = "") -> int | None:
        """Opset version imported for `domain`, or None."""
        return self.opset_imports.get(domain)

    # -- nodes -----------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Node]:
        for node in list(self._nodes):
            if node.graph is self:
                yield node

    def __len__(self) -> int:
        return len(self._nodes)

    @property
    def nodes(self) -> list[Node]:
        """The nodes in order (a copy)."""
        return list(self._nodes)

    def walk(self) -> Iterator[Node]:
        """Every node of this graph and, depth-first, of its subgraphs."""
        for node in self:
            yield node
            for sub in node.subgraphs():
                yield from sub.walk()

    def _adopt(self, node: Node) -> None:
        if node.graph is not None:
            raise VerificationError(f"{node!r} already belongs to graph {node.graph.name!r}")
        node.graph = self
        if not node.name:
            node.name = self.unique_name(node.op_type.lower())
        for out in node.outputs:
            if not out.name:
                out.name = self.unique_name(node.name)
        self._note_names(node.name, *(o.name for o in node.outputs))
        for sub in node.subgraphs():
            sub.parent = node
            if "_names" in self.root.meta:
                self._note_names(*sub._collect_names())

    def _note_names(self, *names: str) -> None:
        """Add names to the model-wide table of `unique_name` (once that table exists)."""
        taken = self.root.meta.get("_names")
        if taken is not None:
            taken.update(names)

    def append(self, node: Node) -> Node:
        """Add a node at the end and return it."""
        self._adopt(node)
        self._nodes[node] = None
        return node

    def insert_before(self, anchor: Node, nodes: Node | Sequence[Node]) -> None:
        """Insert node(s) right before `anchor`."""
        self._insert(anchor, nodes, after=False)

    def insert_after(self, anchor: Node, nodes: Node | Sequence[Node]) -> None:
        """Insert node(s) right after `anchor`."""
        self._insert(anchor, nodes, after=True)

    def _insert(self, anchor: Node, nodes: Node | Sequence[Node], after: bool) -> None:
        if anchor.graph is not self:
            raise VerificationError(f"{anchor!r} is not in graph {self.name!r}")
        new = list(dict.fromkeys([nodes] if isinstance(nodes, Node) else nodes))
        for n in new:  # check all first, so a refusal changes nothing
            if n.graph is not None:
                raise VerificationError(f"{n!r} already belongs to graph {n.graph.name!r}")
        for n in new:
            self._adopt(n)
        order: dict[Node, None] = {}
        for n in self._nodes:
            if n is anchor and not after:
                order.update(dict.fromkeys(new))
            order[n] = None
            if n is anchor and after:
                order.update(dict.fromkeys(new))
        self._nodes = order

    def remove(self, nodes: Node | Iterable[Node], safe: bool = True) -> None:
        """Remove node(s), dropping their uses of inputs.

        Args:
            nodes: the node or nodes to remove, all in this graph.
            safe: when True (default), refuse (atomically, before changing anything) if an
                output of a removed node is still used by a node that stays, or is a graph
                output.
        """
        group = list(dict.fromkeys([nodes] if isinstance(nodes, Node) else nodes))
        gone = set(group)
        for n in group:
            if n.graph is not self:
                raise VerificationError(f"{n!r} is not in graph {self.name!r}")
        if safe:
            outs = {id(o) for o in self.outputs}
            returned: dict[int, Graph] = {}
            for sub in self.subgraphs_recursive():
                if sub.parent is not None and sub.parent not in gone and not _inside(
                    sub.parent, gone
                ):
                    returned.update((id(o), sub) for o in sub.outputs)
            for n in group:
                for v in n.outputs:
                    if id(v) in outs:
                        raise VerificationError(
                            f"cannot remove {n!r}: %{v.name} is a graph output"
                        )
                    if id(v) in returned:
                        sub = returned[id(v)]
                        raise VerificationError(
                            f"cannot remove {n!r}: %{v.name} is an output of subgraph "
                            f"{sub.name!r} of {sub.parent!r}"
                        )
                    alive = [u for u, _ in v.uses if u not in gone and not _inside(u, gone)]
                    if alive:
                        raise VerificationError(
                            f"cannot remove {n!r}: %{v.name} is still used by "
                            + ", ".join(repr(u) for u in alive[:3])
                        )
        for n in group:
            n._detach()
            del self._nodes[n]
            n.graph = None

    def sort(self) -> None:
        """Stable topological sort: keeps the current order wherever dependencies allow.

        Raises:
            VerificationError: the graph has a cycle.
        """
        nodes = list(self._nodes)
        position = {n: i for i, n in enumerate(nodes)}
        deps: dict[Node, set[Node]] = {}
        for n in nodes:
            d: set[Node] = set()
            for v in [*n.inputs, *n.outer_values()]:
                if v is None:
                    continue
                p = _producer_in(v, self)
                if p is not None and p is not n:
                    d.add(p)
            deps[n] = d
        users: dict[Node, list[Node]] = {n: [] for n in nodes}
        for n, d in deps.items():
            for p in d:
                users[p].append(n)
        import heapq

        indeg = {n: len(d) for n, d in deps.items()}
        ready = [(position[n], n.id, n) for n in nodes if indeg[n] == 0]
        heapq.heapify(ready)
        out: list[Node] = []
        while ready:
            _, _, n = heapq.heappop(ready)
            out.append(n)
            for u in users[n]:
                indeg[u] -= 1
                if indeg[u] == 0:
                    heapq.heappush(ready, (position[u], u.id, u))
        if len(out) != len(nodes):
            stuck = [n for n in nodes if indeg[n] > 0]
            raise VerificationError(
                f"graph {self.name!r} has a cycle through {len(stuck)} node(s), e.g. {stuck[0]!r}"
            )
        self._nodes = dict.fromkeys(out)

    # -- values ------------------------------------------------------------------------------
    def add_input(self, value: Value) -> Value:
        """Append a graph input."""
        value.graph = self
        self.inputs.append(value)
        self._note_names(value.name)
        return value

    def register_constant(self, value: Value) -> Value:
        """Make an existing constant value belong to this graph's initializers."""
        if value.const is None:
            raise VerificationError(f"%{value.name} has no constant payload")
        if not value.name:
            value.name = self.unique_name("const")
        value.graph = self
        self.initializers[value.name] = value
        self._note_names(value.name)
        return value

    def add_constant(self, array: Any, name: str = "const") -> Value:
        """Create a constant value holding `array` (a fresh unique name based on `name`)."""
        arr = np.asarray(array)
        return self.register_constant(Value(self.unique_name(name), const=arr))

    def replace_all_uses(self, old: Value, new: Value) -> None:
        """Make every user of `old` (and every graph output slot holding it) use `new`."""
        if old is new:
            return
        for node, i in old.uses:
            node.set_input(i, new)
        # Graph outputs are not uses: fix every output list holding `old`, including those of
        # subgraphs that return a captured value directly.
        g: Graph | None = old._owning_graph()
        graphs = {id(x): x for x in (g, self) if x is not None}
        for x in list(graphs.values()):
            graphs.update((id(sub), sub) for sub in x.subgraphs_recursive())
        for graph in graphs.values():
            if any(o is old for o in graph.outputs):
                graph.outputs = [new if o is old else o for o in graph.outputs]

    def replace_value(self, old: Value, new: Value) -> None:
        """`replace_all_uses`, and where `old` is an output of this graph, `new` takes over
        its name (`old` is renamed), so rewrites never change a model's output names."""
        was_output = any(o is old for o in self.outputs)
        self.replace_all_uses(old, new)
        if was_output and new.name != old.name:
            name = old.name
            old.name = self.unique_name(f"{name}_replaced")
            new.name = name

    def make_node(
        self,
        op: str,
        inputs: Sequence[Value | None],
        attrs: Mapping[str, Any] | None = None,
        num_outputs: int = 1,
        name: str = "",
        before: Node | None = None,
    ) -> Node:
        """Create a node with fresh output values and add it (at the end, or before `before`)."""
        node = Node(op, inputs, attrs, outputs=num_outputs, name=name)
        if before is None:
            self.append(node)
        else:
            self.insert_before(before, node)
        return node

    def unique_name(self, prefix: str) -> str:
        """A value/node name not used anywhere in the model."""
        root = self.root
        taken = root.meta.get("_names")
        if taken is None:
            taken = root._collect_names()
            root.meta["_names"] = taken
        prefix = prefix or "v"
        while True:
            cand = f"{prefix}_{next(root._counter)}"
            if cand not in taken:
                taken.add(cand)
                return cand

    def _collect_names(self) -> set[str]:
        names: set[str] = set()
        for g in [self, *self.subgraphs_recursive()]:
            names.update(v.name for v in g.inputs)
            names.update(g.initializers)
            for n in g:
                names.add(n.name)
                names.update(v.name for v in n.outputs)
        return names

    def subgraphs_recursive(self) -> list[Graph]:
        """Every graph nested anywhere inside this one."""
        out: list[Graph] = []
        for n in self:
            for sub in n.subgraphs():
                out.append(sub)
                out.extend(sub.subgraphs_recursive())
        return out

    def values(self) -> Iterator[Value]:
        """Inputs, constants and node outputs of this graph (not of subgraphs)."""
        yield from self.inputs
        yield from self.initializers.values()
        for n in self:
            yield from n.outputs

    def find_value(self, name: str) -> Value | None:
        """The value with this name in this graph (not subgraphs), or None."""
        for v in self.values():
            if v.name == name:
                return v
        return None

    def find_node(self, name: str) -> Node | None:
        """The node with this name in this graph (not subgraphs), or None."""
        return next((n for n in self if n.name == name), None)

    def remove_unused_constants(self) -> int:
        """Drop constants nothing reads; returns how many were dropped."""
        outs = {id(o) for o in self.outputs}
        dead = [k for k, v in self.initializers.items() if not v.uses and id(v) not in outs]
        for k in dead:
            self.initializers.pop(k).graph = None
        return len(dead)

    def op_counts(self) -> dict[str, int]:
        """How many nodes of each op this graph holds (subgraphs excluded)."""
        counts: dict[str, int] = {}
        for n in self:
            counts[n.op] = counts.get(n.op, 0) + 1
        return counts

    def to_networkx(self) -> nx.MultiDiGraph:
        """A networkx view: one vertex per node (key: the Node), one edge per value use.

        Edge data: ``value`` (the Value) and ``index`` (the consumer input slot, or None when a
        subgraph of the consumer returns the value directly). Vertices for graph inputs/outputs
        are not added; use `Value.producer` to relate them.
        """
        import networkx as nx

        g = nx.MultiDiGraph()
        for n in self:
            g.add_node(n, op=n.op, name=n.name)
        for n in self:
            for v in n.outputs:
                for u, i in v.uses:
                    consumer = _ancestor_in(u, self)
                    if consumer is not None and consumer is not n:
                        g.add_edge(n, consumer, value=v, index=i)
        for c in self:
            for sub in c.subgraphs():
                for inner in [sub, *sub.subgraphs_recursive()]:
                    for v in inner.outputs:
                        p = _producer_in(v, self)
                        if p is not None and p is not c:
                            g.add_edge(p, c, value=v, index=None)
        return g

    def __str__(self) -> str:
        from .printer import format_graph

        return format_graph(self)

    def __repr__(self) -> str:
        return f"<Graph {self.name!r}: {len(self._nodes)} nodes>"


def _inside(node: Node, group: set[Node]) -> bool:
    """True when `node` sits in a subgraph of a node in `group`."""
    g = node.graph
    while g is not None and g.parent is not None:
        if g.parent in group:
            return True
        g = g.parent.graph
    return False


def _ancestor_in(node: Node, graph: Graph) -> Node | None:
    """`node` itself if it is in `graph`, else the node of `graph` whose subgraph holds it."""
    while node.graph is not None and node.graph is not graph:
        parent = node.graph.parent
        if parent is None:
            return None
        node = parent
    return node if node.graph is graph else None


def _producer_in(value: Value, graph: Graph) -> Node | None:
    p = value.producer
    return None if p is None else _ancestor_in(p, graph)
