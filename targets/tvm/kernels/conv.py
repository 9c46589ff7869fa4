"""Conv family: ``Conv`` (2-D NCHW fp32, groups=1) with its element-wise epilogue.

Three lowerings (see `te_ops.conv2d_nchw` and `schedules.x86_conv`): flat layout for direct
1x1 convs where the epilogue allows it, by rows where the output width is (nearly) whole
vectors, else the general flattened form.
"""

from __future__ import annotations

from typing import Any

from lepton_compiler.ir import Node

from ..schedules.x86_conv import (
    ConvConfig,
    choose_config,
    flat_config_possible,
    row_width,
    rows_config_possible,
    schedule_conv_group,
    vector_lanes,
)
from ..te_ops import LoweredGroup, LoweringError, conv_workload, lower_group
from . import KernelPlan

NAME = "conv"
ANCHORS = ("Conv",)


def plan(fused: Node, target: Any) -> KernelPlan:
    """Lower and configure a conv group (see the module docstring)."""
    lanes = vector_lanes(target)
    lg, cfg = lower_conv(fused, lanes)
    return plan_from_lowered(lg, lambda: schedule_conv_group(lg, cfg), cfg)


def plan_from_lowered(lg: LoweredGroup, make: Any, config: Any = None) -> KernelPlan:
    """A `KernelPlan` for a `LoweredGroup` and its schedule maker."""
    return KernelPlan(
        key=(lg.key, config),
        make=make,
        input_indices=lg.input_indices,
        param_shapes=[tuple(int(d) for d in t.shape) for t in lg.params],
        output_shapes=lg.output_shapes,
        kernel_output_shapes=[tuple(int(d) for d in t.shape) for t in lg.outputs],
        config=config,
    )


def lower_conv(fused: Node, lanes: int) -> tuple[LoweredGroup, ConvConfig]:
    """Lower the group: flat layout for direct convs where possible, by rows where the output
    width is whole vectors or rounds up to them with little waste (`rows_config_possible`),
    else the general flattened form."""
    conv = next((n for n in fused.attrs["body"] if n.op == "Conv"), None)
    if conv is None:
        raise LoweringError("conv group without a Conv")
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
