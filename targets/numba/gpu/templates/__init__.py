"""CUDA kernel templates: how a fused group (or a lone op) becomes one generated
``@cuda.jit`` kernel with its launch configuration.

A template is a module in this package with ``NAME``, ``ANCHORS`` (the anchor ops it takes;
``""`` stands for anchor-less element-wise chains) and ``plan(fused) -> CudaKernelSource``,
which raises `LoweringError` when it cannot take the group (the executor then runs the
reference kernel on the host). The families and anchors are those of the CPU templates
(`targets.numba.templates`), so a group the CPU path takes has a CUDA kernel too.

Calling convention of every generated kernel: ``kernel[grid, block](*params, *outputs,
*scratch)``, every argument a C-contiguous device array of the declared shape and dtype.
Parameters are the fused node's inputs reshaped to the declared shapes (same element
count). Shapes are baked into the source, so a kernel serves exactly one input shape.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType

import numpy as np

from lepton_compiler.errors import LoweringError
from lepton_compiler.ir import Node

__all__ = ["TEMPLATES", "CudaKernelSource", "lone_ops", "plan_group", "template_for"]

#: Template modules, in lookup order (the first whose ``ANCHORS`` holds the anchor wins).
TEMPLATES: tuple[str, ...] = (
    "conv",
    "dense",
    "pool",
    "norm",
    "attention",
    "transpose",
    "elementwise",
)

#: Launch dims: (x,) or (x, y) or (x, y, z).
Dims = tuple[int, ...]


@dataclass
class CudaKernelSource:
    """A group written as a generated CUDA kernel module, with its launch configuration.

    Attributes:
        name: the kernel's name in the module.
        source: the module's full text (also its cache key).
        grid: blocks per grid.
        block: threads per block.
        input_indices: for each parameter, the index of the fused node's input it receives.
        param_shapes: the shape each parameter is declared with.
        param_dtypes: the dtype name of each parameter.
        output_shapes: the shape each output is written with (same element count as the
            IR's output).
        output_dtypes: the dtype name of each output.
        scratch: ``(shape, dtype)`` of each device work buffer, passed after the outputs.
        packs: parameter position -> transform from a constant's value to the declared
            array (applied once, on the host, before the copy to the device).
        family: the template's ``NAME``.
        ops: the group's ops, anchor first (for reports).
    """

    name: str
    source: str
    grid: Dims
    block: Dims
    input_indices: list[int]
    param_shapes: list[tuple[int, ...]]
    param_dtypes: list[str]
    output_shapes: list[tuple[int, ...]]
    output_dtypes: list[str]
    scratch: list[tuple[tuple[int, ...], str]] = field(default_factory=list)
    packs: dict[int, Callable[[np.ndarray], np.ndarray]] = field(default_factory=dict)
    family: str = ""
    ops: list[str] = field(default_factory=list)


_MODULES: list[ModuleType] | None = None


def _templates() -> list[ModuleType]:
    global _MODULES
    if _MODULES is None:
        _MODULES = [importlib.import_module(f"{__name__}.{name}") for name in TEMPLATES]
    return _MODULES


def group_anchor(fused: Node) -> str:
    """The group's anchor op ("" for an anchor-less element-wise chain)."""
    return str(fused.attrs.get("anchor") or "")


def template_for(fused: Node) -> ModuleType | None:
    """The template that owns the group's anchor; else the element-wise one, which refuses
    groups it cannot write."""
    anchor = group_anchor(fused)
    mods = _templates()
    return next((m for m in mods if anchor in m.ANCHORS), None) or next(
        (m for m in mods if "" in m.ANCHORS), None
    )


def lone_ops() -> frozenset[str]:
    """Ops that some template takes as a lone node."""
    return frozenset(op for m in _templates() for op in m.ANCHORS if op)


def plan_group(fused: Node) -> CudaKernelSource:
    """Write the group's CUDA kernel with the template that owns its anchor.

    Raises:
        LoweringError: no template takes the anchor, or the template refuses the group.
    """
    if fused.op != "lepton.Fused":
        raise LoweringError(f"expected a lepton.Fused node, got {fused.op}")
    mod = template_for(fused)
    if mod is None:
        raise LoweringError(f"no CUDA template for groups anchored on {group_anchor(fused)!r}")
    plan: CudaKernelSource = mod.plan(fused)
    plan.family = plan.family or mod.NAME
    plan.ops = plan.ops or [n.op for n in fused.attrs["body"]]
    return plan
