"""Helpers for tests and pass developers: build models from text, run them, compare outputs.

A pass test reads best as: a tiny model written in ONNX's textual syntax, the pass, the exact
op list, then numeric equality against the reference interpreter or ONNX Runtime. This module
holds the pieces every such test needs, so that each test file stays a few lines per case::

    graph = graph_from_text('''
        <ir_version: 8, opset_import: ["" : 18]>
        g (float[N, 4] x) => (float[N, 4] y) { y = Relu(x) }
    ''')
    feeds = random_inputs(graph, batch=2)
    assert_outputs_close(run_reference(graph, feeds), run_onnxruntime(graph, feeds))

It imports `onnx` (the parser and the exporter need it) but never ONNX Runtime at import time:
`run_onnxruntime` imports it when called, so the module works where ORT is not installed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import onnx
import onnx.parser

from .errors import ModelLoadError
from .ir import DType, Graph, TensorType

__all__ = [
    "assert_outputs_close",
    "graph_from_text",
    "make_model",
    "model_from_text",
    "random_inputs",
    "run_onnxruntime",
    "run_reference",
]


def model_from_text(onnx_text: str) -> onnx.ModelProto:
    """Parse a model written in ONNX's textual syntax (`onnx.parser.parse_model`).

    When the text has no ``<...>`` model header, ``ir_version: 10`` and ai.onnx opset 18 are
    assumed, so a test may write just ``name (inputs) => (outputs) { ... }``.

    Args:
        onnx_text: the model text, e.g. ``'g (float[N] x) => (float[N] y) { y = Relu(x) }'``
            (with an optional ``<ir_version: 8, opset_import: ["" : 18]>`` header).

    Returns:
        The parsed model (not checked; `graph_from_text` runs the checker on import).

    Raises:
        ModelLoadError: the text does not parse; the message quotes the parser's complaint.
    """
    text = onnx_text.strip()
    if not text.startswith("<"):
        text = '<ir_version: 10, opset_import: ["" : 18]>\n' + text
    try:
        return onnx.parser.parse_model(text)
    except onnx.parser.ParseError as e:
        raise ModelLoadError(f"cannot parse the ONNX text: {e}") from e


def make_model(onnx_text: str) -> onnx.ModelProto:
    """Alias of `model_from_text`, kept for tests that read better with a verb."""
    return model_from_text(onnx_text)


def graph_from_text(onnx_text: str, **import_options: Any) -> Graph:
    """Parse ONNX text and import it into the IR without onnxsim (so the graph stays as written).

    Args:
        onnx_text: the model text (see `model_from_text`).
        **import_options: passed on to `import_model` (``simplify`` defaults to False).

    Returns:
        The imported top-level graph.
    """
    from .frontend.onnx import import_model

    import_options.setdefault("simplify", False)
    return import_model(model_from_text(onnx_text), **import_options)


def run_reference(graph: Graph, feeds: Mapping[str, Any]) -> dict[str, Any]:
    """Run a graph on the reference interpreter (each op's `reference` kernel).

    Args:
        graph: the graph to run.
        feeds: one array per graph input, by name.

    Returns:
        Every graph output by name.
    """
    from .interpreter import run_graph

    return run_graph(graph, feeds)


def run_onnxruntime(
    model_or_graph: Graph | onnx.ModelProto | bytes | str, feeds: Mapping[str, Any]
) -> dict[str, Any]:
    """Run a model with ONNX Runtime on its CPU execution provider.

    Args:
        model_or_graph: an IR `Graph` (exported first with `export_model`), a `ModelProto`,
            serialized bytes, or a path.
        feeds: one array per model input, by name.

    Returns:
        Every model output by name.
    """
    import onnxruntime as ort

    if isinstance(model_or_graph, Graph):
        from .export.onnx import export_model

        model_or_graph = export_model(model_or_graph)
    if isinstance(model_or_graph, onnx.ModelProto):
        model_or_graph = model_or_graph.SerializeToString()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model_or_graph, options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    results = session.run(names, dict(feeds))
    return dict(zip(names, results, strict=True))


def assert_outputs_close(
    actual: Mapping[str, Any],
    expected: Mapping[str, Any],
    rtol: float = 1e-5,
    atol: float = 1e-6,
) -> None:
    """Assert two output dicts hold the same names and (nearly) equal arrays.

    Shapes and dtype kinds must match exactly; floats are compared with ``rtol``/``atol``
    (NaNs equal each other), everything else exactly.

    Raises:
        AssertionError: naming the first output that differs, with its shape, the largest
            difference and where it is.
    """
    if set(actual) != set(expected):
        raise AssertionError(
            f"output names differ: got {sorted(actual)}, expected {sorted(expected)}"
        )
    for name in expected:
        a = np.asarray(actual[name])
        e = np.asarray(expected[name])
        if a.shape != e.shape:
            raise AssertionError(f"output {name!r}: shape {a.shape}, expected {e.shape}")
        if a.dtype.kind in "OUS" or e.dtype.kind in "OUS":
            if a.tolist() != e.tolist():
                raise AssertionError(f"output {name!r}: strings differ: {a!r} vs {e!r}")
            continue
        if a.dtype.kind != e.dtype.kind:
            raise AssertionError(f"output {name!r}: dtype {a.dtype}, expected {e.dtype}")
        if a.dtype.kind in "fc":
            a64, e64 = (
                a.astype(np.complex128 if a.dtype.kind == "c" else np.float64),
                e.astype(np.complex128 if e.dtype.kind == "c" else np.float64),
            )
            ok = np.isclose(a64, e64, rtol=rtol, atol=atol, equal_nan=True)
            if not ok.all():
                diff = np.where(ok, 0.0, np.abs(a64 - e64))
                where = np.unravel_index(int(np.argmax(diff)), diff.shape) if diff.ndim else ()
                raise AssertionError(
                    f"output {name!r} (shape {a.shape}): {int((~ok).sum())} of {ok.size} "
                    f"element(s) differ beyond rtol={rtol}, atol={atol}; largest difference "
                    f"{float(diff.max()):.6g} at {tuple(int(i) for i in where)}: "
                    f"got {a64[where]!r}, expected {e64[where]!r}"
                )
        elif not np.array_equal(a, e):
            bad = int(np.sum(a != e))
            raise AssertionError(f"output {name!r} (shape {a.shape}): {bad} element(s) differ")


def random_inputs(graph: Graph, seed: int = 0, batch: int = 1) -> dict[str, np.ndarray]:
    """Random arrays for every graph input, deterministic for a given seed.

    Symbolic dims become ``batch`` and unknown dims 1. Floats are standard normal, integers
    lie in [0, 10), booleans are random, strings are short words.

    Args:
        graph: the graph whose inputs to fill.
        seed: seed of NumPy's generator.
        batch: size given to every symbolic dim.

    Returns:
        One array per graph input, by name.

    Raises:
        ValueError: an input is not a tensor or its rank is unknown.
    """
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    for v in graph.inputs:
        t = v.type
        if not isinstance(t, TensorType) or t.shape is None:
            raise ValueError(
                f"input %{v.name} has type {t}; random_inputs needs a tensor of known rank"
            )
        shape = tuple(d if isinstance(d, int) else batch if isinstance(d, str) else 1
                      for d in t.shape)  # fmt: skip
        feeds[v.name] = _random_array(rng, t.dtype, shape)
    return feeds


def _random_array(rng: np.random.Generator, dtype: DType, shape: tuple[int, ...]) -> np.ndarray:
    if dtype is DType.STRING:
        words = np.array(["alpha", "beta", "gamma", "delta"], dtype=object)
        return words[rng.integers(0, len(words), size=shape)].astype(object)
    if dtype is DType.BOOL:
        return rng.integers(0, 2, size=shape).astype(bool)
    if dtype.is_integer:
        return rng.integers(0, 10, size=shape).astype(dtype.numpy)
    if dtype in (DType.COMPLEX64, DType.COMPLEX128):
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype.numpy)
    return rng.standard_normal(shape).astype(dtype.numpy)


def op_list(graph: Graph) -> list[str]:
    """The graph's op names in order (``"Conv"``, ``"lepton.Fused"``): what pass tests assert."""
    return [n.op for n in graph]


def assert_equivalent(
    before: Graph,
    after: Graph,
    inputs: Mapping[str, Any] | None = None,
    rtol: float = 1e-5,
    atol: float = 1e-6,
) -> None:
    """Assert a transformed graph verifies and computes what the original computed.

    Both graphs run on the reference interpreter with the same inputs (random ones from
    `before`'s signature when none are given); outputs are compared by position, so a pass may
    rename them.

    Raises:
        AssertionError: a verification problem, or an output that differs (named).
    """
    from .ir import verify

    verify(after)
    feeds = dict(inputs) if inputs is not None else random_inputs(before)
    a = run_reference(before, feeds)
    b = run_reference(after, feeds)
    assert len(a) == len(b), f"{len(a)} outputs before the pass, {len(b)} after"
    for (name, x), y in zip(a.items(), b.values(), strict=True):
        np.testing.assert_allclose(
            np.asarray(y), np.asarray(x), rtol=rtol, atol=atol, err_msg=f"output {name!r}"
        )
