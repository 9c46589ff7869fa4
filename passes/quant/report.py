"""The int8 accuracy report: per layer, how far int8 activations are from fp32 ones, and which
layer is to blame.

Two measures per layer, on the evaluation samples:

- *accumulated*: the layer's output in the int8 model against the fp32 model (SQNR in dB and
  cosine similarity) — what the user gets, errors of earlier layers included;
- *local*: the layer alone quantized — fp32 inputs fake-quantized with the layer's own
  parameters, weights and bias as quantized — against its fp32 output. This isolates the
  layer's own sensitivity, so a layer that is hard to quantize stands out even deep in the
  network; the report's `worst` layer is the one with the lowest local SQNR.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lepton_compiler.interpreter import run_node
from lepton_compiler.ir import Graph, Value


def sqnr_db(ref: np.ndarray, test: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio in dB (inf when equal)."""
    ref = np.asarray(ref, np.float64)
    noise = float(np.sum((ref - np.asarray(test, np.float64)) ** 2))
    signal = float(np.sum(ref**2))
    if noise == 0.0:
        return math.inf
    if signal == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two tensors (1.0 for two all-zero tensors)."""
    a = np.asarray(a, np.float64).reshape(-1)
    b = np.asarray(b, np.float64).reshape(-1)
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 and nb == 0.0:
        return 1.0
    if na == 0.0 or nb == 0.0:
        return 0.0
    return float(np.dot(a, b) / (na * nb))


def relative_error(ref: Sequence[np.ndarray], test: Sequence[np.ndarray]) -> float:
    """``‖test − ref‖ / ‖ref‖`` over a list of tensor pairs."""
    num = sum(
        float(np.sum((np.asarray(t, np.float64) - np.asarray(r, np.float64)) ** 2))
        for r, t in zip(ref, test, strict=True)
    )
    den = sum(float(np.sum(np.asarray(r, np.float64) ** 2)) for r in ref)
    return math.sqrt(num / den) if den > 0 else math.sqrt(num)


@dataclass
class LayerRow:
    """One quantized (or excluded) layer."""

    name: str
    op: str
    sqnr_db: float
    cosine: float
    local_sqnr_db: float
    quantized: bool = True


@dataclass
class Int8Report:
    """What int8 quantization did and how accurate the result is."""

    method: str
    activations: str
    per_channel: bool
    samples: int
    layers: list[LayerRow] = field(default_factory=list)
    excluded: list[tuple[str, str]] = field(default_factory=list)  # (name, reason)
    output_error: float = 0.0
    output_cosine: float = 1.0
    metric_fp32: float | None = None
    metric_int8: float | None = None
    steps: list[str] = field(default_factory=list)

    @property
    def quantized(self) -> int:
        """Number of int8 layers."""
        return sum(1 for r in self.layers if r.quantized)

    def worst(self) -> LayerRow | None:
        """The quantized layer with the lowest local SQNR (the most sensitive one)."""
        rows = [r for r in self.layers if r.quantized]
        return min(rows, key=lambda r: r.local_sqnr_db) if rows else None

    def summary(self) -> str:
        """One line for compile reports."""
        worst = self.worst()
        text = (
            f"int8: {self.quantized} of {len(self.layers)} layers quantized "
            f"({self.method} calibration on {self.samples} samples, {self.activations} "
            f"activations, {'per-channel' if self.per_channel else 'per-tensor'} weights); "
            f"output cosine {self.output_cosine:.5f}, relative error "
            f"{self.output_error:.4f}"
        )
        if self.metric_fp32 is not None and self.metric_int8 is not None:
            text += f"; metric {self.metric_fp32:.4f} fp32 -> {self.metric_int8:.4f} int8"
        if worst is not None:
            text += f"; most sensitive layer {worst.name} ({worst.local_sqnr_db:.1f} dB alone)"
        return text

    def format(self, limit: int | None = None) -> str:
        """A readable table, most sensitive layers first."""
        rows = sorted(self.layers, key=lambda r: r.local_sqnr_db)[:limit]
        width = max([len(r.name) for r in rows] + [5])
        lines = [
            self.summary(),
            "",
            f"{'layer':<{width}}  {'op':<16} {'alone dB':>9} {'in model dB':>12} "
            f"{'cosine':>9}  state",
        ]
        for r in rows:
            state = "int8" if r.quantized else "fp32 (excluded)"
            lines.append(
                f"{r.name:<{width}}  {r.op:<16} {r.local_sqnr_db:>9.2f} "
                f"{r.sqnr_db:>12.2f} {r.cosine:>9.5f}  {state}"
            )
        for name, reason in self.excluded:
            lines.append(f"excluded {name}: {reason}")
        lines += self.steps
        return "\n".join(lines)


def run_capture(graph: Graph, feeds: Mapping[str, Any], names: Iterable[str]) -> dict[str, Any]:
    """Run `graph` with the reference kernels and keep the values named in `names` (and the
    graph outputs, under their names)."""
    wanted = set(names) | {v.name for v in graph.outputs}
    env: dict[Value, Any] = {v: v.const for v in graph.initializers.values()}
    for v in graph.inputs:
        env[v] = np.asarray(feeds[v.name])
    kept = {v.name: env[v] for v in graph.inputs if v.name in wanted}
    nodes = graph.nodes
    last: dict[Value, int] = {}
    for i, node in enumerate(nodes):
        for v in node.inputs:
            if v is not None:
                last[v] = i
    for i, node in enumerate(nodes):
        for v, r in zip(node.outputs, run_node(node, env), strict=False):
            env[v] = r
            if v.name in wanted:
                kept[v.name] = r
        for v in node.inputs:
            if v is not None and last.get(v) == i and v.const is None:
                env.pop(v, None)
    return kept
