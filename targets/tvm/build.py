"""Build a fused group into a callable kernel: lower to TE, apply our schedule, `tvm.compile`.

`build_group(fused_node, target_dict)` returns a `GroupKernel` that runs on numpy arrays (all of
the fused node's inputs, in order; it picks the ones the kernel reads). Kernels are cached in
memory by (computation key, schedule config, target), so layers of the same shape share one
build.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import tvm
from tvm import s_tir

from lepton_compiler.ir import Node

from .schedules.x86_conv import (
    ConvConfig,
    choose_config,
    flat_config_possible,
    row_width,
    rows_config_possible,
    schedule_conv_group,
    vector_lanes,
)
from .te_ops import LoweredGroup, LoweringError, conv_workload, lower_group

__all__ = ["GroupKernel", "build_group", "clear_cache", "host_target"]

_CACHE: dict[tuple[Any, ...], GroupKernel] = {}
_LOCK = threading.Lock()


def host_target(num_cores: int | None = None) -> dict[str, Any]:
    """A target dict for this machine's CPU (LLVM's host CPU name, all cores by default)."""
    cpu = str(tvm.target.codegen.llvm_get_system_cpu()) if _has_system_cpu() else "x86-64"
    return {"kind": "llvm", "mcpu": cpu, "num-cores": num_cores or os.cpu_count() or 1}


def _has_system_cpu() -> bool:
    return hasattr(tvm.target.codegen, "llvm_get_system_cpu")


@dataclass
class GroupKernel:
    """A built kernel for one fused group.

    Attributes:
        func: the compiled PrimFunc, called as ``func(*params, *outputs)`` on tvm tensors.
        input_indices: which of the fused node's inputs are kernel parameters, in order.
        param_shapes: the shapes the kernel declares for them (a flat-layout kernel declares
            ``[..., H*W]`` for NCHW tensors: same memory, reshaped on the way in).
        output_shapes: shapes of the outputs in the IR (float32).
        kernel_output_shapes: the shapes the kernel writes (same memory).
        config: the conv schedule config, None for non-conv groups.
        device: the device the kernel runs on.
    """

    func: Any
    input_indices: list[int]
    param_shapes: list[tuple[int, ...]]
    output_shapes: list[tuple[int, ...]]
    kernel_output_shapes: list[tuple[int, ...]]
    config: ConvConfig | None
    device: Any
    source_key: tuple[Any, ...]

    def __call__(self, *inputs: np.ndarray) -> list[np.ndarray]:
        """Run on numpy arrays: every input of the fused node, in the node's order."""
        outs = self.prepare(inputs)
        self.func(*outs)
        results = outs[len(self.input_indices) :]
        return [o.numpy().reshape(s) for o, s in zip(results, self.output_shapes, strict=True)]

    def empty_outputs(self) -> list[Any]:
        """Fresh output tensors on the kernel's device (in the kernel's shapes)."""
        return [tvm.runtime.empty(s, "float32", self.device) for s in self.kernel_output_shapes]

    def prepare(self, inputs: Sequence[np.ndarray]) -> list[Any]:
        """Device tensors for the kernel's parameters, then outputs (for timing loops)."""
        args = [
            tvm.runtime.tensor(
                np.ascontiguousarray(inputs[i], np.float32).reshape(shape), self.device
            )
            for i, shape in zip(self.input_indices, self.param_shapes, strict=True)
        ]
        return [*args, *self.empty_outputs()]


def clear_cache() -> None:
    """Forget every built kernel."""
    with _LOCK:
        _CACHE.clear()


def _target_key(target: Mapping[str, Any]) -> str:
    return json.dumps(dict(target), sort_keys=True, default=str)


def _anchor_conv(fused: Node) -> Node | None:
    if fused.op != "lepton.Fused":
        return fused if fused.op == "Conv" else None
    return next((n for n in fused.attrs["body"] if n.op == "Conv"), None)


def build_group(fused: Node, target: Mapping[str, Any] | None = None) -> GroupKernel:
    """Lower, schedule and compile one fused group (cached in memory).

    Args:
        fused: a ``lepton.Fused`` node whose body is a Conv with an element-wise epilogue, or
            only element-wise ops.
        target: a TVM target dict, e.g. ``{"kind": "llvm", "mcpu": "sapphirerapids",
            "num-cores": 2}``; default: `host_target()`.

    Returns:
        The kernel; call it with the fused node's inputs as numpy arrays.

    Raises:
        LoweringError: the group holds an op or attribute the backend does not handle.
    """
    if fused.op != "lepton.Fused":
        raise LoweringError(f"build_group expects a lepton.Fused node, got {fused.op}")
    tdict = dict(target) if target is not None else host_target()
    tgt = tvm.target.Target(tdict)
    lanes = vector_lanes(tgt)
    lg, cfg = _lower(fused, lanes)
    key = (lg.key, cfg, _target_key(tdict))
    with _LOCK:
        hit = _CACHE.get(key)
    if hit is not None:
        return hit
    if cfg is not None:
        sch = schedule_conv_group(lg, cfg)
    else:
        sch = schedule_elementwise_group(lg, lanes)
    lib = tvm.compile(sch.mod, target=tgt)
    kernel = GroupKernel(
        func=lib["main"],
        input_indices=lg.input_indices,
        param_shapes=[tuple(int(d) for d in t.shape) for t in lg.params],
        output_shapes=lg.output_shapes,
        kernel_output_shapes=[tuple(int(d) for d in t.shape) for t in lg.outputs],
        config=cfg,
        device=tvm.cpu(0),
        source_key=key,
    )
    with _LOCK:
        _CACHE[key] = kernel
    return kernel


def _lower(fused: Node, lanes: int) -> tuple[LoweredGroup, ConvConfig | None]:
    """Lower the group: flat layout for direct convs where possible, by rows where the output
    width is whole vectors or rounds up to them with little waste (`rows_config_possible`),
    else the general flattened form."""
    conv = _anchor_conv(fused)
    if conv is None:
        return lower_group(fused), None
    wl = conv_workload(conv)
    if flat_config_possible(wl, lanes):
        cfg = choose_config(wl, lanes, flat=True)
        try:
            return lower_group(fused, cfg.p_align, flat=True), cfg
        except LoweringError:
            pass  # e.g. an epilogue operand that broadcasts along one spatial dim only
    if rows_config_possible(wl, lanes):
        cfg = choose_config(wl, lanes, rows=True)
        return lower_group(fused, rows=True, row_width=row_width(wl, lanes)), cfg
    cfg = choose_config(wl, lanes)
    return lower_group(fused, cfg.p_align), cfg


def schedule_elementwise_group(lg: LoweredGroup, lanes: int) -> s_tir.Schedule:
    """A plain schedule for a group without an anchor: one parallel, vectorized loop per
    output."""
    sch = s_tir.Schedule(lg.prim_func())
    out_names = {t.op.name for t in lg.outputs}
    for name in lg.stage_names:
        if name not in out_names:
            sch.compute_inline(sch.get_sblock(name))
    for name in lg.stage_names:
        if name not in out_names:
            continue
        blk = sch.get_sblock(name)
        loops = sch.get_loops(blk)
        if not loops:
            continue
        fused = sch.fuse(*loops)
        total = int(sch.get(fused).extent)
        if total % lanes == 0 and total >= lanes:
            outer, inner = sch.split(fused, [None, lanes])
            sch.vectorize(inner)
            sch.parallel(outer)
        else:
            sch.parallel(fused)
    return sch
