"""`CompiledModel`: a compiled graph plus the executor that runs it, with checked inputs.

It is what `lepton_compiler.compile` returns and `lepton_compiler.load` restores. Its job is
to be hard to misuse: inputs are checked against the signature before anything runs, so a
wrong name, shape or dtype is one `InputError` that names the input and says what was expected,
never a failure deep inside a kernel.

Input conversion rules:

* NumPy arrays (and anything else with a dtype, via ``np.asarray``) must have exactly the
  signature's dtype; nothing is cast silently.
* Python scalars and (nested) lists or tuples are converted with ``np.asarray`` and then cast
  to the signature's dtype when that keeps their kind: bools to bool, integers to any integer
  or float type (if every value fits), floats to any float type. Anything else is an error.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, LeptonError
from ..ir import DType, Graph, TensorType, Value
from .report import CompileReport

#: Runs the model on checked inputs (by input name) and returns outputs by output name.
Executor = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a compiled model.

    Attributes:
        name: the input or output name.
        dtype: element type name (``"float32"``, ``"int64"``, ...); for sequence or optional
            values, their type in IR syntax (``"seq<float32[?]>"``).
        shape: one entry per axis: an int, a symbolic name such as ``"batch"`` (any size,
            equal across every input using the name), or None (any size); None when the rank
            is unknown.
    """

    name: str
    dtype: str
    shape: tuple[int | str | None, ...] | None

    @classmethod
    def of(cls, value: Value) -> TensorSpec:
        """The spec of an IR value."""
        t = value.type
        if isinstance(t, TensorType):
            return cls(value.name, str(t.dtype), None if t.shape is None else tuple(t.shape))
        return cls(value.name, "unknown" if t is None else str(t), None)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "name": self.name,
            "dtype": self.dtype,
            "shape": None if self.shape is None else list(self.shape),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TensorSpec:
        """Inverse of `to_dict`."""
        shape = data["shape"]
        return cls(str(data["name"]), str(data["dtype"]), None if shape is None else tuple(shape))

    def __str__(self) -> str:
        if self.shape is None:
            return f"{self.name}: {self.dtype}"
        dims = ",".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.name}: {self.dtype}[{dims}]"


