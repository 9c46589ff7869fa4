"""Calibration: run the float model on sample inputs and observe the values to quantize.

`collect_ranges` runs the IR graph with the reference kernels, one input dict at a time,
and feeds every requested value (a graph input, a constant, a node output, or a value inside a
`lepton.Fused` body) to an observer of the chosen method (see `observers.py`). The node loop
is the interpreter's: each intermediate result is dropped after its last use, and observers
keep bounded state, so memory does not grow with the calibration set.

It belongs before the quantization passes: they read the observers' ranges to choose scales
and zero points.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from lepton_compiler.errors import InputError, LeptonError
from lepton_compiler.interpreter import run_node
from lepton_compiler.ir import Graph, Node, TensorType, Value

from .observers import Observer, make_observer

#: Without tqdm, a progress line is printed about this many times over a run of known length.
_PLAIN_LINES = 10


def collect_ranges(
    graph: Graph,
    data: Iterable[Mapping[str, np.ndarray]],
    values: Sequence[str],
    *,
    method: str = "minmax",
    percentile: float = 99.999,
    num_bins: int = 2048,
    progress: bool = False,
    limit: int | None = None,
) -> dict[str, Observer]:
    """Observe `values` while running the float `graph` on each input dict of `data`.

    Args:
        graph: the float model.
        data: input dicts, one per calibration sample (or batch), by graph input name.
        values: names of the values to observe: graph inputs, constants, node outputs, or
            values inside `lepton.Fused` bodies. Constants are observed once.
        method: the observer kind, one of `observers.METHODS`.
        percentile: for ``method="percentile"``.
        num_bins: histogram bins for the histogram methods.
        progress: show a progress bar on stderr (tqdm when installed, else plain lines).
        limit: use at most this many input dicts.

    Returns:
        One observer per requested name.

    Raises:
        LeptonError: an unknown value name or method, a bad `limit`, or empty `data`.
        InputError: an input dict has missing or unknown names, or an array of the wrong
            rank, shape or dtype (the message names the sample index).
    """
    if limit is not None and limit < 1:
        raise LeptonError(f"the calibration limit must be at least 1, got {limit}")
    targets = _resolve(graph, values)
    observers = {
        name: make_observer(method, percentile=percentile, num_bins=num_bins) for name in targets
    }
    watch = {v: observers[name] for name, v in targets.items()}
    runner = _Runner(graph, watch)
    bar = _Progress(progress, _length(data, limit))
    seen = 0
    try:
        for index, sample in enumerate(data):
            if limit is not None and index >= limit:
                break
            feeds = _check_sample(graph, sample, index)
            if index == 0:
                for v, obs in watch.items():
                    if v.const is not None:
                        obs.update(np.asarray(v.const))
            runner.run(feeds)
            seen += 1
            bar.step()
    finally:
        bar.close()
    if seen == 0:
        raise LeptonError("calibration data is empty")
    return observers


# -- values -------------------------------------------------------------------------------------


def _resolve(graph: Graph, names: Sequence[str]) -> dict[str, Value]:
    """The values named `names` (deduplicated, in order)."""
    known = dict(_all_values(graph))
    unknown = [n for n in names if n not in known]
    if unknown:
        shown = ", ".join(repr(n) for n in unknown[:10])
        more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
        raise LeptonError(
            f"cannot calibrate unknown value name(s) {shown}{more}: not a graph input, "
            f"constant or node output of graph {graph.name!r}"
        )
    return {n: known[n] for n in dict.fromkeys(names)}


def _all_values(graph: Graph) -> Iterator[tuple[str, Value]]:
    """Every value of `graph` and of the `lepton.Fused` bodies in it, by name."""
    for v in graph.values():
        yield v.name, v
    for node in graph:
        body = _fused_body(node)
        if body is not None:
            yield from _all_values(body)


def _fused_body(node: Node) -> Graph | None:
    body = node.attrs.get("body") if node.op == "lepton.Fused" else None
    return body if isinstance(body, Graph) else None


# -- running ------------------------------------------------------------------------------------


class _Runner:
    """The interpreter's node loop over one graph, observing the watched values.

    A `lepton.Fused` node whose body holds a watched value is run through its body, so the
    values inside are seen too; every other node runs its reference kernel.
    """

    def __init__(self, graph: Graph, watch: Mapping[Value, Observer]) -> None:
        self.graph = graph
        self.watch = watch
        self.nodes = graph.nodes
        last_use: dict[Value, int] = {}
        for i, node in enumerate(self.nodes):
            for v in [*node.inputs, *node.outer_values()]:
                if v is not None:
                    last_use[v] = i
        self.last_use = last_use
        self.keep = set(graph.outputs) | set(graph.initializers.values())
        self.bodies: dict[Node, _Runner] = {}
        for node in self.nodes:
            body = _fused_body(node)
            if body is not None and any(v in watch for _, v in _all_values(body)):
                self.bodies[node] = _Runner(body, watch)

    def run(self, bound: Mapping[Value, Any], scope: Mapping[Value, Any] | None = None) -> list:
        """Run with the graph inputs `bound`, outer values from `scope`; returns the outputs."""
        env: dict[Value, Any] = dict(scope or {})
        env.update(bound)
        for v, x in bound.items():
            self._observe(v, x)
        for c in self.graph.initializers.values():
            env[c] = c.const
        for i, node in enumerate(self.nodes):
            inner = self.bodies.get(node)
            if inner is None:
                outs = run_node(node, env)
            else:
                args = [None if v is None else env[v] for v in node.inputs]
                outs = inner.run(dict(zip(inner.graph.inputs, args, strict=True)), env)
            for v, r in zip(node.outputs, outs, strict=False):
                self._observe(v, r)
                if v in self.last_use or v in self.keep:
                    env[v] = r
            for v in node.inputs:
                if v is not None and self.last_use.get(v) == i and v not in self.keep:
                    env.pop(v, None)
        return [env[v] for v in self.graph.outputs]

    def _observe(self, v: Value, x: Any) -> None:
        obs = self.watch.get(v)
        if obs is None:
            return
        if not isinstance(x, np.ndarray | np.generic):
            raise LeptonError(
                f"cannot calibrate {v.name!r}: it holds a {type(x).__name__}, not a tensor"
            )
        obs.update(np.asarray(x))


# -- inputs -------------------------------------------------------------------------------------


def _check_sample(graph: Graph, sample: Any, index: int) -> dict[Value, Any]:
    """Bind one input dict to the graph inputs, checking names, ranks, shapes and dtypes."""
    where = f"calibration sample {index}"
    expected = ", ".join(f"{v.name}: {v.type}" for v in graph.inputs) or "(none)"
    if not isinstance(sample, Mapping):
        raise InputError(
            f"{where} is a {type(sample).__name__}, expected a dict of input name -> array; "
            f"the model's inputs are {expected}"
        )
    names = {v.name for v in graph.inputs}
    unknown = [k for k in sample if k not in names]
    missing = [v.name for v in graph.inputs if v.name not in sample]
    if unknown or missing:
        parts = [f"unknown input name(s) {unknown}"] if unknown else []
        parts += [f"missing input(s) {missing}"] if missing else []
        raise InputError(f"{where}: {'; '.join(parts)}; the model's inputs are {expected}")
    bound: dict[Value, Any] = {}
    sizes: dict[str, tuple[int, str]] = {}
    for v in graph.inputs:
        x = sample[v.name]
        if isinstance(v.type, TensorType):
            x = _check_array(v, v.type, x, where, sizes)
        bound[v] = x
    return bound


def _check_array(
    v: Value, t: TensorType, x: Any, where: str, sizes: dict[str, tuple[int, str]]
) -> np.ndarray:
    """`x` as an array of `t`'s dtype and shape; symbolic dims must agree across inputs."""
    if not isinstance(x, np.ndarray | np.generic):
        raise InputError(
            f"{where}: input {v.name!r} is a {type(x).__name__}, expected a NumPy array ({t})"
        )
    x = np.asarray(x)
    want = t.dtype.numpy
    if x.dtype != want:
        raise InputError(
            f"{where}: input {v.name!r} has dtype {x.dtype}, expected {want} ({t}); "
            f"convert with .astype(np.{want.name})"
        )
    if t.shape is None:
        return x
    if x.ndim != len(t.shape):
        raise InputError(
            f"{where}: input {v.name!r} has shape {x.shape} (rank {x.ndim}), expected rank "
            f"{len(t.shape)} ({t})"
        )
    for axis, (dim, got) in enumerate(zip(t.shape, x.shape, strict=True)):
        if isinstance(dim, int) and dim != got:
            raise InputError(
                f"{where}: input {v.name!r} has shape {x.shape}, expected {t}: dim {axis} "
                f"must be {dim}"
            )
        if isinstance(dim, str):
            size, first = sizes.setdefault(dim, (got, v.name))
            if size != got:
                raise InputError(
                    f"{where}: input {v.name!r} has shape {x.shape}, but dim {dim!r} is {size} "
                    f"in input {first!r}"
                )
    return x


# -- progress -----------------------------------------------------------------------------------


def _length(data: Iterable[Any], limit: int | None) -> int | None:
    """How many samples a run will see, when known."""
    try:
        n = len(data)  # type: ignore[arg-type]
    except TypeError:
        return limit
    return n if limit is None else min(n, limit)


class _Progress:
    """A tqdm bar on stderr, or plain lines when tqdm is not installed."""

    def __init__(self, enabled: bool, total: int | None) -> None:
        self.enabled = enabled
        self.total = total
        self.done = 0
        self.bar: Any = None
        if not enabled:
            return
        try:
            from tqdm import tqdm
        except ImportError:
            return
        self.bar = tqdm(total=total, desc="calibrating", unit="sample", file=sys.stderr)

    def step(self) -> None:
        self.done += 1
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(1)
            return
        every = max(1, (self.total or 100) // _PLAIN_LINES)
        if self.done == 1 or self.done % every == 0 or self.done == self.total:
            of = f"/{self.total}" if self.total else ""
            print(f"calibrating: {self.done}{of} samples", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
