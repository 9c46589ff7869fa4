"""Group fusion: decide which ops become one kernel, and wrap each group in a `lepton.Fused`
node whose body holds the group's ops.

The rules follow op categories from the op registry, in the spirit of TVM's FuseOps:

- an *anchor* (category ``complex``: Conv, ConvTranspose, MatMul/Gemm, pooling, attention; or
  ``reduction``: Softmax, LayerNormalization, ReduceMean, ...) takes the chain of element-wise
  and broadcast ops that follows it (bias, activation, residual add, clip) as its *epilogue*;
- a chain of element-wise/broadcast ops with no anchor becomes a group of its own;
- ``injective`` ops (reshapes, transposes, slices) and ``opaque`` ops stay single: reshapes
  are free views, and data movement is the backend's business.

An op joins the group of the producer of one of its inputs only when that value has no other
reader (so nothing computed inside a group is needed twice, and no work is duplicated), when
joining does not create a cycle between groups (checked with networkx: no other input of the op
may depend on the group through outside nodes), and while the group stays within
``fusion_max_ops`` ops (option, default 16). One exception: the QuantizeLinear that
requantizes an integer op's result (``lepton.QConv``/``lepton.QMatMul``) for the next layer
joins its group even when the float value has other readers, which makes the group store two
outputs (option ``fuse_requantize_outputs``, default True; backends whose integer kernels
store one output turn it off). Values read outside a group become the group's
outputs. Single ops are left as they are: a backend compiles any node that is not a fused group
as a kernel of its own. Runs last in the fusion pipeline, after BN folding and pattern fusions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import networkx as nx

from lepton_compiler.ir import Graph, Node, TensorType, Value
from lepton_compiler.ops import lookup_node
from lepton_compiler.pass_manager import Pass, PassContext, PassResult, register_pass

DEFAULT_MAX_OPS = 16
_EPILOGUE = ("elementwise", "broadcast")
_ANCHORS = ("complex", "reduction")
_INTEGER_ANCHORS = ("lepton.QConv", "lepton.QMatMul")


def category(node: Node) -> str:
    """The fusion category of a node's op ("opaque" when unknown)."""
    d = lookup_node(node)
    return d.category if d is not None else "opaque"


@dataclass
class _Group:
    nodes: list[Node] = field(default_factory=list)

    @property
    def anchor(self) -> Node:
        for n in self.nodes:
            if category(n) in _ANCHORS:
                return n
        return self.nodes[0]


@register_pass
class GroupFusionPass(Pass):
    """Wrap each anchor op and its element-wise epilogue (or an element-wise chain) in one
    lepton.Fused node."""

    name = "fuse_groups"

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        max_ops = int(ctx.option("fusion_max_ops", DEFAULT_MAX_OPS))
        two_outputs = bool(ctx.option("fuse_requantize_outputs", True))
        groups = plan_groups(graph, max_ops, two_outputs)
        made = 0
        for group in groups:
            if len(group.nodes) > 1:
                _wrap(graph, group)
                made += 1
        if made:
            graph.sort()
        return PassResult(graph, made > 0)


def plan_groups(
    graph: Graph, max_ops: int = DEFAULT_MAX_OPS, requantize_outputs: bool = True
) -> list[_Group]:
    """Partition the graph's nodes into fusion groups (in graph order)."""
    dag = graph.to_networkx()
    group_of: dict[Node, _Group] = {}
    groups: list[_Group] = []
    for node in graph:
        target = _joinable_group(node, group_of, dag, max_ops, requantize_outputs)
        if target is None:
            target = _Group()
            groups.append(target)
        target.nodes.append(node)
        group_of[node] = target
    return _pull_dequantize(groups, group_of, max_ops)


def _pull_dequantize(
    groups: list[_Group], group_of: dict[Node, _Group], max_ops: int
) -> list[_Group]:
    """A lone DequantizeLinear whose readers all sit in one anchored group moves into that
    group: the kernel dequantizes its 8-bit side input as it reads it (pre-quantized QDQ
    models dequantize the residual branch before each Add) instead of a separate pass writing
    a float copy. Moving it is safe: its input comes from before it, and it has no other
    reader."""
    for group in groups:
        if len(group.nodes) != 1 or group.nodes[0].op != "DequantizeLinear":
            continue
        dq = group.nodes[0]
        out = dq.outputs[0]
        readers = {id(group_of[u]): group_of[u] for u in out.users if u in group_of}
        if out.is_graph_output() or len(readers) != 1 or len(out.users) == 0:
            continue
        (target,) = readers.values()
        if target is group or len(target.nodes) >= max_ops:
            continue
        if category(target.anchor) not in _ANCHORS or target.anchor in out.users:
            continue  # only epilogue operands: kernels read their anchor's input as they are
        first = min(target.nodes.index(u) for u in out.users)
        target.nodes.insert(first, dq)
        group_of[dq] = target
        group.nodes.clear()
    return [g for g in groups if g.nodes]


