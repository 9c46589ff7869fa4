"""Control flow: If, Loop and Scan run their bodies with our own interpreter.

Their bodies are IR graphs (they may hold fused groups or other `lepton.*` ops after passes),
so the reference kernels here bind body inputs and run them with `run_subgraph`, reading
captured outer values from the enclosing scope. onnx.reference's Loop also stacks scalar scan
outputs as ``(n, 1)`` instead of ``(n,)``; ONNX says ``(n,)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..ir import Graph, Node, TensorType, Value
from .registry import override


def _run(body: Graph, args: list[Any], scope: Mapping[Value, Any]) -> list[Any]:
    from ..interpreter import run_subgraph

    return run_subgraph(body, dict(zip(body.inputs, args, strict=False)), scope)


def _if(node: Node, inputs: list[Any], scope: Mapping[Value, Any]) -> list[Any]:
    cond = bool(np.asarray(inputs[0]).reshape(-1)[0])
    branch: Graph = node.attrs["then_branch" if cond else "else_branch"]
    return _run(branch, [], scope)


def _stack(items: list[Any], out_type: Any) -> np.ndarray:
    if items:
        return np.stack([np.asarray(x) for x in items])
    if isinstance(out_type, TensorType):
        shape = out_type.shape
        tail = [d if isinstance(d, int) else 0 for d in shape[1:]] if shape else []
        return np.zeros([0, *tail], dtype=out_type.dtype.numpy)
    return np.zeros([0], dtype=np.float32)


def _loop(node: Node, inputs: list[Any], scope: Mapping[Value, Any]) -> list[Any]:
    body: Graph = node.attrs["body"]
    trip = inputs[0] if inputs else None
    cond = inputs[1] if len(inputs) > 1 else None
    carried = list(inputs[2:])
    n_carried = len(carried)
    max_trip = None if trip is None else int(np.asarray(trip).reshape(-1)[0])
    keep_going = True if cond is None else bool(np.asarray(cond).reshape(-1)[0])
    scans: list[list[Any]] = [[] for _ in range(len(body.outputs) - 1 - n_carried)]
    i = 0
    while keep_going and (max_trip is None or i < max_trip):
        cond_in = np.array(keep_going) if cond is not None else np.array(True)
        outs = _run(body, [np.array(i, dtype=np.int64), cond_in, *carried], scope)
        if cond is not None:
            keep_going = bool(np.asarray(outs[0]).reshape(-1)[0])
        carried = list(outs[1 : 1 + n_carried])
        for k, x in enumerate(outs[1 + n_carried :]):
            scans[k].append(x)
        i += 1
    scan_types = [v.type for v in node.outputs[n_carried:]]
    return [*carried, *(_stack(s, t) for s, t in zip(scans, scan_types, strict=True))]


def _scan_core(
    body: Graph,
    states: list[Any],
    xs: list[np.ndarray],
    attrs: Mapping[str, Any],
    out_types: list[Any],
    scope: Mapping[Value, Any],
) -> list[Any]:
    n, m = len(states), len(xs)
    k = len(body.outputs) - n
    in_axes = list(attrs.get("scan_input_axes") or [0] * m)
    in_dirs = list(attrs.get("scan_input_directions") or attrs.get("directions") or [0] * m)
    out_axes = list(attrs.get("scan_output_axes") or [0] * k)
    out_dirs = list(attrs.get("scan_output_directions") or [0] * k)
    xs = [np.moveaxis(x, ax % x.ndim, 0) for x, ax in zip(xs, in_axes, strict=True)]
    steps = xs[0].shape[0] if xs else 0
    collected: list[list[Any]] = [[] for _ in range(k)]
    for t in range(steps):
        slices = [x[steps - 1 - t] if d else x[t] for x, d in zip(xs, in_dirs, strict=True)]
        outs = _run(body, [*states, *slices], scope)
        states = list(outs[:n])
        for j, y in enumerate(outs[n:]):
            collected[j].append(y)
    results: list[Any] = list(states)
    for j in range(k):
        items = collected[j][::-1] if out_dirs[j] else collected[j]
        stacked = _stack(items, out_types[j])
        axis = out_axes[j] % stacked.ndim if stacked.ndim else 0
        results.append(np.moveaxis(stacked, 0, axis))
    return results


def _scan(node: Node, inputs: list[Any], scope: Mapping[Value, Any]) -> list[Any]:
    body: Graph = node.attrs["body"]
    m = int(node.attrs["num_scan_inputs"])
    opset = node.graph.opset("") if node.graph is not None else None
    if opset is None or opset >= 9:
        n = len(inputs) - m
        out_types = [v.type for v in node.outputs[n:]]
        return _scan_core(body, list(inputs[:n]), [np.asarray(x) for x in inputs[n:]],
                          node.attrs, out_types, scope)
    # Scan-8: a leading batch axis on every input and output, optional sequence lengths.
    seq_lens, rest = inputs[0], inputs[1:]
    n = len(rest) - m
    batch = np.asarray(rest[0]).shape[0]
    per_batch = []
    for b in range(batch):
        xs = [np.asarray(x)[b] for x in rest[n:]]
        if seq_lens is not None:
            xs = [x[: int(np.asarray(seq_lens)[b])] for x in xs]
        per_batch.append(
            _scan_core(body, [np.asarray(s)[b] for s in rest[:n]], xs, node.attrs,
                       [None] * (len(body.outputs) - n), scope)
        )
    return [np.stack([r[i] for r in per_batch]) for i in range(len(node.outputs))]


override("If", category="opaque", reference=_if)
override("Loop", category="opaque", reference=_loop)
override("Scan", category="opaque", reference=_scan)


# Optionals are represented at run time by the value itself, or None when empty.
def _optional(node: Node, inputs: list[Any], scope: Mapping[Value, Any]) -> list[Any]:
    return [inputs[0] if inputs else None]


def _optional_has_element(node: Node, inputs: list[Any], scope: Mapping[Value, Any]) -> list[Any]:
    return [np.array(bool(inputs) and inputs[0] is not None)]


def _optional_get_element(node: Node, inputs: list[Any], scope: Mapping[Value, Any]) -> list[Any]:
    if inputs[0] is None:
        raise ValueError(f"OptionalGetElement node {node.name!r}: the optional is empty")
    return [inputs[0]]


override("Optional", category="opaque", reference=_optional)
override("OptionalHasElement", category="opaque", reference=_optional_has_element)
override("OptionalGetElement", category="opaque", reference=_optional_get_element)
