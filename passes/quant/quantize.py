"""The ``quantize_int8`` pass: calibrate the float model on the user's data, put its layers
into int8 QDQ form, measure the accuracy, and (with ``max_drop``) keep the most sensitive
layers in float until the user's bound holds.

Steps (`quantize_graph`):

1. layers: every Conv/Gemm/MatMul/MatMulAdd with constant weights (`layers.find_layers`),
   minus ``exclude``;
2. calibration: the float graph runs on the calibration samples (reference kernels); an
   observer per layer activation collects statistics (`calibrate.collect_ranges`) and gives
   its range for the activation grid (uint8 asymmetric or int8 symmetric);
3. evaluation: the fp32 and the int8 (QDQ) graphs run on the first ``eval_samples`` samples;
   per layer the accumulated and local errors go into the `report.Int8Report`;
4. automatic mode (``max_drop``): while the output error (or the metric drop) exceeds the
   bound, the layer with the lowest local SQNR goes back to float;
5. the graph is rewritten in place (`insert.insert_qdq`); ``lower_qdq`` then turns the QDQ
   patterns into integer ops.

The pass does nothing without the ``int8`` option (an `Int8Config`), and nothing on a graph
without float layers (so running it twice is harmless). The report is stored in
``graph.meta["int8_report"]``.
"""

from __future__ import annotations

import itertools
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from lepton_compiler.errors import LeptonError
from lepton_compiler.interpreter import run_graph, run_node
from lepton_compiler.ir import Graph, TensorType, Value
from lepton_compiler.pass_manager import Pass, PassContext, PassResult, register_pass
from lepton_compiler.quantization import Int8Config
from lepton_compiler.specialize import clone_graph

from .insert import insert_qdq
from .layers import Layer, as_layer, find_layers
from .report import Int8Report, LayerRow, cosine, relative_error, run_capture, sqnr_db
from .scheme import GRIDS, ActivationParams, activation_params, quantize_bias, quantize_weights


def _is_paths(src: Any) -> bool:
    if isinstance(src, (str, os.PathLike)):
        return True
    return (
        isinstance(src, (list, tuple))
        and len(src) > 0
        and all(isinstance(p, (str, os.PathLike)) for p in src)
    )


def _paths(src: Any) -> list[str | os.PathLike[str]] | None:
    """The calibration files named by `src`, or None when `src` holds samples."""
    if not _is_paths(src):
        return None
    return [src] if isinstance(src, (str, os.PathLike)) else list(src)


def _input_shapes(graph: Graph) -> dict[str, list[Any] | None]:
    return {v.name: (list(v.shape) if v.shape is not None else None) for v in graph.inputs}


def calibration_samples(config: Int8Config, graph: Graph) -> Iterator[Mapping[str, Any]]:
    """The calibration samples as input dicts (files are read lazily, one sample at a time)."""
    src = config.calibration
    paths = _paths(src)
    if paths is not None:
        from .data import load_calibration_data

        shapes = _input_shapes(graph)
        dtypes = {
            v.name: v.type.dtype.numpy for v in graph.inputs if isinstance(v.type, TensorType)
        }
        names = [v.name for v in graph.inputs]
        return iter(load_calibration_data(paths, names, shapes, input_dtypes=dtypes))
    if isinstance(src, Mapping):
        return iter([src])
    try:
        return iter(src)  # type: ignore[arg-type]
    except TypeError:
        raise LeptonError(
            "Int8Config.calibration must be input dicts or .npz/.npy paths, got "
            f"{type(src).__name__}"
        ) from None


class _Recorder:
    """Passes samples through while keeping the first `keep` of them."""

    def __init__(self, source: Iterator[Mapping[str, Any]], keep: int) -> None:
        self.source, self.keep, self.kept, self.seen = source, keep, [], 0

    def __iter__(self) -> Iterator[Mapping[str, Any]]:
        for sample in self.source:
            self.seen += 1
            if len(self.kept) < self.keep:
                self.kept.append(sample)
            yield sample


def _fake_quant(x: np.ndarray, p: ActivationParams) -> np.ndarray:
    qmin, qmax = GRIDS[str(p.dtype)]
    zp = float(p.zero_point)
    q = np.clip(np.rint(x / p.scale) + zp, qmin, qmax)
    return ((q - zp) * p.scale).astype(np.float32)


