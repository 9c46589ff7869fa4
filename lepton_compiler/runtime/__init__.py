"""The runtime side of a compiled model: `CompiledModel`, its compile report, and artifacts.

Everything here runs models that are already compiled; nothing here compiles. `load` restores
a saved artifact without re-running the pipeline or the backend build.
"""

from __future__ import annotations

from .artifact import FORMAT_VERSION, load, save_artifact
from .compiled_model import CompiledModel, TensorSpec
from .report import CompileReport

__all__ = [
    "FORMAT_VERSION",
    "CompileReport",
    "CompiledModel",
    "TensorSpec",
    "load",
    "save_artifact",
]
