"""Grouped-conv family: ``Conv`` with ``group > 1`` (depthwise and general grouped, 2-D NCHW
fp32) and ``lepton.QConv`` with ``group > 1`` (uint8/int8 activations, int8 weights), with
the element-wise epilogue (bias, Relu, Clip, binary ops such as a residual Add).

The conv family (`kernels.conv`) hands every Conv whose ``group`` attribute is above 1 to
`plan` here, the QConv family (`kernels.qconv`) every grouped QConv. The TE
(`grouped_conv`) follows `te_ops.conv2d_nchw`'s flattened form, per output channel: one
zero-padded plane per stride phase (``dw_pad_<ph>_<pw>``, ``[N, C, rows, Wq]``), then
``dw_flat``, the convolution over flattened positions ``p = h * Wq + w`` of output channel
``m`` (input channels ``(m // (M / group)) * (C / group) + rc``), every tap written out so
that each one reads one plane at a fixed offset; the epilogue stages read ``dw_flat`` at
``h * Wq + w`` (plus bias). `schedules.x86_depthwise` computes one output channel's plane at
a time.

Weights, bias and every other tensor input are kernel parameters (one kernel serves all
layers of one shape); constant operands of element-wise ops (Clip bounds...) are baked in.
The epilogue takes every op of `te_elementwise`'s tables; a final QuantizeLinear stores
uint8/int8 (the requantization before an int8 layer). Refused (`LoweringError`, the
group then runs its reference kernel): more than `MAX_GROUP_CHANNELS` input channels per
group, groups with several outputs, ops outside those tables.

A grouped QConv runs the same float32 loop nest, exactly: the padded planes hold
``float(x) - float(x_zero_point)`` (0 in the padding, as the reference's padding with the
zero point), the weights are converted to float32 once when the kernel's constants are made
(`KernelPlan.param_dtypes`), and the float32 sum of at most ``KH * KW * C / group`` products
of magnitude at most ``255 * 128`` is the exact integer accumulator while that bound stays
below 2**24 (`EXACT_SUM_LIMIT`; groups above it are refused). The crop then adds the int32
bias (in float32 when it is a constant small enough for ``acc + bias`` to stay exact, else
in int32) and multiplies ``float32(acc + bias)`` by ``x_scale * w_scale[m]`` (float32, the
product `ops.quant.combined_scale` computes), as the reference does; a
``DequantizeLinear`` in the epilogue may read a uint8/int8 side tensor.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tvm import te, tirx

from lepton_compiler.ir import DType, Graph, Node, Value
from lepton_compiler.ops.quant import BIAS_INPUT, W_INPUT, W_SCALE_INPUT

from ..schedules.x86_conv import vector_lanes
from ..schedules.x86_depthwise import (
    DW_FLAT,
    DW_PAD,
    DepthwiseConfig,
    choose_config,
    schedule_grouped,
)
from ..te_elementwise import binary_builder, unary_builder
from ..te_ops import LoweringError, WindowGeometry
from . import KernelPlan
from .qconv import DTYPES, check_scalars

__all__ = [
    "ANCHORS",
    "EXACT_SUM_LIMIT",
    "NAME",
    "GroupedWorkload",
    "LoweredGrouped",
    "QuantOperands",
    "float_bias",
    "grouped_qconv_workload",
    "lower_grouped",
    "plan",
    "sum_bound",
]

NAME = "depthwise"
ANCHORS: tuple[str, ...] = ()  # reached through the conv and QConv families (group > 1)

#: Largest input channels per group accepted (the reduction per output channel is
#: ``C / group * KH * KW`` taps, all unrolled but the channel loop).
MAX_GROUP_CHANNELS = 64

#: A grouped QConv is accepted while ``KH * KW * C / group * 255 * 128`` (the largest
#: accumulator magnitude) stays below this: every float32 partial sum is then an exact integer.
EXACT_SUM_LIMIT = 2**24

#: Largest magnitudes of ``x - x_zero_point`` (uint8 or int8, either way) and of an int8 weight.
MAX_CENTERED_INPUT, MAX_WEIGHT = 255, 128

F32 = "float32"


@dataclass(frozen=True)
class GroupedWorkload(WindowGeometry):
    """Everything that determines a grouped Conv kernel."""

    n: int
    c: int
    h: int
    w: int
    m: int
    group: int
    kh: int
    kw: int
    strides: tuple[int, int]
    pads: tuple[int, int, int, int]  # top, left, bottom, right
    dilations: tuple[int, int]
    has_bias: bool

    @property
    def cg(self) -> int:
        """Input channels per group."""
        return self.c // self.group

    @property
    def mg(self) -> int:
        """Output channels per group."""
        return self.m // self.group

    @property
    def depthwise(self) -> bool:
        """One input channel per group (a channel multiplier ``mg`` may be above 1)."""
        return self.cg == 1

    def row_len(self, col_phases: bool = True) -> int:
        """``Wq``, the flattened row length: the width of one stride phase of the padded
        input, or with ``col_phases=False`` (columns at full resolution, the epilogue
        picking every ``stride``-th) the padded width."""
        wp = self.w + self.pads[1] + self.pads[3]
        return self.phase_hw[1] if col_phases else wp

    def flat_len(self, col_phases: bool = True) -> int:
        """Flattened positions up to the last valid output (see `row_len`)."""
        ho, wo = self.out_hw
        step = 1 if col_phases else self.strides[1]
        return (ho - 1) * self.row_len(col_phases) + (wo - 1) * step + 1

    @property
    def flops(self) -> int:
        """Multiply-adds times two over the valid output."""
        ho, wo = self.out_hw
        return 2 * self.n * self.m * ho * wo * self.cg * self.kh * self.kw


def _ints(seq: Any, n: int, default: int) -> tuple[int, ...]:
    if seq is None or len(seq) == 0:
        return (default,) * n
    return tuple(int(x) for x in seq)


def grouped_workload(node: Node) -> GroupedWorkload:
    """Read a grouped Conv node into a `GroupedWorkload`.

    Raises:
        LoweringError: not 2-D, group not dividing the channels, too many channels per group
            (`MAX_GROUP_CHANNELS`), an unsupported auto_pad, or unknown shapes.
    """
    x, w = node.inputs[0], node.inputs[1]
    if x is None or w is None:
        raise LoweringError(f"{node!r}: Conv needs X and W")
    _check_f32(x)
    _check_f32(w)
    has_bias = len(node.inputs) > 2 and node.inputs[2] is not None
    return _workload(node, _static_shape(x), _static_shape(w), has_bias)


def grouped_qconv_workload(node: Node) -> GroupedWorkload:
    """Read a grouped ``lepton.QConv`` node into a `GroupedWorkload`, checking its operands'
    dtypes and shapes and that its float32 sum is exact (`EXACT_SUM_LIMIT`).

    Raises:
        LoweringError: what `grouped_workload` refuses; activations that are not uint8/int8,
            weights that are not int8, a bias that is not int32 ``[M]``, a w_scale that is
            not float32 ``[M]`` or a scalar, or a reduction too long to sum exactly.
    """
    x, w = node.inputs[0], node.inputs[W_INPUT]
    ws = node.inputs[W_SCALE_INPUT]
    if x is None or w is None or ws is None:
        raise LoweringError(f"{node!r}: QConv needs x, w and w_scale")
    if x.dtype not in (DType.UINT8, DType.INT8) or w.dtype is not DType.INT8:
        raise LoweringError(f"{node!r}: QConv needs uint8/int8 x and int8 w")
    bias = node.inputs[BIAS_INPUT] if len(node.inputs) > BIAS_INPUT else None
    wl = _workload(node, _static_shape(x), _static_shape(w), bias is not None)
    if bias is not None and (_static_shape(bias) != (wl.m,) or bias.dtype is not DType.INT32):
        raise LoweringError(f"{node!r}: bias must be int32 [M]")
    if int(np.prod(_static_shape(ws))) not in (1, wl.m) or ws.dtype is not DType.FLOAT32:
        raise LoweringError(f"{node!r}: w_scale must be float32 [M] or a scalar")
    bound = sum_bound(wl)
    if bound >= EXACT_SUM_LIMIT:
        raise LoweringError(
            f"{node!r}: a sum of {wl.kh * wl.kw * wl.cg} int8 products may reach {bound}, "
            f"not exact in float32 (limit {EXACT_SUM_LIMIT})"
        )
    return wl


def sum_bound(wl: GroupedWorkload) -> int:
    """The largest magnitude a QConv's accumulator (without bias) can reach."""
    return wl.kh * wl.kw * wl.cg * MAX_CENTERED_INPUT * MAX_WEIGHT