def _local_sqnr(
    layer: Layer, x: np.ndarray, y: np.ndarray, p: ActivationParams, per_channel: bool
) -> float:
    """SQNR of the layer computed alone from fake-quantized operands, against its fp32
    output."""
    node = layer.node
    w = np.asarray(layer.weight.const, np.float32)
    axis = layer.weight_axis
    wq, ws = quantize_weights(w, axis if per_channel else None)
    shape = [1] * w.ndim
    shape[axis] = -1
    env: dict[Value, Any] = {layer.activation: _fake_quant(x, p)}
    env[layer.weight] = wq.astype(np.float32) * (ws.reshape(shape) if ws.ndim else ws)
    if len(node.inputs) > 2 and node.inputs[2] is not None:
        b = node.inputs[2]
        bc = np.asarray(b.const)
        bq = quantize_bias(bc, p.scale, ws) if layer.has_bias else None
        env[b] = bc if bq is None else (bq[0] * bq[1]).reshape(bc.shape).astype(np.float32)
    for v in node.inputs:
        if v is not None and v not in env:
            env[v] = v.const
    out = run_node(node, env)[0]
    return sqnr_db(y, out)


class _Evaluator:
    """Runs candidate int8 graphs on the evaluation samples and compares them with fp32."""

    def __init__(
        self,
        float_graph: Graph,
        samples: Sequence[Mapping[str, Any]],
        config: Int8Config,
        params: Mapping[str, ActivationParams],
    ) -> None:
        self.float_graph, self.samples, self.config, self.params = (
            float_graph,
            samples,
            config,
            params,
        )
        self.outputs = [v.name for v in float_graph.outputs]
        self.float_out = [run_graph(float_graph, s) for s in samples]
        self.metric_fp32 = (
            config.metric(lambda f: run_graph(float_graph, f))
            if config.metric is not None
            else None
        )

    def build(self, names: Sequence[str]) -> Graph:
        """A QDQ copy of the float graph with the named layers quantized."""
        g = clone_graph(self.float_graph)
        layers = [as_layer(n) for n in g if n.name in set(names)]
        insert_qdq(
            g, [lay for lay in layers if lay is not None], self.params, self.config.per_channel
        )
        return g

    def error(self, g: Graph) -> tuple[float, float, float | None]:
        """(relative output error, output cosine, metric) of an int8 graph."""
        ref, test = [], []
        for s, f in zip(self.samples, self.float_out, strict=True):
            out = run_graph(g, s)
            for k in self.outputs:
                ref.append(np.asarray(f[k], np.float64))
                test.append(np.asarray(out[k], np.float64))
        cos = cosine(
            np.concatenate([r.reshape(-1) for r in ref]),
            np.concatenate([t.reshape(-1) for t in test]),
        )
        metric = (
            self.config.metric(lambda feeds: run_graph(g, feeds))
            if self.config.metric is not None
            else None
        )
        return relative_error(ref, test), cos, metric

    def within(self, err: float, metric: float | None) -> bool:
        bound = float(self.config.max_drop or 0.0)
        if metric is not None and self.metric_fp32 is not None:
            return self.metric_fp32 - metric <= bound
        return err <= bound


def _rows(
    float_graph: Graph,
    q_graph: Graph,
    layers: Sequence[Layer],
    samples: Sequence[Mapping[str, Any]],
    params: Mapping[str, ActivationParams],
    per_channel: bool,
    local_known: Mapping[str, float] | None = None,
) -> list[LayerRow]:
    outs = [lay.node.output.name for lay in layers]
    ins = [lay.activation.name for lay in layers]
    acc: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {n: [] for n in outs}
    local: dict[str, list[float]] = {n: [] for n in outs}
    for s in samples:
        f = run_capture(float_graph, s, [*outs, *ins])
        q = run_capture(q_graph, s, outs)
        for lay in layers:
            name = lay.node.output.name
            acc[name].append((f[name], q[name]))
            if local_known is not None:
                continue
            x = f[lay.activation.name]
            local[name].append(
                _local_sqnr(lay, x, f[name], params[lay.activation.name], per_channel)
            )
    rows = []
    for lay in layers:
        name = lay.node.output.name
        ref = np.concatenate([a.reshape(-1) for a, _ in acc[name]])
        test = np.concatenate([b.reshape(-1) for _, b in acc[name]])
        vals = [v for v in local[name] if np.isfinite(v)] or local[name]
        if local_known is not None:
            vals = [local_known[lay.node.name]]
        rows.append(
            LayerRow(
                lay.node.name,
                lay.node.op,
                sqnr_db(ref, test),
                cosine(ref, test),
                float(np.mean(vals)),
            )
        )
    return rows


