"""Lepton Compiler: an ONNX model compiler with its own graph IR, pass pipelines and backends.

The public API is small::

    import lepton_compiler

    model = lepton_compiler.compile("model.onnx")       # -> CompiledModel
    outputs = model.run({"image": image})                # dict name -> numpy array
    model.save("model.lepton")                           # an artifact directory
    again = lepton_compiler.load("model.lepton")         # no recompilation

Every error a user can cause is a `LeptonError` subclass, importable from here.

Importing this package is cheap on purpose: `onnx`, `onnxruntime`, `tvm` and `numba` are
imported only when a function that needs them runs. `compile`, `load`, `CompiledModel`,
`TensorSpec` and `CompileReport` are resolved lazily through the module `__getattr__`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import (
    ArtifactError,
    InputError,
    LeptonError,
    LoweringError,
    ModelLoadError,
    PassError,
    ShapeInferenceError,
    UnsupportedOpError,
    VerificationError,
)

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .api import compile
    from .export.qdq import quantize
    from .quantization import Int8Config
    from .runtime.artifact import load
    from .runtime.compiled_model import CompiledModel, TensorSpec
    from .runtime.report import CompileReport

#: Public names imported on first use: name -> (module, attribute).
_LAZY: dict[str, tuple[str, str]] = {
    "compile": ("lepton_compiler.api", "compile"),
    "load": ("lepton_compiler.runtime.artifact", "load"),
    "CompiledModel": ("lepton_compiler.runtime.compiled_model", "CompiledModel"),
    "TensorSpec": ("lepton_compiler.runtime.compiled_model", "TensorSpec"),
    "CompileReport": ("lepton_compiler.runtime.report", "CompileReport"),
    "Int8Config": ("lepton_compiler.quantization", "Int8Config"),
    "quantize": ("lepton_compiler.export.qdq", "quantize"),
}

__all__ = [
    "ArtifactError",
    "CompileReport",
    "CompiledModel",
    "InputError",
    "Int8Config",
    "LeptonError",
    "LoweringError",
    "ModelLoadError",
    "PassError",
    "ShapeInferenceError",
    "TensorSpec",
    "UnsupportedOpError",
    "VerificationError",
    "__version__",
    "compile",
    "load",
    "quantize",
]


def __getattr__(name: str) -> Any:
    """Resolve the lazily imported public names (PEP 562)."""
    if name in _LAZY:
        import importlib

        module_name, attr = _LAZY[name]
        value = getattr(importlib.import_module(module_name), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
