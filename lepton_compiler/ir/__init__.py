"""The graph IR: values, nodes, graphs, types, verification and the text printer."""

from __future__ import annotations

from .core import Graph, Node, Value
from .dtypes import DType
from .printer import format_graph, format_node
from .types import (
    Dim,
    OptionalType,
    QuantParams,
    SequenceType,
    Shape,
    TensorType,
    ValueType,
    merge_types,
    tensor_type_of,
)
from .verify import verify

__all__ = [
    "DType", "Dim", "Graph", "Node", "OptionalType", "QuantParams", "SequenceType", "Shape",
    "TensorType", "Value", "ValueType", "format_graph", "format_node", "merge_types",
    "tensor_type_of", "verify",
]  # fmt: skip
