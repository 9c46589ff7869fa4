"""Kernel families: how a fused group (or a lone op) becomes one scheduled TVM PrimFunc.

A *family* is a module in this package with three names:

- ``NAME`` — a short label for reports (``"conv"``, ``"dense"``...);
- ``ANCHORS`` — the ops it takes as a group's anchor (a ``lepton.Fused`` node whose
  ``anchor`` attribute is one of them) or as a lone node (the executor wraps a lone node in a
  one-node group); the empty string stands for anchor-less element-wise chains;
- ``plan(fused, target) -> KernelPlan`` — lower the group to TE and say how to schedule it,
  or raise `LoweringError` when it cannot (the node then runs its reference kernel).

`plan_group` picks the family by anchor; `build.build_group` caches by
``(plan.key, target)`` and calls ``plan.make()`` (the schedule) only on a cache miss, so
layers of the same shape share one compiled function.

Constant inputs (weights) may be *pre-packed*: ``plan.packs[i]`` maps the NumPy value of the
kernel's ``i``-th parameter (in the IR's layout) to the layout the kernel declares (e.g.
output channels blocked by the vector width). The executor applies it once at compile time;
`build.GroupKernel.__call__` applies it on every call (tests). A family must only pack
parameters that are constants in the graph, or accept the cost of packing per run.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np

from lepton_compiler.ir import Node

from ..te_ops import LoweringError

__all__ = ["FAMILIES", "KernelPlan", "family_for", "lone_ops", "plan_group"]

#: Family modules, in lookup order (the first whose ``ANCHORS`` holds the anchor wins).
FAMILIES: tuple[str, ...] = (
    "qconv",
    "qdense",
    "conv",
    "elementwise",
    "dense",
    "attention",
    "norm",
    "pool",
    "layout",
    "gather",
    "reduce",
)


@dataclass
class KernelPlan:
    """A lowered group, ready to schedule and build.

    Attributes:
        key: everything that determines the generated code except the target (shapes,
            attributes, ops, schedule config); equal keys share one compiled function.
        make: builds the scheduled module (an `s_tir.Schedule`, `tvm.IRModule` or
            PrimFunc) whose ``main`` takes ``(params..., outputs...)``; called on a cache
            miss only.
        input_indices: for each kernel parameter, the index of the fused node's input it
            receives.
        param_shapes: the shapes the kernel declares for its parameters (after packing).
        output_shapes: the outputs' shapes in the IR.
        kernel_output_shapes: the shapes the kernel writes (same memory, same order).
        packs: parameter position -> NumPy transform from the IR layout to the declared one.
        config: the schedule configuration (for reports and tests), if any.
        family: the family's ``NAME``.
        param_dtypes: the declared dtype of each parameter (default float32).
        output_dtypes: the declared dtype of each output (default float32).
        workload: builds the *unscheduled* PrimFunc (same signature as ``make``'s), which
            MetaSchedule tunes (`targets.tvm.tune`); None when the family offers none.
    """

    key: tuple[Any, ...]
    make: Callable[[], Any]
    input_indices: list[int]
    param_shapes: list[tuple[int, ...]]
    output_shapes: list[tuple[int, ...]]
    kernel_output_shapes: list[tuple[int, ...]]
    packs: dict[int, Callable[[np.ndarray], np.ndarray]] = field(default_factory=dict)
    config: Any = None
    family: str = ""
    param_dtypes: list[str] | None = None
    output_dtypes: list[str] | None = None
    workload: Callable[[], Any] | None = None


_MODULES: list[ModuleType] | None = None


def _families() -> list[ModuleType]:
    global _MODULES
    if _MODULES is None:
        _MODULES = [importlib.import_module(f"{__name__}.{name}") for name in FAMILIES]
    return _MODULES


def group_anchor(fused: Node) -> str:
    """The group's anchor op (for an anchor-less element-wise chain: its first op)."""
    return str(fused.attrs.get("anchor") or "")


def family_for(fused: Node) -> ModuleType | None:
    """The family that owns the group's anchor; else the one taking anchor-less chains
    (``""`` in its ``ANCHORS``), which refuses groups it cannot lower; else None."""
    anchor = group_anchor(fused)
    mods = _families()
    return next((m for m in mods if anchor in m.ANCHORS), None) or next(
        (m for m in mods if "" in m.ANCHORS), None
    )


def lone_ops() -> frozenset[str]:
    """Ops that some family takes as a lone node."""
    return frozenset(op for m in _families() for op in m.ANCHORS if op)


def plan_group(fused: Node, target: Any) -> KernelPlan:
    """Plan the group with the family that owns its anchor.

    Args:
        fused: a ``lepton.Fused`` node.
        target: a `tvm.target.Target`.

    Raises:
        LoweringError: no family owns the anchor, or the family refuses the group.
    """
    if fused.op != "lepton.Fused":
        raise LoweringError(f"expected a lepton.Fused node, got {fused.op}")
    mod = family_for(fused)
    if mod is None:
        raise LoweringError(f"no TVM kernel for groups anchored on {group_anchor(fused)!r}")
    plan: KernelPlan = mod.plan(fused, target)
    plan.family = plan.family or mod.NAME
    return plan
