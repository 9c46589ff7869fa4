"""Conv family: ``Conv`` (2-D NCHW fp32, groups=1) with its element-wise epilogue.

Four lowerings. Small outputs (14x14 and below) and strided convs: vectorized over output
channels with weights pre-packed at compile time (`te_ops.conv2d_cvec`,
`schedules.x86_conv1x1`; `use_cvec` says when). Otherwise vectorized over output positions
(`te_ops.conv2d_nchw`, `schedules.x86_conv`): flat layout for direct 1x1 convs where the
epilogue allows it, by rows where the output width is (nearly) whole vectors, else the
general flattened form.
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
from ..schedules.x86_conv1x1 import CvecConfig, choose_cvec_config, schedule_cvec
from ..te_ops import (
    ConvWorkload,
    LoweredGroup,
    LoweringError,
    conv_workload,
    lower_group,
    pack_cvec_weights,
)
from . import KernelPlan

NAME = "conv"
ANCHORS = ("Conv",)


def plan(fused: Node, target: Any) -> KernelPlan:
    """Lower and configure a conv group (see the module docstring)."""
    if any(n.op == "Conv" and int(n.attr("group", 1)) > 1 for n in fused.attrs["body"]):
        from . import depthwise  # grouped convs (group > 1) have their own family

        return depthwise.plan(fused, target)
    lanes = vector_lanes(target)
    conv = next((n for n in fused.attrs["body"] if n.op == "Conv"), None)
    if conv is not None:
        wl = conv_workload(conv)
        ccfg = choose_cvec_config(wl, lanes) if use_cvec(wl, lanes) else None
        if ccfg is not None:
            try:
                return plan_cvec(fused, wl, ccfg)
            except LoweringError:
                pass  # e.g. weights computed inside the group: the other forms
    lg, cfg = lower_conv(fused, lanes)
    return plan_from_lowered(lg, lambda: schedule_conv_group(lg, cfg), cfg)


#: Outputs of at most this many positions (14x14) run in the channel-vector form.
CVEC_MAX_POSITIONS = 196
#: Strided convs with at least this many input channels run in it at any size.
CVEC_MIN_STRIDED_CHANNELS = 16


def use_cvec(wl: ConvWorkload, lanes: int) -> bool:
    """Whether the channel-vector form (`schedules.x86_conv1x1`) should run this conv.

    Measured (2 threads, AVX-512 on Zen 4, minima interleaved with ONNX Runtime; ratio to
    ORT's time, channel-vector vs the position-vector forms; `bench_conv --form`): every conv
    on 14x14 or 7x7 outputs gains or ties (1x1 2048->512 on 7x7 0.98 vs 1.30, MobileNetV2
    960->320 on 7x7 0.48 vs 0.71 and 576->96 on 14x14 0.47 vs 0.72, 3x3 512->512 on 7x7 1.03
    vs 1.33, 256->256 on 14x14 0.95 vs 1.09), and so do strided convs, which the other forms
    run through a stride-phase copy (1x1/2 1024->2048 from 14x14 0.49 vs 0.67, 3x3/2
    512->512 from 14x14 0.98 vs 1.30). Stride-1 convs on 28x28 and larger stay on the
    position-vector forms (1x1 128->512 on 28x28 0.93 vs 1.13; MobileNetV2's few-channel 1x1
    convs on 112x112/56x56 0.4-0.8 vs 0.7-2.5): their stores are whole vectors, the
    channel-vector tile's are transposed scalars. ``lanes`` is accepted for targets with
    other vector widths.
    """
    del lanes
    if FORCE_CVEC is not None:
        return FORCE_CVEC
    ho, wo = wl.out_hw
    if ho * wo <= CVEC_MAX_POSITIONS:
        return True
    return wl.strides != (1, 1) and wl.c >= CVEC_MIN_STRIDED_CHANNELS


#: Tests and benchmarks: True/False forces the channel-vector form on/off (None: by shape).
FORCE_CVEC: bool | None = None


def plan_cvec(fused: Node, wl: ConvWorkload, cfg: CvecConfig) -> KernelPlan:
    """Plan the group in the channel-vector form, its weights packed at compile time."""
    lg = lower_group(fused, cvec=cfg.nb)
    body = fused.attrs["body"]
    conv = next(n for n in body if n.op == "Conv")
    w_pos = list(body.inputs).index(conv.inputs[1])
    plan = plan_from_lowered(lg, lambda: schedule_cvec(lg, cfg), cfg)
    plan.packs = {lg.input_indices.index(w_pos): lambda w: pack_cvec_weights(w, wl, cfg.nb)}
    return plan


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
        param_dtypes=[str(t.dtype) for t in lg.params],
        output_dtypes=[str(t.dtype) for t in lg.outputs],  # a Cast epilogue changes it
        workload=lg.prim_func,
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
