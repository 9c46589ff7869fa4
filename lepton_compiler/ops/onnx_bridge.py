"""Borrow ONNX's own schema knowledge and reference kernels for standard ops.

ONNX keeps, for every standard op, an attribute schema with defaults, a type/shape inference
function and a numpy kernel in `onnx.reference`. Rewriting those would only add bugs, so the
generic definition of a standard op delegates here; family modules override where ONNX is
wrong or too slow.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from functools import cache
from typing import Any

import numpy as np
import onnx
from onnx import defs, helper

from ..errors import ShapeInferenceError
from ..ir import Node, Value, ValueType

#: Domains whose schemas ONNX ships.
_DOMAINS = ("", "ai.onnx.ml", "ai.onnx.preview.training", "ai.onnx.preview")


def has_schema(domain: str, op_type: str) -> bool:
    """True when ONNX defines this op (in any version)."""
    if domain not in _DOMAINS:
        return False
    return defs.has(op_type, domain)


@cache
def _schema(domain: str, op_type: str, version: int | None) -> defs.OpSchema | None:
    try:
        if version is None:
            return defs.get_schema(op_type, domain)
        return defs.get_schema(op_type, version, domain)
    except defs.SchemaError:
        return None


def summary(domain: str, op_type: str) -> str:
    """The first sentence of ONNX's documentation of the op."""
    s = _schema(domain, op_type, None)
    if s is None or not s.doc:
        return ""
    text = " ".join(s.doc.strip().split())
    return text.split(". ")[0][:160]


@cache
def _defaults(domain: str, op_type: str, version: int | None) -> dict[str, Any]:
    from ..frontend.convert import _Importer, attr_from_proto

    s = _schema(domain, op_type, version)
    if s is None:
        return {}
    out: dict[str, Any] = {}
    ctx = _Importer({}, None)
    for name, a in s.attributes.items():
        dv = a.default_value
        if dv is None or dv.type == onnx.AttributeProto.UNDEFINED or not dv.name:
            continue
        out[name] = attr_from_proto(dv, ctx)
    return out


def attribute_defaults(domain: str, op_type: str, version: int | None) -> dict[str, Any]:
    """Attribute defaults of the op at the given opset version (a fresh dict)."""
    return dict(_defaults(domain, op_type, version))


def _opset_protos(opsets: Mapping[str, int]) -> list[onnx.OperatorSetIdProto]:
    return [helper.make_opsetid(d, v) for d, v in opsets.items()]


def infer_node(node: Node) -> list[ValueType | None]:
    """Output types from ONNX's schema inference (None entries where it says nothing).

    Constant inputs are passed as data so shape-computing ops (Reshape, Expand, ...) infer
    concrete shapes. Failures of ONNX's inference give unknown types, not errors.
    """
    from ..export.onnx import array_to_proto, node_to_proto, type_to_proto
    from ..frontend.convert import type_from_proto

    graph = node.graph
    opsets = graph.opset_imports if graph is not None else {"": 18}
    version = opsets.get(node.domain)
    schema = _schema(node.domain, node.op_type, version)
    unknown: list[ValueType | None] = [None] * len(node.outputs)
    if schema is None:
        return unknown
    proto = node_to_proto(node)
    input_types: dict[str, onnx.TypeProto] = {}
    input_data: dict[str, onnx.TensorProto] = {}
    for v in [*node.inputs, *node.outer_values()]:
        if v is None or v.type is None:
            continue
        input_types[v.name] = type_to_proto(v.type)
        if v.const is not None and v.const.size <= 1024:
            input_data[v.name] = array_to_proto(v.const, v.name)
    try:
        out = onnx.shape_inference.infer_node_outputs(
            schema, proto, input_types, input_data, opset_imports=_opset_protos(opsets)
        )
    except Exception:
        return unknown
    return [type_from_proto(out[o.name]) if o.name in out else None for o in node.outputs]


class _Compiled:
    """A one-node ONNX model and its `ReferenceEvaluator`, cached per IR node."""

    __slots__ = ("evaluator", "feeds", "key", "outputs")

    def __init__(self, node: Node) -> None:
        from onnx.reference import ReferenceEvaluator

        from ..export.onnx import node_to_proto, value_info

        self.key = _signature(node)
        proto = node_to_proto(node)
        _drop_default_attributes(proto, node)
        captured = node.outer_values()
        feeds: dict[str, Value] = {}
        for v in [*node.inputs, *captured]:
            if v is not None:
                feeds.setdefault(v.name, v)
        self.feeds = list(feeds.values())
        omitted = node.meta.get("omitted_outputs", ())
        self.outputs = [o for i, o in enumerate(node.outputs) if i not in omitted]
        graph = helper.make_graph(
            [proto],
            f"ref_{node.name}",
            [value_info(v) for v in self.feeds],
            [value_info(v) for v in self.outputs],
        )
        opsets = dict(node.graph.opset_imports) if node.graph is not None else {"": 18}
        opsets.setdefault(node.domain, 1)
        model = helper.make_model(graph, opset_imports=_opset_protos(opsets))
        model.ir_version = onnx.IR_VERSION
        self.evaluator = ReferenceEvaluator(model)


def _drop_default_attributes(proto: onnx.NodeProto, node: Node) -> None:
    """Leave out attributes equal to their default: `onnx.reference` kernels sometimes lag the
    schema (e.g. CastLike-19 vs the newer ``round_mode``), and omitting a default changes
    nothing."""
    opsets = node.graph.opset_imports if node.graph is not None else {}
    defaults = _defaults(node.domain, node.op_type, opsets.get(node.domain))
    keep = []
    for a in proto.attribute:
        d = defaults.get(a.name, _MISSING)
        v = node.attrs.get(a.name)
        same = d is not _MISSING and type(d) is type(v) and not isinstance(v, np.ndarray) and d == v
        if not same:
            keep.append(a)
    del proto.attribute[:]
    proto.attribute.extend(keep)


_MISSING = object()


def _signature(node: Node) -> tuple[Any, ...]:
    """What a cached one-node model depends on: attributes, input/output values and names."""
    values = [*node.inputs, *node.outputs]
    return (
        id(node.attrs),
        tuple(id(v) for v in values),
        tuple(None if v is None else v.name for v in values),
    )
_compiled: weakref.WeakKeyDictionary[Node, _Compiled] = weakref.WeakKeyDictionary()


def run_node(node: Node, inputs: list[Any], scope: Mapping[Value, Any]) -> list[Any]:
    """Run one node with `onnx.reference` (the generic reference kernel of standard ops)."""
    entry = _compiled.get(node)
    if entry is None or entry.key != _signature(node):
        try:
            entry = _Compiled(node)
        except Exception as e:
            raise ShapeInferenceError(
                f"onnx.reference cannot build a kernel for {node.op} node {node.name!r}: {e}"
            ) from e
        if not node.subgraphs():  # bodies may be edited in place: never cache those
            _compiled[node] = entry
    by_value: dict[Value, Any] = {}
    for v, x in zip(node.inputs, inputs, strict=True):
        if v is not None:
            by_value[v] = x
    feeds = {v.name: by_value[v] if v in by_value else scope[v] for v in entry.feeds}
    results = entry.evaluator.run(None, feeds)
    out: list[Any] = []
    it = iter(results)
    omitted = node.meta.get("omitted_outputs", ())
    for i in range(len(node.outputs)):
        out.append(None if i in omitted else next(it))
    return [_as_numpy(x) for x in out]


def _as_numpy(x: Any) -> Any:
    if isinstance(x, np.generic):
        return np.asarray(x)
    return x
