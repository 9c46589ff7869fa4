"""Put a float graph into QDQ form: QuantizeLinear → DequantizeLinear on the activation of each
chosen layer, DequantizeLinear of int8 weights and int32 biases.

Only the layers' operands are quantized; every other reader of an activation keeps the float
value, so ops that stay float see no boundary at all (the fewest Q/DQ pairs). An activation
read by several layers (BERT's Q, K and V projections) gets one pair. A residual Add of such an
activation reads the dequantized copy too (`_residuals_read_quantized`). The layer nodes and
their output values are unchanged (names included), which the per-layer report relies on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from lepton_compiler.ir import Graph, Node, Value
from lepton_compiler.ops.infer import refresh_types

from .layers import Layer
from .scheme import ActivationParams, quantize_bias, quantize_weights


def _node(
    graph: Graph,
    op: str,
    inputs: Sequence[Value | None],
    name: str,
    out: str,
    attrs: Mapping[str, object] | None = None,
) -> Node:
    node = Node(
        op, inputs, attrs, outputs=[Value(graph.unique_name(out))], name=graph.unique_name(name)
    )
    return node


def _place(graph: Graph, value: Value, nodes: list[Node]) -> None:
    """Insert `nodes` right after `value`'s producer (before the first node for inputs and
    constants)."""
    producer = value.producer
    if producer is not None and producer.graph is graph:
        graph.insert_after(producer, nodes)
    else:
        first = next(iter(graph), None)
        if first is None:
            for n in nodes:
                graph.append(n)
        else:
            graph.insert_before(first, nodes)
    for n in nodes:
        refresh_types(n)


def quantize_activation(graph: Graph, value: Value, params: ActivationParams) -> Value:
    """Insert ``Q → DQ`` after `value`; returns the DQ output (no reader yet)."""
    scale = graph.add_constant(np.asarray(params.scale, np.float32), f"{value.name}_scale")
    zp = graph.add_constant(params.zero_point, f"{value.name}_zero_point")
    q = _node(
        graph, "QuantizeLinear", [value, scale, zp], f"{value.name}_quantize", f"{value.name}_q"
    )
    dq = _node(
        graph,
        "DequantizeLinear",
        [q.output, scale, zp],
        f"{value.name}_dequantize",
        f"{value.name}_dq",
    )
    _place(graph, value, [q, dq])
    return dq.output


def _dequantized_const(
    graph: Graph, q: np.ndarray, scale: np.ndarray, axis: int | None, name: str, before: Node
) -> Value:
    qv = graph.add_constant(q, f"{name}_quantized")
    sv = graph.add_constant(np.asarray(scale, np.float32), f"{name}_scale")
    zv = graph.add_constant(np.zeros(np.shape(scale), q.dtype), f"{name}_zero_point")
    attrs = {"axis": int(axis)} if axis is not None and np.ndim(scale) == 1 else {}
    dq = _node(graph, "DequantizeLinear", [qv, sv, zv], f"{name}_dequantize", f"{name}_dq", attrs)
    graph.insert_before(before, dq)
    refresh_types(dq)
    return dq.output


def quantize_layer(
    graph: Graph, layer: Layer, x_dq: Value, x_scale: np.float32, per_channel: bool
) -> None:
    """Make `layer` read `x_dq` and int8 weights (and an int32 bias) through DequantizeLinear."""
    node = layer.node
    w = np.asarray(layer.weight.const, np.float32)
    wq, ws = quantize_weights(w, layer.weight_axis if per_channel else None)
    name = node.name or "layer"
    node.set_input(0, x_dq)
    node.set_input(1, _dequantized_const(graph, wq, ws, layer.weight_axis, f"{name}_w", node))
    if layer.has_bias:
        b = node.inputs[2]
        assert b is not None and b.const is not None
        bq = quantize_bias(np.asarray(b.const), x_scale, ws)
        if bq is not None:
            q, scale = bq
            shape = np.shape(b.const)
            dq = _dequantized_const(
                graph, q.reshape(shape), scale, len(shape) - 1, f"{name}_b", node
            )
            node.set_input(2, dq)


def insert_qdq(
    graph: Graph,
    layers: Sequence[Layer],
    params: Mapping[str, ActivationParams],
    per_channel: bool = True,
) -> int:
    """Quantize `layers` in place, with activation parameters by activation value name.

    Returns:
        The number of layers quantized (those whose activation has parameters).
    """
    dq_of: dict[Value, Value] = {}
    done = 0
    for layer in layers:
        x = layer.activation
        p = params.get(x.name)
        if p is None:
            continue
        if x not in dq_of:
            dq_of[x] = quantize_activation(graph, x, p)
        quantize_layer(graph, layer, dq_of[x], p.scale, per_channel)
        done += 1
    if done:
        _residuals_read_quantized(dq_of)
        graph.remove_unused_constants()
        graph.sort()
    return done


def _residuals_read_quantized(dq_of: Mapping[Value, Value]) -> None:
    """A residual Add that reads an activation which is quantized anyway (a block's input,
    also read by the block's first layer) reads its dequantized copy instead. The kernel that
    makes the activation then stores only the uint8 tensor, and the Add reads that through
    DequantizeLinear (a quarter of the bytes), as quantized runtimes compute residual blocks.
    The rounding this adds to the skip path is the activation's own quantization step."""
    for x, dq in dq_of.items():
        for node, index in list(x.uses):
            if node.op == "Add" and node.inputs[1 - index] is not None:
                node.set_input(index, dq)
