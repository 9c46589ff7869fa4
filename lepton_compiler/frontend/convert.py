"""ONNX protobufs → IR objects: types, attributes, tensors and (sub)graphs.

Attribute defaults from each op's schema are filled in here, so passes and kernels always see
every attribute that has a default. `Constant` nodes become constant values of their graph.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..errors import ModelLoadError
from ..ir import DType, Graph, Node, OptionalType, SequenceType, TensorType, Value, ValueType
from ..ops.registry import lookup


def type_from_proto(tp: onnx.TypeProto) -> ValueType | None:
    """The IR type of an ONNX `TypeProto` (None when the proto says nothing)."""
    kind = tp.WhichOneof("value")
    if kind == "tensor_type":
        tt = tp.tensor_type
        if tt.elem_type == 0:
            return None
        dtype = DType.from_onnx(tt.elem_type)
        if not tt.HasField("shape"):
            return TensorType(dtype, None)
        dims: list[int | str | None] = []
        for d in tt.shape.dim:
            which = d.WhichOneof("value")
            if which == "dim_value":
                dims.append(int(d.dim_value))
            elif which == "dim_param" and d.dim_param:
                dims.append(d.dim_param)
            else:
                dims.append(None)
        return TensorType(dtype, tuple(dims))
    if kind == "sequence_type":
        inner = tp.sequence_type.elem_type if tp.sequence_type.HasField("elem_type") else None
        return SequenceType(type_from_proto(inner) if inner is not None else None)
    if kind == "optional_type":
        inner = tp.optional_type.elem_type if tp.optional_type.HasField("elem_type") else None
        return OptionalType(type_from_proto(inner) if inner is not None else None)
    if kind == "sparse_tensor_type":
        st = tp.sparse_tensor_type
        return TensorType(DType.from_onnx(st.elem_type), None) if st.elem_type else None
    return None


def array_from_proto(t: onnx.TensorProto, base_dir: str | None = None) -> np.ndarray:
    """A numpy array with the contents of a `TensorProto` (external data resolved)."""
    if onnx.external_data_helper.uses_external_data(t):
        if base_dir is None:
            raise ModelLoadError(
                f"tensor {t.name!r} stores its data in an external file; load the model from "
                "its path so the data file can be found"
            )
        onnx.external_data_helper.load_external_data_for_tensor(t, base_dir)
    arr = numpy_helper.to_array(t)
    if t.data_type == onnx.TensorProto.STRING:
        arr = np.array([x.decode("utf-8") if isinstance(x, bytes) else x for x in arr.flat],
                       dtype=object).reshape(arr.shape)
    return arr


def sparse_to_dense(sp: onnx.SparseTensorProto) -> np.ndarray:
    """Densify a `SparseTensorProto`."""
    values = numpy_helper.to_array(sp.values)
    indices = numpy_helper.to_array(sp.indices).astype(np.int64)
    dims = tuple(sp.dims)
    dense = np.zeros(int(np.prod(dims)), dtype=values.dtype)
    if indices.ndim == 2:
        indices = np.ravel_multi_index(tuple(indices.T), dims)
    dense[indices] = values
    return dense.reshape(dims)


def attr_from_proto(a: onnx.AttributeProto, ctx: _Importer) -> Any:
    """The IR value of one attribute (graphs converted, strings decoded)."""
    A = onnx.AttributeProto
    if a.type == A.GRAPH:
        return ctx.graph(a.g)
    if a.type == A.GRAPHS:
        return [ctx.graph(g) for g in a.graphs]
    if a.type == A.TENSOR:
        return array_from_proto(a.t, ctx.base_dir)
    if a.type == A.TENSORS:
        return [array_from_proto(t, ctx.base_dir) for t in a.tensors]
    if a.type == A.SPARSE_TENSOR:
        return sparse_to_dense(a.sparse_tensor)
    if a.type == A.TYPE_PROTO:
        return type_from_proto(a.tp)
    if a.type == A.TYPE_PROTOS:
        return [type_from_proto(t) for t in a.type_protos]
    if a.type == A.STRING:
        return _decode(a.s)
    if a.type == A.STRINGS:
        return [_decode(s) for s in a.strings]
    if a.type == A.INTS:
        return [int(x) for x in a.ints]
    if a.type == A.FLOATS:
        return [float(x) for x in a.floats]
    if a.type == A.INT:
        return int(a.i)
    if a.type == A.FLOAT:
        return float(a.f)
    return helper.get_attribute_value(a)


def _decode(b: bytes) -> str | bytes:
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        return b


def constant_value(node: onnx.NodeProto, ctx: _Importer) -> np.ndarray:
    """The tensor a `Constant` node produces."""
    a = node.attribute[0]
    if a.name == "value":
        return array_from_proto(a.t, ctx.base_dir)
    if a.name == "sparse_value":
        return sparse_to_dense(a.sparse_tensor)
    if a.name == "value_float":
        return np.array(a.f, dtype=np.float32)
    if a.name == "value_floats":
        return np.array(list(a.floats), dtype=np.float32)
    if a.name == "value_int":
        return np.array(a.i, dtype=np.int64)
    if a.name == "value_ints":
        return np.array(list(a.ints), dtype=np.int64)
    if a.name == "value_string":
        return np.array(a.s.decode("utf-8"), dtype=object)
    if a.name == "value_strings":
        return np.array([s.decode("utf-8") for s in a.strings], dtype=object)
    raise ModelLoadError(f"Constant node {node.name!r} has an unknown attribute {a.name!r}")


class _Importer:
    """Builds IR graphs from GraphProtos, resolving names through nested scopes."""

    def __init__(self, opsets: Mapping[str, int], base_dir: str | None) -> None:
        self.opsets = dict(opsets)
        self.base_dir = base_dir
        self.scopes: list[dict[str, Value]] = []
        self.taken: set[str] = set()
        self.node_names: set[str] = set()
        self._fresh = 0

    def collect_names(self, gp: onnx.GraphProto) -> None:
        """Remember every name in a graph (recursively) so fresh names never collide."""
        self.taken.update(t.name for t in gp.initializer)
        self.taken.update(vi.name for vi in gp.input)
        for n in gp.node:
            self.taken.add(n.name)
            self.taken.update(n.output)
            for a in n.attribute:
                for g in [a.g] if a.HasField("g") else list(a.graphs):
                    self.collect_names(g)

    def fresh(self, prefix: str) -> str:
        """A name used nowhere in the model."""
        while True:
            self._fresh += 1
            cand = f"{prefix}_{self._fresh}"
            if cand not in self.taken:
                self.taken.add(cand)
                return cand

    def resolve(self, name: str) -> Value:
        for scope in reversed(self.scopes):
            if name in scope:
                return scope[name]
        raise ModelLoadError(f"value {name!r} is used but never defined")

    def graph(self, gp: onnx.GraphProto, top: bool = False) -> Graph:
        graph = Graph(name=gp.name or "main", opset_imports=self.opsets if top else None)
        graph.doc = gp.doc_string
        scope: dict[str, Value] = {}
        self.scopes.append(scope)
        known = {vi.name: vi.type for vi in [*gp.value_info, *gp.output]}
        try:
            for t in gp.initializer:
                v = Value(t.name, const=array_from_proto(t, self.base_dir))
                graph.register_constant(v)
                scope[t.name] = v
            for sp in gp.sparse_initializer:
                name = sp.values.name
                v = Value(name, const=sparse_to_dense(sp))
                graph.register_constant(v)
                scope[name] = v
            for vi in gp.input:
                if vi.name in scope:  # old IR: initializer also listed as input
                    continue
                v = Value(vi.name, type_from_proto(vi.type))
                v.doc = vi.doc_string
                graph.add_input(v)
                scope[vi.name] = v
            for np_ in gp.node:
                self._node(np_, graph, scope, known)
            outs = []
            for vi in gp.output:
                v = self.resolve(vi.name)
                declared = type_from_proto(vi.type)
                if v.type is None:
                    v.type = declared
                outs.append(v)
            graph.outputs = outs
        finally:
            self.scopes.pop()
        return graph

    def _node(
        self,
        np_: onnx.NodeProto,
        graph: Graph,
        scope: dict[str, Value],
        known: Mapping[str, onnx.TypeProto],
    ) -> None:
        if np_.op_type == "Constant" and np_.domain in ("", "ai.onnx") and len(np_.attribute) == 1:
            v = Value(np_.output[0], const=constant_value(np_, self))
            graph.register_constant(v)
            scope[v.name] = v
            return
        domain = "" if np_.domain == "ai.onnx" else np_.domain
        inputs = [None if not n else self.resolve(n) for n in np_.input]
        attrs: dict[str, Any] = {}
        opdef = lookup(domain, np_.op_type)
        if opdef is not None and opdef.defaults is not None:
            attrs.update(opdef.defaults(self.opsets.get(domain)))
        for a in np_.attribute:
            if a.ref_attr_name:
                raise ModelLoadError(
                    f"node {np_.name!r} refers to a function attribute {a.ref_attr_name!r} "
                    "outside a function"
                )
            attrs[a.name] = attr_from_proto(a, self)
        out_names = list(np_.output)
        while out_names and not out_names[-1]:
            out_names.pop()
        outputs = []
        omitted = set()
        node_name = np_.name
        if not node_name or node_name in self.node_names:
            node_name = self.fresh(np_.op_type.lower())
        self.node_names.add(node_name)
        for i, name in enumerate(out_names):
            t = type_from_proto(known[name]) if name in known else None
            if not name:
                omitted.add(i)
                name = self.fresh(f"{node_name}_unused")
            outputs.append(Value(name, t))
        node = Node(np_.op_type, inputs, attrs, outputs=outputs, name=node_name, domain=domain)
        if omitted:
            node.meta["omitted_outputs"] = omitted
        if np_.doc_string:
            node.meta["doc"] = np_.doc_string
        graph.append(node)
        for v in outputs:
            scope[v.name] = v