class CompiledModel:
    """A compiled model, ready to run, benchmark and save.

    Attributes:
        backend: backend that built it.
        target: target string it was compiled for.
        opt_level: optimization level it was compiled with.
        report: what the compilation did (`CompileReport`).
        metadata: for a loaded artifact, its manifest (versions, creation time); else empty.
    """

    def __init__(
        self,
        graph: Graph,
        report: CompileReport,
        *,
        backend: str = "reference",
        target: str = "host",
        opt_level: int = 2,
        executor: Executor | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        self._graph = graph
        self.report = report
        self.backend = backend
        self.target = target
        self.opt_level = opt_level
        self.metadata: dict[str, Any] = dict(metadata or {})
        self._executor = executor or _reference_executor(graph)
        self._inputs = [TensorSpec.of(v) for v in graph.inputs]
        self._outputs = [TensorSpec.of(v) for v in graph.outputs]
        self._input_types = {v.name: v.type for v in graph.inputs}

    # -- introspection ------------------------------------------------------------------------
    @property
    def executor(self) -> Executor:
        """The callable that runs the graph (the backend's executor)."""
        return self._executor

    @property
    def graph(self) -> Graph:
        """The compiled IR graph (read it; editing it changes what `run` computes)."""
        return self._graph

    @property
    def name(self) -> str:
        """The model's name."""
        return self.report.model_name

    @property
    def input_signature(self) -> list[TensorSpec]:
        """The inputs `run` expects, in order."""
        return list(self._inputs)

    @property
    def output_signature(self) -> list[TensorSpec]:
        """The outputs `run` returns, in order."""
        return list(self._outputs)

    def __repr__(self) -> str:
        ins = ", ".join(str(s) for s in self._inputs)
        outs = ", ".join(str(s) for s in self._outputs)
        return (
            f"<CompiledModel {self.name!r} backend={self.backend} target={self.target} "
            f"O{self.opt_level} ({ins}) -> ({outs})>"
        )

    # -- running ------------------------------------------------------------------------------
    def run(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """Run the model.

        Args:
            inputs: one array per model input, by name (see the module docstring for which
                non-NumPy values are accepted).

        Returns:
            Every output by name, in signature order: NumPy arrays (a list of arrays for
            sequence outputs).

        Raises:
            InputError: an input name is unknown or missing, or an input's rank, size or dtype
                does not match the signature.
        """
        feeds = self.check_inputs(inputs)
        outputs = self._executor(feeds)
        return {s.name: _detach(outputs[s.name], self._graph) for s in self._outputs}

    def __call__(self, **inputs: Any) -> dict[str, Any]:
        """`run` with inputs given as keyword arguments: ``model(image=x)``."""
        return self.run(inputs)

    def check_inputs(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """Check inputs against the signature; return them converted to NumPy.

        Raises:
            InputError: the first problem found, naming the input and what was expected.
        """
        if not isinstance(inputs, Mapping):
            raise InputError(
                f"inputs must be a dict of input name -> array, got {type(inputs).__name__}; "
                f"the model's inputs are: {self._describe_inputs()}"
            )
        expected = {s.name for s in self._inputs}
        unknown = [k for k in inputs if k not in expected]
        if unknown:
            names = ", ".join(repr(k) for k in unknown)
            raise InputError(
                f"unknown input name(s) {names}; the model's inputs are: {self._describe_inputs()}"
            )
        missing = [s for s in self._inputs if s.name not in inputs]
        if missing:
            names = ", ".join(str(s) for s in missing)
            raise InputError(
                f"missing input(s) {names}; the model's inputs are: {self._describe_inputs()}"
            )
        feeds: dict[str, Any] = {}
        bound: dict[str, tuple[int, str]] = {}
        for spec in self._inputs:
            value = inputs[spec.name]
            t = self._input_types[spec.name]
            if not isinstance(t, TensorType):
                feeds[spec.name] = value  # sequences and optionals are passed through as given
                continue
            array = _as_array(spec, t.dtype, value)
            _check_shape(spec, array.shape, bound)
            feeds[spec.name] = array
        return feeds

    def _describe_inputs(self) -> str:
        return ", ".join(str(s) for s in self._inputs) or "(none)"

    def random_inputs(self, dim_size: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
        """Random inputs that fit the signature (symbolic and unknown dims set to `dim_size`).

        Floats are standard normal, integers 0 or 1, bools random, strings empty.

        Raises:
            InputError: an input is a sequence/optional, or its rank is unknown.
        """
        rng = np.random.default_rng(seed)
        feeds: dict[str, np.ndarray] = {}
        for spec in self._inputs:
            t = self._input_types[spec.name]
            if not isinstance(t, TensorType) or t.shape is None:
                raise InputError(
                    f"cannot make a random value for input {spec}: only tensors of known rank "
                    "can be generated; pass this input explicitly"
                )
            shape = tuple(d if isinstance(d, int) else dim_size for d in t.shape)
            feeds[spec.name] = _random_array(rng, t.dtype, shape)
        return feeds

    def benchmark(
        self, inputs: Mapping[str, Any] | None = None, warmup: int = 3, repeat: int = 20
    ) -> dict[str, float]:
        """Time `run`.

        Args:
            inputs: inputs to run on; random ones from the signature when None.
            warmup: untimed runs first.
            repeat: timed runs.

        Returns:
            ``median_ms``, ``p90_ms``, ``mean_ms``, ``min_ms``, ``max_ms`` and the run counts.

        Raises:
            InputError: the inputs do not match the signature.
            ValueError: `warmup` is negative or `repeat` is below 1.
        """
        if warmup < 0 or repeat < 1:
            raise ValueError(f"need warmup >= 0 and repeat >= 1, got {warmup} and {repeat}")
        feeds = self.check_inputs(self.random_inputs() if inputs is None else inputs)
        for _ in range(warmup):
            self._executor(feeds)
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            self._executor(feeds)
            times.append((time.perf_counter() - start) * 1e3)
        return {
            "median_ms": statistics.median(times),
            "p90_ms": float(np.percentile(times, 90)),
            "mean_ms": statistics.fmean(times),
            "min_ms": min(times),
            "max_ms": max(times),
            "warmup": warmup,
            "repeat": repeat,
        }

    # -- saving -------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Save as an artifact directory (atomically); `lepton_compiler.load` restores it.

        Returns:
            The artifact path.

        Raises:
            ArtifactError: the path cannot be written; nothing is left half-written.
        """
        from .artifact import save_artifact

        return save_artifact(self, path)


def _reference_executor(graph: Graph) -> Executor:
    from ..interpreter import run_graph

    def execute(feeds: dict[str, Any]) -> dict[str, Any]:
        return run_graph(graph, feeds)

    return execute


def _detach(out: Any, graph: Graph) -> Any:
    """The output, copied when it is (a view of) one of the model's constants."""
    if not isinstance(out, np.ndarray):
        return out
    base: Any = out
    while isinstance(base, np.ndarray):
        if any(base is c.const for c in graph.initializers.values()):
            return out.copy()
        base = base.base
    return out


# -- input checks -------------------------------------------------------------------------------

_LENIENT = (list, tuple, int, float, bool)


def _as_array(spec: TensorSpec, dtype: DType, value: Any) -> np.ndarray:
    want = dtype.numpy
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as e:
        raise InputError(
            f"input {spec.name!r} cannot be converted to an array ({e}); expected {spec}"
        ) from None
    if dtype is DType.STRING:
        if array.dtype.kind in "OUS":
            return array.astype(object)
        raise InputError(f"input {spec.name!r} has dtype {array.dtype}, expected strings")
    if array.dtype == want:
        return array
    if isinstance(value, _LENIENT) and _can_cast_python(array, dtype):
        return array.astype(want)
    hint = f" (convert with .astype(np.{want.name}))" if hasattr(np, want.name) else ""
    raise InputError(
        f"input {spec.name!r} has dtype {array.dtype}, expected {want.name}{hint} "
        f"(signature: {spec})"
    )


def _can_cast_python(array: np.ndarray, dtype: DType) -> bool:
    """True when Python values converted to `array` keep their kind as `dtype`."""
    got = array.dtype.kind
    if got == "b":
        return dtype is DType.BOOL
    if got in "iu":
        if dtype.is_float:
            return True
        if dtype.numpy.kind not in "iu":
            return False
        if array.size == 0:
            return True
        info = np.iinfo(dtype.numpy)
        return bool(array.min() >= info.min and array.max() <= info.max)
    if got == "f":
        return dtype.is_float
    return False


def _check_shape(
    spec: TensorSpec, shape: tuple[int, ...], bound: dict[str, tuple[int, str]]
) -> None:
    """Check rank and dims; symbolic dims are bound in `bound` (name -> (size, input))."""
    if spec.shape is None:
        return
    if len(shape) != len(spec.shape):
        raise InputError(
            f"input {spec.name!r} has rank {len(shape)} (shape {shape}), expected rank "
            f"{len(spec.shape)}: {spec}"
        )
    for axis, (want, got) in enumerate(zip(spec.shape, shape, strict=True)):
        if isinstance(want, int) and want != got:
            raise InputError(
                f"input {spec.name!r} has shape {shape}, expected {spec}: dim {axis} must be "
                f"{want}, got {got}"
            )
        if isinstance(want, str):
            size, where = bound.setdefault(want, (got, spec.name))
            if size != got:
                other = "an earlier dim" if where == spec.name else f"input {where!r}"
                raise InputError(
                    f"input {spec.name!r} has shape {shape}, expected {spec}: dim {axis} "
                    f"({want!r}) is {got}, but {want!r} is {size} in {other}"
                )


def _random_array(rng: np.random.Generator, dtype: DType, shape: tuple[int, ...]) -> np.ndarray:
    if dtype is DType.BOOL:
        return rng.random(shape) < 0.5
    if dtype is DType.STRING:
        return np.full(shape, "", dtype=object)
    if dtype.is_integer:
        return rng.integers(0, 2, shape).astype(dtype.numpy)
    if dtype.is_float or dtype.value.startswith("complex"):
        return rng.standard_normal(shape).astype(dtype.numpy)
    raise LeptonError(f"cannot make random values of dtype {dtype}")