def _joinable_group(
    node: Node,
    group_of: dict[Node, _Group],
    dag: nx.MultiDiGraph,
    max_ops: int,
    requantize_outputs: bool = True,
) -> _Group | None:
    """The group `node` may join as an epilogue, or None."""
    if category(node) not in _EPILOGUE or node.subgraphs():
        return None
    for v in node.inputs:
        if v is None or v.producer is None or v.producer not in group_of:
            continue
        group = group_of[v.producer]
        if len(group.nodes) >= max_ops:
            continue
        head = category(group.anchor)
        if head not in _ANCHORS and head not in _EPILOGUE:
            continue  # injective/opaque groups take no epilogue
        shared = len(v.users) != 1 or v.is_graph_output()
        if shared and not (requantize_outputs and _requantizes(node, group)):
            continue  # the value is needed elsewhere too: it stays a kernel boundary
        if not _same_shape(v, node):
            continue  # a broadcast that grows the tensor is a new loop nest, not an epilogue
        if _creates_cycle(node, group, dag):
            continue
        return group
    return None


def _requantizes(node: Node, group: _Group) -> bool:
    """A QuantizeLinear after an integer op's group joins it even when the float value is
    also read elsewhere (a residual branch): the kernel then stores both the float value and
    its requantized copy, which costs far less than a separate pass over the tensor."""
    return node.op == "QuantizeLinear" and group.anchor.op in _INTEGER_ANCHORS


def _same_shape(v: Value, node: Node) -> bool:
    out = node.outputs[0]
    if not (isinstance(v.type, TensorType) and isinstance(out.type, TensorType)):
        return False
    return v.type.shape is not None and v.type.shape == out.type.shape


def _creates_cycle(node: Node, group: _Group, dag: nx.MultiDiGraph) -> bool:
    """True when another input of `node` depends on `group` through a node outside it."""
    members = set(group.nodes)
    for v in node.inputs:
        if v is None or v.producer is None or v.producer in members:
            continue
        p = v.producer
        if p not in dag:
            continue
        if any(m in dag and nx.has_path(dag, m, p) for m in group.nodes):
            return True
    return False


def _wrap(graph: Graph, group: _Group) -> Node:
    """Move the group's nodes into the body of a new lepton.Fused node."""
    members = set(group.nodes)
    produced = {o for n in group.nodes for o in n.outputs}
    ext_inputs: list[Value] = []
    for n in group.nodes:
        for v in [*n.inputs, *n.outer_values()]:
            if v is not None and v not in produced and v not in ext_inputs:
                ext_inputs.append(v)
    outputs = [
        o for n in group.nodes for o in n.outputs
        if o.is_graph_output() or any(u not in members for u in o.users)
    ]  # fmt: skip
    anchor = group.anchor
    body = Graph(name=f"{anchor.name}_body")
    mapping: dict[Value, Value] = {}
    for v in ext_inputs:
        bv = Value(graph.unique_name(f"{v.name}_in"), v.type)
        body.add_input(bv)
        mapping[v] = bv
    external_uses = {o: [(u, i) for u, i in o.uses if u not in members] for o in outputs}
    graph.remove(group.nodes, safe=False)
    for n in group.nodes:
        n.set_inputs([None if v is None else mapping.get(v, v) for v in n.inputs])
        body.append(n)
    body.outputs = list(outputs)
    fused_outs = [Value(graph.unique_name(f"{o.name}_fused"), o.type) for o in outputs]
    epilogue = [n.op for n in group.nodes if n is not anchor]
    fused = Node(
        "lepton.Fused",
        ext_inputs,
        {"body": body, "anchor": anchor.op, "epilogue": epilogue},
        outputs=fused_outs,
        name=graph.unique_name(f"fused_{anchor.name}"),
    )
    graph.append(fused)
    for o, fo in zip(outputs, fused_outs, strict=True):
        for u, i in external_uses[o]:
            u.set_input(i, fo)
        if any(x is o for x in graph.outputs):
            graph.outputs = [fo if x is o else x for x in graph.outputs]
            name = o.name
            o.name = graph.unique_name(f"{name}_inner")
            fo.name = name
    fused.meta["bytes_saved"] = _internal_bytes(group, set(outputs))
    return fused


def _internal_bytes(group: _Group, outputs: set[Value]) -> int:
    """Bytes of the intermediate tensors that stay inside the group (never written out)."""
    total = 0
    for n in group.nodes:
        for o in n.outputs:
            if o not in outputs and isinstance(o.type, TensorType) and o.type.nbytes:
                total += o.type.nbytes
    return total
