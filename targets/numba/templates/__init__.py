"""Kernel templates: how a fused group (or a lone op) becomes one generated Numba function.

A *template* is a module in this package with three names:

- ``NAME``: a short label for reports (``"conv"``, ``"dense"``...);
- ``ANCHORS``: the ops it takes as a group's anchor (a ``lepton.Fused`` node whose ``anchor``
  attribute is one of them) or as a lone node (the executor wraps a lone node in a one-node
  group); the empty string stands for anchor-less element-wise chains;
- ``plan(fused, tiles) -> KernelSource``: write the kernel's source, splitting matrix
  products into `tiles` row tiles when `tiles` > 1 (`threads.product_tiles`), or raise
  `LoweringError` when the template cannot take the group (the node then runs its
  reference kernel).

`plan_group` picks the template by anchor, like the TVM backend's kernel families
(`lepton_compiler.targets.tvm.kernels`), and compiles groups with little work as serial
functions (`work`).

Calling convention of every generated function: ``kernel(*params, *outputs, *scratch)``,
every argument a C-contiguous NumPy array of the declared shape and dtype; it returns
nothing. Parameters are views of the fused node's inputs reshaped to the declared shapes
(same element count), except constants a template *packs* (``packs[i]`` maps the constant
to the declared array, once at compile time). Scratch buffers are work space (im2col
columns) that the executor allocates once and shares between kernels.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType

import numpy as np

from lepton_compiler.errors import LoweringError
from lepton_compiler.ir import Node

from ..emit import serial
from ..threads import product_tiles
from ..work import SMALL_WORK, work

__all__ = ["TEMPLATES", "KernelSource", "lone_ops", "plan_group", "template_for"]

#: Template modules, in lookup order (the first whose ``ANCHORS`` holds the anchor wins).
TEMPLATES: tuple[str, ...] = (
    "conv",
    "dense",
    "qconv",
    "qdense",
    "pool",
    "norm",
    "attention",
    "transpose",
    "elementwise",
)


@dataclass
class KernelSource:
    """A group written as a generated module, ready to compile.

    Attributes:
        name: the function's name in the module.
        source: the module's full text (also its cache key).
        input_indices: for each parameter, the index of the fused node's input it receives.
        param_shapes: the shape each parameter is declared with.
        param_dtypes: the dtype name of each parameter.
        output_shapes: the shape each output is written with (same element count as the
            IR's output).
        output_dtypes: the dtype name of each output.
        scratch: ``(shape, dtype)`` of each work buffer, passed after the outputs.
        packs: parameter position -> transform from the constant's IR value to the declared
            array (applied once at compile time).
        family: the template's ``NAME``.
        ops: the group's ops, anchor first (for reports).
        parallel: whether the function is compiled with ``parallel=True`` (set by
            `plan_group` from the group's work, `work.SMALL_WORK`).
    """

    name: str
    source: str
    input_indices: list[int]
    param_shapes: list[tuple[int, ...]]
    param_dtypes: list[str]
    output_shapes: list[tuple[int, ...]]
    output_dtypes: list[str]
    scratch: list[tuple[tuple[int, ...], str]] = field(default_factory=list)
    packs: dict[int, Callable[[np.ndarray], np.ndarray]] = field(default_factory=dict)
    family: str = ""
    ops: list[str] = field(default_factory=list)
    parallel: bool = True


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


def plan_group(fused: Node, threads: int = 1) -> KernelSource:
    """Write the group's kernel with the template that owns its anchor, to run on `threads`
    threads (serial when the group has little work, `work.SMALL_WORK`).

    Raises:
        LoweringError: no template takes the anchor, or the template refuses the group.
    """
    if fused.op != "lepton.Fused":
        raise LoweringError(f"expected a lepton.Fused node, got {fused.op}")
    mod = template_for(fused)
    if mod is None:
        raise LoweringError(f"no Numba template for groups anchored on {group_anchor(fused)!r}")
    parallel = work(fused) >= SMALL_WORK
    plan: KernelSource = mod.plan(fused, product_tiles(threads) if parallel else 1)
    plan.family = plan.family or mod.NAME
    plan.ops = plan.ops or [n.op for n in fused.attrs["body"]]
    if not parallel:
        plan.source = serial(plan.source)
        plan.parallel = False
    return plan
