"""Graph-walking helpers every backend's executor shares: which nodes are free views, a lone
node wrapped as a one-node fused group, value lifetimes, FLOP counts, labels for reports.
Nothing here imports a code generator."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from lepton_compiler.ir import Graph, Node, TensorType, Value

__all__ = [
    "FLOP_OPS", "VIEW_OPS", "by_count", "copy_out", "label", "liveness", "model_flops",
    "profile_rows", "static_shape", "view_shape", "wrap_single",
]  # fmt: skip

#: Ops `model_flops` counts.
FLOP_OPS = ("Conv", "MatMul", "Gemm", "lepton.QConv", "lepton.QMatMul")
#: Ops whose output is the input's memory under another shape (free in every executor).
VIEW_OPS = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity"})


def view_shape(node: Node) -> tuple[int, ...] | None:
    """The static output shape of a view op (same element count, same dtype), else None."""
    if node.op not in VIEW_OPS or len(node.outputs) != 1 or not node.inputs:
        return None
    src, out = node.inputs[0], node.outputs[0]
    shape_in, shape_out = static_shape(src), static_shape(out)
    if shape_in is None or shape_out is None or math.prod(shape_in) != math.prod(shape_out):
        return None
    if not isinstance(src.type, TensorType) or not isinstance(out.type, TensorType):
        return None
    if src.type.dtype != out.type.dtype:
        return None
    return shape_out


def wrap_single(node: Node) -> tuple[Node, list[Value]]:
    """A detached one-node `lepton.Fused` group around a copy of `node`.

    Everything in it is new (inputs included), so the graph's values gain no users."""
    body = Graph(name=f"{node.name}_body")
    inner_inputs: list[Value | None] = []
    outer_inputs: list[Value] = []
    group_inputs: list[Value] = []
    for k, v in enumerate(node.inputs):
        if v is None:
            inner_inputs.append(None)
            continue
        bv = Value(f"{node.name}_in{k}", v.type)
        body.add_input(bv)
        inner_inputs.append(bv)
        outer_inputs.append(Value(f"{node.name}_arg{k}", v.type, const=v.const))
        group_inputs.append(v)
    outs = [Value(f"{node.name}_out{k}", o.type) for k, o in enumerate(node.outputs)]
    inner = Node(node.op, inner_inputs, dict(node.attrs), outputs=outs, name=node.name)
    body.append(inner)
    body.outputs = list(outs)
    fused = Node(
        "lepton.Fused",
        outer_inputs,
        {"body": body, "anchor": node.op, "epilogue": []},
        outputs=[Value(f"{node.name}_fused{k}", o.type) for k, o in enumerate(node.outputs)],
        name=f"{node.name}_single",
    )
    return fused, group_inputs


def liveness(graph: Graph) -> tuple[dict[Value, int], set[Value]]:
    last_use: dict[Value, int] = {}
    for i, node in enumerate(graph.nodes):
        for v in [*node.inputs, *node.outer_values()]:
            if v is not None:
                last_use[v] = i
    keep = set(graph.outputs) | set(graph.initializers.values())
    return last_use, keep


def static_shape(v: Value | None) -> tuple[int, ...] | None:
    if v is None or not isinstance(v.type, TensorType) or v.type.shape is None:
        return None
    if not all(isinstance(d, int) for d in v.type.shape):
        return None
    return tuple(int(d) for d in v.type.shape)  # type: ignore[arg-type]


def label(node: Node) -> str:
    if node.op == "lepton.Fused":
        epi = node.attrs.get("epilogue", [])
        return "+".join([str(node.attrs.get("anchor")), *map(str, epi)])
    return node.op


def by_count(item: tuple[str, int]) -> tuple[int, str]:
    return (-item[1], item[0])


def copy_out(x: Any) -> Any:
    """A graph output the caller may keep: arrays are copied (they may view kernel buffers
    that the next run overwrites)."""
    if isinstance(x, (np.ndarray, np.generic)):
        return np.array(x, copy=True)
    return x


def model_flops(node: Node) -> int:
    """FLOPs of the Conv/MatMul/Gemm ops in `node` (or in its body, for a fused group), from
    static shapes; 0 where a shape is unknown. The integer ops (``lepton.QConv``,
    ``lepton.QMatMul``) count their multiply-adds the same way (int8 operations)."""
    if node.op == "lepton.Fused":
        return sum(model_flops(n) for n in node.attrs["body"])
    if node.op not in FLOP_OPS or not node.outputs:
        return 0
    out = static_shape(node.outputs[0])
    if out is None:
        return 0
    if node.op in ("Conv", "lepton.QConv"):
        w_index = 3 if node.op == "lepton.QConv" else 1
        w = static_shape(node.inputs[w_index] if len(node.inputs) > w_index else None)
        return 2 * math.prod(out) * math.prod(w[1:]) if w is not None and len(w) >= 2 else 0
    a = static_shape(node.inputs[0] if node.inputs else None)
    if a is None or not a:
        return 0
    k = a[-1]
    if node.op == "Gemm" and node.attrs.get("transA"):
        k = a[0]
    return 2 * math.prod(out) * k



def profile_rows(steps: Any, per_step: list[list[float]], backend: str) -> list[dict[str, Any]]:
    """An executor's ``profile`` table from per-step timings (seconds, one list per step,
    one entry per run): one row per step kind (``label``: the group's ops, ``kind``:
    ``<backend>:<family>``, ``view`` or ``reference``) with ``count`` (steps per run),
    ``ms`` (median total per run) and ``share`` of the summed step time, slowest first.
    `steps` have ``node``, ``kernel`` (with ``family``, or None) and ``view_shape``."""
    repeat = len(per_step[0]) if per_step else 0
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for step, times in zip(steps, per_step, strict=True):
        kind = (
            "view"
            if step.view_shape is not None
            else f"{backend}:{step.kernel.family}"
            if step.kernel is not None
            else "reference"
        )
        row = rows.setdefault(
            (label(step.node), kind),
            {"label": label(step.node), "kind": kind, "count": 0, "runs": [0.0] * repeat},
        )
        row["count"] += 1
        row["runs"] = [a + b for a, b in zip(row["runs"], times, strict=True)]
    out = [{**row, "ms": float(np.median(row.pop("runs"))) * 1e3} for row in rows.values()]
    total = sum(r["ms"] for r in out) or 1.0
    for r in out:
        r["share"] = r["ms"] / total
    return sorted(out, key=lambda r: -r["ms"])
