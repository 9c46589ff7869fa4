"""`onnx.backend.base.Backend` adapters, so ONNX's own backend test suite runs through us.

`LeptonBackend.prepare` imports the model through the full frontend (checker, opset
conversion, onnxsim, shape inference) into the IR and runs it with the reference interpreter.
`LeptonTvmBackend.prepare` compiles it with ``compile(backend="tvm")`` (O2: fusion, then TVM
kernels, reference kernels for the rest) and records whether every op ran natively;
`LeptonNumbaBackend.prepare` does the same with ``compile(backend="numba")``.
"""

from __future__ import annotations

from typing import Any

import onnx
from onnx.backend.base import Backend, BackendRep

from .frontend.onnx import import_model
from .interpreter import run_graph
from .ir import Graph


class LeptonBackendRep(BackendRep):
    """A prepared model: the imported IR graph, run by the reference interpreter."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph

    def run(self, inputs: Any, **kwargs: Any) -> tuple[Any, ...]:
        """Run with inputs given positionally (graph input order) or by name."""
        if isinstance(inputs, dict):
            feeds = dict(inputs)
        else:
            if not isinstance(inputs, (list, tuple)):
                inputs = [inputs]
            feeds = {v.name: x for v, x in zip(self.graph.inputs, inputs, strict=False)}
        out = run_graph(self.graph, feeds)
        return tuple(out[v.name] for v in self.graph.outputs)


class LeptonBackend(Backend):
    """ONNX backend API over Lepton Compiler's import path and reference interpreter."""

    @classmethod
    def is_compatible(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs: Any) -> bool:
        return True

    @classmethod
    def prepare(
        cls, model: onnx.ModelProto, device: str = "CPU", **kwargs: Any
    ) -> LeptonBackendRep:
        super().prepare(model, device, **kwargs)
        return LeptonBackendRep(import_model(model, **kwargs))

    @classmethod
    def run_model(
        cls, model: onnx.ModelProto, inputs: Any, device: str = "CPU", **kwargs: Any
    ) -> tuple[Any, ...]:
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def supports_device(cls, device: str) -> bool:
        return device == "CPU"


class LeptonTvmBackendRep(BackendRep):
    """A model compiled by the TVM backend."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def run(self, inputs: Any, **kwargs: Any) -> tuple[Any, ...]:
        """Run with inputs given positionally (graph input order) or by name."""
        graph = self.model.graph
        if isinstance(inputs, dict):
            feeds = dict(inputs)
        else:
            if not isinstance(inputs, (list, tuple)):
                inputs = [inputs]
            feeds = {v.name: x for v, x in zip(graph.inputs, inputs, strict=False)}
        out = self.model.executor(feeds)
        return tuple(out[v.name] for v in graph.outputs)


class LeptonTvmBackend(LeptonBackend):
    """ONNX backend API over ``compile(backend="tvm")``.

    Attributes:
        last_native: after `prepare`: True when the model runs in TVM kernels only (at least
            one kernel, no reference fallback), False when something falls back; None before.
        last_vm: after `prepare`: True when the Relax VM runs the model (else the executor's
            Python step loop does).
    """

    last_native: bool | None = None
    last_vm: bool | None = None

    @classmethod
    def prepare(  # type: ignore[override]
        cls, model: onnx.ModelProto, device: str = "CPU", **kwargs: Any
    ) -> LeptonTvmBackendRep:
        Backend.prepare(model, device, **kwargs)
        import warnings

        from .api import compile as lepton_compile

        cls.last_native = cls.last_vm = None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # fallbacks are counted, not warned about
            compiled = lepton_compile(model, backend="tvm", **kwargs)
        ex = compiled.executor
        cls.last_native = bool(ex.num_kernels) and not ex.fallbacks
        cls.last_vm = getattr(ex, "program", None) is not None
        return LeptonTvmBackendRep(compiled)

    @classmethod
    def run_model(  # type: ignore[override]
        cls, model: onnx.ModelProto, inputs: Any, device: str = "CPU", **kwargs: Any
    ) -> tuple[Any, ...]:
        return cls.prepare(model, device, **kwargs).run(inputs)


class LeptonNumbaBackendRep(LeptonTvmBackendRep):
    """A model compiled by the Numba backend."""


class LeptonNumbaBackend(LeptonBackend):
    """ONNX backend API over ``compile(backend="numba")``.

    Attributes:
        last_native: after `prepare`: True when the model runs in Numba kernels only (at
            least one kernel, no reference fallback), False when something falls back; None
            before.
    """

    last_native: bool | None = None

    @classmethod
    def prepare(  # type: ignore[override]
        cls, model: onnx.ModelProto, device: str = "CPU", **kwargs: Any
    ) -> LeptonNumbaBackendRep:
        Backend.prepare(model, device, **kwargs)
        import warnings

        from .api import compile as lepton_compile

        cls.last_native = None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # fallbacks are counted, not warned about
            compiled = lepton_compile(model, backend="numba", **kwargs)
        ex = compiled.executor
        cls.last_native = bool(ex.num_kernels) and not ex.fallbacks
        return LeptonNumbaBackendRep(compiled)

    @classmethod
    def run_model(  # type: ignore[override]
        cls, model: onnx.ModelProto, inputs: Any, device: str = "CPU", **kwargs: Any
    ) -> tuple[Any, ...]:
        return cls.prepare(model, device, **kwargs).run(inputs)


prepare = LeptonBackend.prepare
run_model = LeptonBackend.run_model
supports_device = LeptonBackend.supports_device
