"""IR → ONNX: every graph the compiler holds can be written out, checked and run elsewhere.

`export_model` gives a checker-clean `ModelProto` that ONNX Runtime runs with the same outputs.
Fused groups (`lepton.Fused`) are inlined back into plain ONNX nodes by default, so optimized
graphs stay runnable by any ONNX runtime; other `lepton.*` ops keep the ``lepton`` domain.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..errors import ArtifactError, LeptonError
from ..ir import DType, Graph, Node, OptionalType, SequenceType, TensorType, Value, ValueType

#: Models above this size are written with external data (protobuf's limit is 2 GiB).
EXTERNAL_DATA_THRESHOLD = 1_800_000_000
LEPTON_DOMAIN = "lepton"


def type_to_proto(t: ValueType | None) -> onnx.TypeProto:
    """The ONNX `TypeProto` of an IR type (an empty one when unknown)."""
    tp = onnx.TypeProto()
    if t is None:
        return tp
    if isinstance(t, TensorType):
        tt = tp.tensor_type
        tt.elem_type = t.dtype.onnx_code
        if t.shape is not None:
            shape = tt.shape
            shape.SetInParent()
            for d in t.shape:
                dim = shape.dim.add()
                if isinstance(d, int):
                    dim.dim_value = d
                elif isinstance(d, str):
                    dim.dim_param = d
        return tp
    if isinstance(t, SequenceType):
        tp.sequence_type.SetInParent()
        if t.elem is not None:
            tp.sequence_type.elem_type.CopyFrom(type_to_proto(t.elem))
        return tp
    if isinstance(t, OptionalType):
        tp.optional_type.SetInParent()
        if t.elem is not None:
            tp.optional_type.elem_type.CopyFrom(type_to_proto(t.elem))
        return tp
    raise LeptonError(f"cannot export type {t!r}")


def value_info(v: Value, name: str | None = None) -> onnx.ValueInfoProto:
    """A `ValueInfoProto` for a value (its type left empty when unknown)."""
    vi = onnx.ValueInfoProto()
    vi.name = name or v.name
    if v.type is not None:
        vi.type.CopyFrom(type_to_proto(v.type))
    return vi


def array_to_proto(array: Any, name: str = "") -> onnx.TensorProto:
    """A `TensorProto` holding a numpy array (object arrays become string tensors)."""
    arr = np.asarray(array)
    if arr.dtype.kind in "OUS":
        t = onnx.TensorProto()
        t.name = name
        t.data_type = onnx.TensorProto.STRING
        t.dims.extend(arr.shape)
        t.string_data.extend(
            x if isinstance(x, bytes) else str(x).encode("utf-8") for x in arr.flat
        )
        return t
    return numpy_helper.from_array(arr, name)


def attr_to_proto(name: str, value: Any, ctx: _Exporter | None = None) -> onnx.AttributeProto:
    """An `AttributeProto` for an IR attribute value."""
    if isinstance(value, Graph):
        return helper.make_attribute(name, (ctx or _Exporter()).graph(value))
    if isinstance(value, (list, tuple)) and value and isinstance(value[0], Graph):
        ex = ctx or _Exporter()
        return helper.make_attribute(name, [ex.graph(g) for g in value])
    if isinstance(value, np.ndarray):
        return helper.make_attribute(name, array_to_proto(value))
    if isinstance(value, (TensorType, SequenceType, OptionalType)):
        a = onnx.AttributeProto()
        a.name = name
        a.type = onnx.AttributeProto.TYPE_PROTO
        a.tp.CopyFrom(type_to_proto(value))
        return a
    if isinstance(value, (list, tuple)):
        if not value:
            a = onnx.AttributeProto()
            a.name = name
            a.type = onnx.AttributeProto.INTS
            return a
        if isinstance(value[0], np.ndarray):
            return helper.make_attribute(name, [array_to_proto(x) for x in value])
        if isinstance(value[0], (TensorType, SequenceType, OptionalType)):
            a = onnx.AttributeProto()
            a.name = name
            a.type = onnx.AttributeProto.TYPE_PROTOS
            a.type_protos.extend(type_to_proto(x) for x in value)
            return a
        if all(isinstance(x, (int, np.integer)) and not isinstance(x, bool) for x in value):
            return helper.make_attribute(name, [int(x) for x in value])
        if all(isinstance(x, (int, float, np.number)) for x in value):
            return helper.make_attribute(name, [float(x) for x in value])
        return helper.make_attribute(name, [_to_bytes(x) for x in value])
    if isinstance(value, (bool, np.bool_)):
        return helper.make_attribute(name, int(value))
    if isinstance(value, (int, np.integer)):
        return helper.make_attribute(name, int(value))
    if isinstance(value, (float, np.floating)):
        return helper.make_attribute(name, float(value))
    if isinstance(value, (str, bytes)):
        return helper.make_attribute(name, _to_bytes(value))
    if isinstance(value, onnx.SparseTensorProto):
        return helper.make_attribute(name, value)
    raise LeptonError(f"cannot export attribute {name}={value!r}")


def _to_bytes(x: Any) -> bytes:
    return x if isinstance(x, bytes) else str(x).encode("utf-8")


class _Exporter:
    """Turns IR graphs into GraphProtos, inlining fused groups on the way."""

    def __init__(self, inline_fused: bool = True, value_infos: bool = True) -> None:
        self.inline_fused = inline_fused
        self.value_infos = value_infos
        self.domains: set[str] = set()

    def node_protos(self, node: Node, rename: Mapping[Value, str]) -> list[onnx.NodeProto]:
        def nm(v: Value | None) -> str:
            return "" if v is None else rename.get(v, v.name)

        if self.inline_fused and node.domain == LEPTON_DOMAIN and node.op_type == "Fused":
            body: Graph = node.attrs["body"]
            inner = dict(rename)
            for bv, v in zip(body.inputs, node.inputs, strict=True):
                inner[bv] = nm(v)
            # A value the body defines takes the name of the node output it becomes; a body
            # input, a captured outer value or a repeated output is copied by an Identity.
            defined = set(body.initializers.values()) | {o for n in body for o in n.outputs}
            copies: list[tuple[Value, Value]] = []
            for bv, v in zip(body.outputs, node.outputs, strict=True):
                if bv in defined:
                    defined.discard(bv)
                    inner[bv] = nm(v)
                else:
                    copies.append((bv, v))
            protos: list[onnx.NodeProto] = []
            for c in body.initializers.values():
                protos.append(
                    helper.make_node(
                        "Constant", [], [inner.get(c, c.name)], value=array_to_proto(c.const)
                    )
                )
            for n in body:
                protos.extend(self.node_protos(n, inner))
            for bv, v in copies:
                protos.append(helper.make_node("Identity", [inner.get(bv, bv.name)], [nm(v)]))
            return protos
        omitted = node.meta.get("omitted_outputs", ())
        outs = ["" if i in omitted else nm(v) for i, v in enumerate(node.outputs)]
        proto = onnx.NodeProto()
        proto.op_type = node.op_type
        proto.domain = node.domain
        proto.name = node.name
        proto.input.extend(nm(v) for v in node.inputs)
        proto.output.extend(outs)
        for k in sorted(node.attrs):
            proto.attribute.append(attr_to_proto(k, node.attrs[k], self))
        if node.domain:
            self.domains.add(node.domain)
        return [proto]

    def graph(self, graph: Graph, rename: Mapping[Value, str] | None = None) -> onnx.GraphProto:
        rename = dict(rename or {})
        g = onnx.GraphProto()
        g.name = graph.name
        if graph.doc:
            g.doc_string = graph.doc
        g.input.extend(value_info(v) for v in graph.inputs)
        g.initializer.extend(
            array_to_proto(c.const, c.name) for c in graph.initializers.values()
        )
        for n in graph:
            g.node.extend(self.node_protos(n, rename))
        if self.value_infos:
            listed = {v.name for v in graph.inputs} | {v.name for v in graph.outputs}
            for n in graph:
                for v in n.outputs:
                    if v.type is not None and v.name not in listed and v.uses:
                        g.value_info.append(value_info(v))
        g.output.extend(value_info(v) for v in graph.outputs)
        return g


def node_to_proto(node: Node) -> onnx.NodeProto:
    """The `NodeProto` of one node (subgraph attributes exported too, fused groups kept)."""
    return _Exporter(inline_fused=False).node_protos(node, {})[0]


def graph_to_proto(graph: Graph, inline_fused: bool = True) -> onnx.GraphProto:
    """The `GraphProto` of a graph and its subgraphs."""
    return _Exporter(inline_fused=inline_fused).graph(graph)


def export_model(graph: Graph, inline_fused: bool = True) -> onnx.ModelProto:
    """Export an IR graph as an ONNX model.

    Args:
        graph: the top-level graph.
        inline_fused: expand `lepton.Fused` groups into their body ops (default), so the model
            runs on any ONNX runtime.

    Returns:
        A model that passes `onnx.checker.check_model`.
    """
    ex = _Exporter(inline_fused=inline_fused)
    gp = ex.graph(graph)
    opsets = dict(graph.opset_imports)
    opsets.setdefault("", 18)
    for d in ex.domains:
        opsets.setdefault(d, 1)
    model = helper.make_model(
        gp, opset_imports=[helper.make_opsetid(d, v) for d, v in sorted(opsets.items())]
    )
    model.ir_version = min(int(graph.meta.get("ir_version", onnx.IR_VERSION)), onnx.IR_VERSION)
    model.ir_version = max(model.ir_version, _min_ir_version(opsets.get("", 18)))
    model.producer_name = "lepton-compiler"
    from .. import __version__

    model.producer_version = __version__
    for k, v in graph.meta.get("metadata_props", {}).items():
        model.metadata_props.add(key=k, value=v)
    return model


def _min_ir_version(opset: int) -> int:
    """The lowest IR version that may declare this ai.onnx opset."""
    table = [(21, 10), (19, 9), (15, 8), (13, 7), (11, 6), (10, 5), (9, 4), (8, 3), (1, 3)]
    return next(ir for op, ir in table if opset >= op)


def save_model(graph: Graph, path: str | os.PathLike[str], inline_fused: bool = True) -> None:
    """Write the graph as an ONNX file (external data beside it when above 1.8 GB).

    Raises:
        ArtifactError: the path cannot be written.
    """
    model = export_model(graph, inline_fused=inline_fused)
    path = os.fspath(path)
    try:
        if model.ByteSize() > EXTERNAL_DATA_THRESHOLD:
            onnx.save_model(
                model,
                path,
                save_as_external_data=True,
                location=os.path.basename(path) + ".data",
            )
        else:
            onnx.save_model(model, path)
    except OSError as e:
        raise ArtifactError(f"cannot write {path}: {e.strerror or e}") from e


__all__ = [
    "DType", "array_to_proto", "attr_to_proto", "export_model", "graph_to_proto",
    "node_to_proto", "save_model", "type_to_proto", "value_info",
]  # fmt: skip