def quantize_graph(
    graph: Graph,
    config: Int8Config,
    target: Mapping[str, Any] | None = None,
    progress: bool = False,
) -> Int8Report | None:
    """Quantize `graph` in place (see the module docstring); None when it has no float
    layers."""
    from .calibrate import collect_ranges

    found = find_layers(graph)
    if not found:
        return None
    act = config.activation_type(target)
    report = Int8Report(config.method, act, config.per_channel, 0)
    layers = []
    for lay in found:
        if config.excludes(lay.node.name, lay.node.op):
            report.excluded.append((lay.node.name, "excluded by the configuration"))
        elif lay.grouped and not config.grouped:
            report.excluded.append((lay.node.name, "grouped convolution (grouped=False)"))
        else:
            layers.append(lay)
    values = list(dict.fromkeys(lay.activation.name for lay in layers))
    recorder = _Recorder(calibration_samples(config, graph), int(config.eval_samples))
    show = bool(progress if config.progress is None else config.progress)
    limit = int(config.samples)
    src = config.calibration
    paths = _paths(src)
    if paths is not None:
        from .data import count_samples

        limit = min(
            limit, count_samples(paths, [v.name for v in graph.inputs], _input_shapes(graph))
        )
    elif hasattr(src, "__len__"):
        limit = max(1, min(limit, len(src)))  # type: ignore[arg-type]
    observers = collect_ranges(
        graph,
        itertools.islice(recorder, int(config.samples)),
        values,
        method=config.method,
        percentile=config.percentile,
        num_bins=config.num_bins,
        progress=show,
        limit=limit,
    )
    report.samples = recorder.seen
    qmin, qmax = GRIDS[act]
    params = {
        name: activation_params(*obs.range(act == "int8", qmin, qmax), act)
        for name, obs in observers.items()
    }
    if not layers:
        return report

    evaluator = _Evaluator(clone_graph(graph), recorder.kept, config, params)
    float_graph = evaluator.float_graph
    f_layers = [
        lay
        for n in float_graph
        if (lay := as_layer(n)) is not None and lay.node.name in {x.node.name for x in layers}
    ]
    chosen = [lay.node.name for lay in f_layers]
    q_graph = evaluator.build(chosen)
    if show:
        print(
            f"lepton: measuring int8 accuracy on {len(recorder.kept)} samples...",
            file=sys.stderr,
            flush=True,
        )
    report.layers = _rows(float_graph, q_graph, f_layers, recorder.kept, params, config.per_channel)
    err, cos, metric = evaluator.error(q_graph)
    if config.max_drop is not None:
        order = [r.name for r in sorted(report.layers, key=lambda r: r.local_sqnr_db)]
        kept_float: list[str] = []
        while not evaluator.within(err, metric) and order:
            name = order.pop(0)
            kept_float.append(name)
            chosen.remove(name)
            q_graph = evaluator.build(chosen)
            err, cos, metric = evaluator.error(q_graph)
            report.steps.append(
                f"kept {name} in fp32: output error {err:.4f}"
                + (f", metric {metric:.4f}" if metric is not None else "")
            )
        if kept_float:
            local = {r.name: r.local_sqnr_db for r in report.layers}
            report.layers = _rows(
                float_graph, q_graph, f_layers, recorder.kept, params, config.per_channel, local
            )
        for r in report.layers:
            if r.name in kept_float:
                r.quantized = False
                report.excluded.append((r.name, "most sensitive (max_drop)"))
        if not evaluator.within(err, metric):
            report.steps.append("max_drop is not met even with every layer in fp32")
    report.output_error, report.output_cosine = err, cos
    report.metric_fp32, report.metric_int8 = evaluator.metric_fp32, metric
    final = [lay for lay in layers if lay.node.name in set(chosen)]
    insert_qdq(graph, final, params, config.per_channel)
    return report


@register_pass
class QuantizeInt8Pass(Pass):
    """Calibrate on the int8 option's data and put Conv/Gemm/MatMul layers into int8 QDQ form
    (per-layer accuracy report, automatic fp32 fallback for sensitive layers)."""

    name = "quantize_int8"

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        config = ctx.option("int8")
        if config is None:
            return PassResult(graph, False)
        if not isinstance(config, Int8Config):
            raise LeptonError(f"the int8 option must be an Int8Config, got {type(config).__name__}")
        report = quantize_graph(graph, config, ctx.target, bool(ctx.option("progress", False)))
        if report is None:
            return PassResult(graph, False)
        graph.meta["int8_report"] = report
        return PassResult(graph, report.quantized > 0)