def float_bias(bias: np.ndarray | None, wl: GroupedWorkload) -> bool:
    """Whether a constant int32 bias can be declared float32 and added to the float32 sum:
    exact when ``|acc| + |bias|`` stays below 2**24 (one addition per output instead of two
    conversions around an integer one)."""
    if bias is None:
        return False
    largest = int(np.abs(np.asarray(bias, np.int64)).max(initial=0))
    return sum_bound(wl) + largest < EXACT_SUM_LIMIT


def _workload(
    node: Node, xs: tuple[int, ...], ws: tuple[int, ...], has_bias: bool
) -> GroupedWorkload:
    """The geometry of a grouped convolution node with input shape `xs` and weight shape
    `ws` (the attributes Conv and QConv share)."""
    if len(xs) != 4 or len(ws) != 4:
        raise LoweringError(f"{node!r}: only 2-D Conv (NCHW) is supported, X is {xs}")
    group = int(node.attr("group", 1))
    if group < 1 or xs[1] % group or ws[0] % group or ws[1] * group != xs[1]:
        raise LoweringError(f"{node!r}: group={group} does not fit X {xs} and W {ws}")
    if ws[1] > MAX_GROUP_CHANNELS:
        raise LoweringError(
            f"{node!r}: grouped Conv with {ws[1]} channels per group (max {MAX_GROUP_CHANNELS})"
        )
    auto_pad = node.attr("auto_pad", "NOTSET")
    if isinstance(auto_pad, bytes):
        auto_pad = auto_pad.decode()
    strides = _ints(node.attr("strides"), 2, 1)
    dilations = _ints(node.attr("dilations"), 2, 1)
    kh, kw = ws[2], ws[3]
    if auto_pad in ("NOTSET", "VALID"):
        pads = _ints(node.attr("pads"), 4, 0) if auto_pad == "NOTSET" else (0, 0, 0, 0)
        top, left, bottom, right = pads
    elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        tb = []
        for i, k in ((2, kh), (3, kw)):
            s, d = strides[i - 2], dilations[i - 2]
            total = max(0, (-(-xs[i] // s) - 1) * s + d * (k - 1) + 1 - xs[i])
            small, big = total // 2, total - total // 2
            tb.append((small, big) if auto_pad == "SAME_UPPER" else (big, small))
        (top, bottom), (left, right) = tb
    else:
        raise LoweringError(f"{node!r}: auto_pad={auto_pad!r} not supported")
    wl = GroupedWorkload(
        n=xs[0], c=xs[1], h=xs[2], w=xs[3], m=ws[0], group=group, kh=kh, kw=kw,
        strides=(strides[0], strides[1]), pads=(top, left, bottom, right),
        dilations=(dilations[0], dilations[1]), has_bias=has_bias,
    )  # fmt: skip
    if min(wl.out_hw) < 1:
        raise LoweringError(f"{node!r}: empty output {wl.out_hw}")
    return wl


@dataclass(frozen=True)
class QuantOperands:
    """The integer operands of a grouped QConv, as the kernel declares them.

    Attributes:
        zero_point: ``x_zero_point`` ``[1]`` in the activations' dtype.
        x_scale: ``[1]`` float32.
        w_scale: ``[M]`` or ``[1]`` float32.
        bias: ``[M]``, int32, or float32 where `float_bias` allows it; or None.
    """

    zero_point: te.Tensor
    x_scale: te.Tensor
    w_scale: te.Tensor
    bias: te.Tensor | None

    def centered(self, value: Any) -> Any:
        """``float(x) - float(x_zero_point)`` of a loaded activation (exact in float32)."""
        return tirx.Cast(F32, value) - tirx.Cast(F32, self.zero_point[0])

    def finish(self, acc: Any, m: Any) -> Any:
        """``float32(acc + bias[m]) * (x_scale * w_scale[m])`` of the exact float32 sum
        `acc` of output channel `m`: an int32 bias added in int32 (the reference rounds the
        int32 sum, which may exceed 2**24, once), a float32 one in float32 (exact, see
        `float_bias`); the scales multiplied in float32 first."""
        if self.bias is not None and str(self.bias.dtype) == F32:
            acc = acc + self.bias[m]
        elif self.bias is not None:
            acc = tirx.Cast(F32, tirx.Cast("int32", acc) + self.bias[m])
        ws = self.w_scale[m] if int(self.w_scale.shape[0]) > 1 else self.w_scale[0]
        return acc * (self.x_scale[0] * ws)


def grouped_conv(
    x: te.Tensor,
    w: te.Tensor,
    bias: te.Tensor | None,
    wl: GroupedWorkload,
    p_align: int,
    vector_lanes: int,
    col_phases: bool = True,
    quant: QuantOperands | None = None,
) -> tuple[te.Tensor, int, list[str]]:
    """The TE grouped conv: ``dw_pad_*`` -> ``dw_flat`` -> the cropped NCHW result (plus bias).

    Args:
        x: input placeholder ``[N, C, H, W]``.
        w: weight placeholder ``[M, C / group, KH, KW]``.
        bias: optional bias ``[M]``.
        wl: the workload.
        p_align: the flattened length of ``dw_flat`` is rounded up to a multiple of this
            (the schedule's register tile).
        vector_lanes: fp32 lanes per vector.
        col_phases: split a column stride into phases (every tap a contiguous run, but
            the input is read with that stride); else compute every column and let the
            epilogue read every ``stride``-th (see `GroupedWorkload.row_len`).
        quant: for a QConv (`x` uint8/int8, `w` its int8 weights declared float32, `bias`
            None): the planes hold the centered input and the crop finishes the exact sum
            (`QuantOperands`).

    Returns:
        The NCHW output (a stage the epilogue reads), ``Wq`` (the flattened row length) and
        the names of the padded phase planes ``dw_pad_<ph>_<pw>``.
    """
    sh, sw = wl.strides
    dh, dw = wl.dilations
    pt, pl = wl.pads[0], wl.pads[1]
    ho, wo = wl.out_hw
    csw = sw if col_phases else 1  # the column stride of the phase split
    wq = wl.row_len(col_phases)
    plen = -(-wl.flat_len(col_phases) // p_align) * p_align
    reach = ((dh * (wl.kh - 1)) // sh) * wq + (dw * (wl.kw - 1)) // csw
    rows = -(-(plen + reach) // wq)

    def phase(ph: int, pw: int) -> te.Tensor:
        def pad_fn(n: Any, c: Any, r: Any, col: Any) -> Any:
            hi = r * sh + (ph - pt)
            wi = col * csw + (pw - pl)
            inside = tirx.all(hi >= 0, hi < wl.h, wi >= 0, wi < wl.w)
            v = x[n, c, hi, wi]
            v = quant.centered(v) if quant is not None else v
            return tirx.if_then_else(inside, v, tirx.const(0.0, F32))

        return te.compute((wl.n, wl.c, rows, wq), pad_fn, name=f"{DW_PAD}_{ph}_{pw}")

    # One zero-padded plane per stride phase some tap reads; the taps are unrolled in the
    # compute (a tap picks its phase statically), so the only reduction is over channels.
    taps = [
        (i, j, (dh * i) % sh, (dh * i) // sh, (dw * j) % csw, (dw * j) // csw)
        for i in range(wl.kh)
        for j in range(wl.kw)
    ]
    planes = {(ph, pw): phase(ph, pw) for _, _, ph, _, pw, _ in taps}
    cg, mg = wl.cg, wl.mg
    rc = te.reduce_axis((0, cg), name="rc") if cg > 1 else None

    lanes = min(p_align, vector_lanes)
    nvec = p_align // lanes

    def flat_fn(n: Any, m: Any, t: Any, j: Any, lane: Any) -> Any:
        v = j * lanes + lane
        c = m if (cg, mg) == (1, 1) else (m // mg) * cg + (rc if rc is not None else 0)
        k = rc if rc is not None else 0
        terms = []
        for ti, tj, ph, oh, pw, ow in taps:
            q = t * p_align + v + ow  # row offsets apart, so flattening simplifies back
            plane = planes[ph, pw]
            terms.append(plane[n, c, q // wq + oh, q % wq] * w[m, k, ti, tj])
        total = terms[0]
        for term in terms[1:]:
            total = total + term
        return te.sum(total, axis=[rc]) if rc is not None else total

    # [tiles, vectors per tile, lanes]: the epilogue's reads ``p // p_align``,
    # ``p // lanes % nvec`` and ``p % lanes`` each cover their whole dimension, so the
    # schedule computes whole tiles (no predicate in the vector loop).
    flat = te.compute((wl.n, wl.m, plen // p_align, nvec, lanes), flat_fn, name=DW_FLAT)

    def crop_fn(n: Any, m: Any, h: Any, x_: Any) -> Any:
        p = h * wq + x_ * (sw // csw)
        v = flat[n, m, p // p_align, p // lanes % nvec, p % lanes]
        if quant is not None:
            return quant.finish(v, m)
        return v + bias[m] if bias is not None else v

    pad_names = [t.op.name for t in planes.values()]
    return te.compute((wl.n, wl.m, ho, wo), crop_fn, name="dw_crop"), wq, pad_names


@dataclass
class LoweredGrouped:
    """A grouped-conv group as TE (see `lower_grouped`).

    Attributes:
        params: placeholders in kernel-argument order (outputs follow them).
        outputs: the output tensors, in the order of the group's outputs.
        output_shapes: the outputs' shapes in the IR.
        input_indices: for each placeholder, the index of the fused node's input it receives.
        conv: the workload.
        wq: the flattened row length of the padded planes and of ``dw_flat``.
        pad_names: the padded phase planes' stage names.
        key: a hashable description of the computation (shapes, attributes, ops).
        stage_names: the epilogue stages (the crop first), in order.
    """

    params: list[te.Tensor]
    outputs: list[te.Tensor]
    output_shapes: list[tuple[int, ...]]
    input_indices: list[int]
    conv: GroupedWorkload
    wq: int
    pad_names: list[str]
    key: tuple[Any, ...]
    stage_names: list[str] = field(default_factory=list)

    def prim_func(self) -> tirx.PrimFunc:
        """The PrimFunc ``(params..., outputs...)`` (outputs written in place)."""
        return te.create_prim_func([*self.params, *self.outputs])


def _static_shape(v: Value) -> tuple[int, ...]:
    shape = v.shape
    if shape is None or not all(isinstance(d, (int, np.integer)) for d in shape):
        raise LoweringError(f"%{v.name}: needs a static shape, has {shape}")
    return tuple(int(d) for d in shape)


def _check_f32(v: Value) -> None:
    if v.dtype is not DType.FLOAT32:
        raise LoweringError(f"%{v.name}: only float32 is supported, got {v.dtype}")


def _unary(a: te.Tensor, fn: Callable[[Any], Any], name: str) -> te.Tensor:
    return te.compute(a.shape, lambda *i: fn(a(*i)), name=name)


def _broadcast(
    fn: Callable[[Any, Any], Any], a: te.Tensor, b: te.Tensor, shape: tuple[int, ...], name: str
) -> te.Tensor:
    """Element-wise binary op with numpy broadcasting to `shape`."""

    def index(t: te.Tensor, idx: tuple[Any, ...]) -> Any:
        dims = [int(d) for d in t.shape]
        off = len(idx) - len(dims)
        return t[tuple(0 if d == 1 else idx[off + i] for i, d in enumerate(dims))]

    return te.compute(shape, lambda *i: fn(index(a, i), index(b, i)), name=name)


def lower_grouped(
    fused: Node, p_align: int, lanes: int = 16, col_phases: bool = True
) -> LoweredGrouped:
    """Lower a `lepton.Fused` group anchored on a grouped Conv or QConv to TE.

    Body inputs become placeholders the first time a node reads them as a tensor, so the
    kernel's parameters are a subset of the fused node's inputs. A QConv's weights are
    declared float32 (the int8 constants are converted when the kernel's arguments are made),
    its scalars ``[1]``.

    Raises:
        LoweringError: an op, attribute, dtype or shape this family does not handle.
    """
    body: Graph = fused.attrs["body"]
    outer = {b: o for b, o in zip(body.inputs, fused.inputs, strict=True) if o is not None}
    position = {b: i for i, b in enumerate(body.inputs)}
    env: dict[Value, te.Tensor] = {}
    used: set[Value] = set()
    wl: GroupedWorkload | None = None
    wq = 0
    pad_names: list[str] = []
    key: list[Any] = []
    names: list[str] = []

    def const_of(v: Value | None) -> np.ndarray | None:
        if v is None:
            return None
        src = outer.get(v, v)
        return None if src.const is None else np.asarray(src.const)

    def declare(v: Value | None, dtype: str, shape: tuple[int, ...] | None = None) -> te.Tensor:
        """Body input `v` as a placeholder of `dtype` and `shape` (default: its own)."""
        if v is None or v not in position:
            raise LoweringError("a grouped conv's operands must be group inputs")
        shape = _static_shape(v) if shape is None else shape
        t = env.get(v)
        if t is None:
            t = env[v] = te.placeholder(shape, dtype, name=f"arg{position[v]}")
            used.add(v)
        elif (str(t.dtype), tuple(int(d) for d in t.shape)) != (dtype, shape):
            raise LoweringError(f"%{v.name} is read as two different types")
        return t

    def tensor(v: Value | None, integer: bool = False) -> te.Tensor:
        """A value an epilogue op reads: float32, or also uint8/int8 when `integer` (the
        input of a DequantizeLinear)."""
        if v is None:
            raise LoweringError("missing input")
        if v in position:
            if not (integer and v.dtype in (DType.UINT8, DType.INT8)):
                _check_f32(v)
            return declare(v, DTYPES[v.dtype])  # type: ignore[index]
        if v in env:
            return env[v]
        raise LoweringError(f"%{v.name} is neither a body input nor computed in the body")

    ref: dict[Value, tuple[str, int]] = {v: ("in", i) for i, v in enumerate(body.inputs)}
    for i, node in enumerate(body):
        name = f"{node.op_type.lower()}_{i}"
        key.append(tuple(None if v is None else ref.get(v) for v in node.inputs))
        op = node.op
        if len(node.outputs) != 1:
            raise LoweringError(f"{node!r}: multi-output nodes are not supported")
        out = node.outputs[0]
        if op == "Conv":
            if wl is not None:
                raise LoweringError("a group with two Convs is not supported")
            wl = grouped_workload(node)
            if i != 0 and any(v in env for v in node.inputs):
                raise LoweringError(f"{node!r}: the grouped Conv must read the group's inputs")
            x = tensor(node.inputs[0])
            w = tensor(node.inputs[1])
            b = tensor(node.inputs[2]) if wl.has_bias else None
            if b is not None and [int(d) for d in b.shape] != [wl.m]:
                raise LoweringError(f"{node!r}: bias shape {b.shape}")
            res, wq, pad_names = grouped_conv(x, w, b, wl, p_align, lanes, col_phases)
            key.append(("GroupedConv", wl, p_align, lanes, col_phases))
        elif op == "lepton.QConv":
            if wl is not None:
                raise LoweringError("a group with two Convs is not supported")
            wl = grouped_qconv_workload(node)
            x_v, xs_v, xz_v = node.inputs[:3]
            if x_v is None or xs_v is None or xz_v is None:
                raise LoweringError(f"{node!r}: QConv needs x, x_scale and x_zero_point")
            x_dtype = check_scalars(x_v, xs_v, xz_v)
            ws_v = node.inputs[W_SCALE_INPUT]
            assert ws_v is not None  # checked by grouped_qconv_workload
            ws_n = int(np.prod(_static_shape(ws_v)))
            b_v = node.inputs[BIAS_INPUT] if wl.has_bias else None
            b_dtype = F32 if float_bias(const_of(b_v), wl) else "int32"
            quant = QuantOperands(
                zero_point=declare(xz_v, x_dtype, (1,)),
                x_scale=declare(xs_v, F32, (1,)),
                w_scale=declare(ws_v, F32, (ws_n,)),
                bias=declare(b_v, b_dtype) if b_v is not None else None,
            )
            x = declare(x_v, x_dtype)
            w = declare(node.inputs[W_INPUT], F32)
            res, wq, pad_names = grouped_conv(
                x, w, None, wl, p_align, lanes, col_phases, quant=quant
            )
            key.append(("GroupedQConv", wl, x_dtype, ws_n, p_align, lanes, col_phases))
        elif wl is None:
            raise LoweringError(f"{node!r}: the group must start with its grouped Conv")
        elif (
            (fn2 := binary_builder(op)) is not None
            and len(node.inputs) == 2
            and (op != "Pow" or const_of(node.inputs[1]) is None)
        ):
            a, b2 = tensor(node.inputs[0]), tensor(node.inputs[1])
            res = _broadcast(fn2, a, b2, _static_shape(out), name)
            key.append((op, tuple(int(d) for d in a.shape), tuple(int(d) for d in b2.shape)))
        elif op == "Identity":
            env[out] = tensor(node.inputs[0])
            ref[out] = ref.get(node.inputs[0], ("node", i))  # type: ignore[arg-type]
            continue
        elif (fn1 := unary_builder(node, const_of)) is not None:
            if op == "QuantizeLinear" and node is list(body)[-1]:
                if out.dtype not in (DType.UINT8, DType.INT8):
                    raise LoweringError(f"{node!r}: QuantizeLinear to {out.dtype}")
            else:
                _check_f32(out)
            a = tensor(node.inputs[0], integer=op == "DequantizeLinear")
            res = _unary(a, fn1, name)
            consts = tuple(
                None if (c := const_of(v)) is None else repr(np.asarray(c).tolist())
                for v in node.inputs[1:]
            )
            attrs = tuple(sorted((k, repr(val)) for k, val in node.attrs.items()))
            key.append((op, attrs, consts, str(out.dtype)))
        else:
            raise LoweringError(f"op {op} is not supported by the TVM backend yet")
        env[out] = res
        ref[out] = ("node", i)
        names.append(res.op.name)
    if wl is None:
        raise LoweringError("grouped conv group without a Conv")
    if len(body.outputs) != 1:
        raise LoweringError("grouped conv groups with several outputs are not supported")
    conv_shape = (wl.n, wl.m, *wl.out_hw)
    outputs = []
    for o in body.outputs:
        if o not in env or o in position:
            raise LoweringError(f"group output %{o.name} is not computed in the body")
        t = env[o]
        if tuple(int(d) for d in t.shape) != conv_shape:
            raise LoweringError(f"group output %{o.name} is not conv-shaped")
        outputs.append(t)
    params_v = sorted(used, key=lambda v: position[v])
    params = [env[v] for v in params_v]
    in_shapes = tuple(
        (position[v], tuple(int(d) for d in env[v].shape), str(env[v].dtype)) for v in params_v
    )
    out_ids = tuple(names.index(t.op.name) for t in outputs)
    return LoweredGrouped(
        params=params,
        outputs=outputs,
        output_shapes=[_static_shape(o) for o in body.outputs],
        input_indices=[position[v] for v in params_v],
        conv=wl,
        wq=wq,
        pad_names=pad_names,
        key=(in_shapes, tuple(key), out_ids),
        stage_names=names,
    )


def plan(fused: Node, target: Any) -> KernelPlan:
    """Lower and configure a grouped-conv group (see the module docstring).

    Raises:
        LoweringError: the group holds something this family does not handle.
    """
    conv = next((n for n in fused.attrs["body"] if n.op in ("Conv", "lepton.QConv")), None)
    if conv is None:
        raise LoweringError("grouped conv group without a Conv")
    wl = grouped_workload(conv) if conv.op == "Conv" else grouped_qconv_workload(conv)
    cfg: DepthwiseConfig = choose_config(wl, vector_lanes(target))
    lg = lower_grouped(fused, cfg.p_align, cfg.lanes, cfg.col_phases)
    return KernelPlan(
        key=("grouped", lg.key, cfg),
        make=lambda: schedule_grouped(lg, cfg),
        input_indices=lg.input_indices,
        param_shapes=[tuple(int(d) for d in t.shape) for t in lg.params],
        output_shapes=lg.output_shapes,
        kernel_output_shapes=[tuple(int(d) for d in t.shape) for t in lg.outputs],
        config=cfg,
        family=NAME,
        param_dtypes=[str(t.dtype) for t in lg.params],  # a QConv's int8 weights -> float32
        output_dtypes=[str(t.dtype) for t in lg.outputs],  # uint8/int8 after a QuantizeLinear
    )
