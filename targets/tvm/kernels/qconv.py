"""QConv family: ``lepton.QConv`` (2-D NCHW, groups=1; uint8 or int8 activations, int8
weights, int32 bias) with its float epilogue, as one int8 kernel (`schedules.x86_qconv`).

The group's body is the integer conv followed by element-wise ops on its float32 output:
Relu/Clip and the other unary ops of `te_elementwise`, binary ops with a float side tensor
(a residual Add) or a constant scalar, ``DequantizeLinear`` of a uint8/int8 side tensor, and
``QuantizeLinear`` to uint8/int8 (constant scalar scale and zero point), which makes that
output uint8/int8. `lower_epilogue` turns that chain into a `QEpilogue` the kernel runs in its
store; `kernels.qdense` uses it too. ``QuantizeLinear`` multiplies by the scale's reciprocal
and rounds in the conversion (`quantize_by_reciprocal`): one unit off the reference's
division where a value lies within an ulp of a rounding tie.

Kernel parameters (`KernelPlan.input_indices`): x, x_scale, x_zero_point, the weights packed
(`x86_qconv.pack_weights`), the weights again as per-channel sums (`weight_sums`, for the
zero-point compensation), w_scale, the bias if present, the epilogue's side tensors.
Grouped and depthwise QConvs (``group > 1``) go to the grouped-conv family
(`kernels.depthwise`). Refused (`LoweringError`; the group runs its reference kernel):
non-2-D kernels, dynamic shapes, a zero point or scale that is not a scalar, ops before the
QConv or outside the epilogue table.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from tvm import tirx

from lepton_compiler.ir import DType, Graph, Node, Value
from lepton_compiler.ops.kernels._padding import auto_pad_of, pads_for, window_attrs

from ..schedules.x86_qconv import (
    LANES,
    Operand,
    QConvWorkload,
    QEpilogue,
    choose_qconv_tile,
    fma,
    lrint,
    pack_weights,
    qconv_func,
    weight_sums,
)
from ..te_elementwise import QUANT_RANGES, binary_builder, unary_builder
from ..te_ops import LoweringError
from ..vnni import has_vnni
from . import KernelPlan

NAME = "qconv"
ANCHORS = ("lepton.QConv",)

#: IR dtypes the int8 kernels read and write, by TVM name.
DTYPES = {DType.FLOAT32: "float32", DType.UINT8: "uint8", DType.INT8: "int8",
          DType.INT32: "int32"}  # fmt: skip

Expr = Any


def plan(fused: Node, target: Any) -> KernelPlan:
    """Lower a QConv group (see the module docstring)."""
    body: Graph = fused.attrs["body"]
    anchor = anchor_of(body, "lepton.QConv")
    if int(anchor.attr("group", 1)) != 1:
        from . import depthwise  # imports this module: loaded on first use

        return depthwise.plan(fused, target)
    wl = qconv_workload(anchor)
    position = {b: i for i, b in enumerate(body.inputs)}
    x_v, xs_v, xz_v, w_v, ws_v = (body_input(anchor.inputs[i], position) for i in range(5))
    b_v = anchor.inputs[5] if len(anchor.inputs) > 5 else None
    if b_v is not None:
        b_v = body_input(b_v, position)
    x_dtype = check_scalars(x_v, xs_v, xz_v)
    epi, epi_inputs = lower_epilogue(fused, anchor, static_shape(anchor.outputs[0]))
    epi = folded_requantize(fused, anchor, epi)
    tile = choose_qconv_tile(wl, threads_of(target))
    vnni = has_vnni(target)
    mb = -(-wl.m // tile.r)
    ho, wo = wl.out_hw
    out_len = wl.n * wl.m * ho * wo
    indices = [position[x_v], position[xs_v], position[xz_v], position[w_v], position[w_v],
               position[ws_v]]  # fmt: skip
    shapes: list[tuple[int, ...]] = [
        (wl.n * wl.c * wl.h * wl.w,), (1,), (1,), (mb * wl.c4 * wl.kh * wl.kw * tile.r,),
        (mb * tile.r,), (wl.m if wl.per_channel else 1,),
    ]  # fmt: skip
    dtypes = [x_dtype, "float32", x_dtype, "int32", "int32", "float32"]
    if b_v is not None:
        indices.append(position[b_v])
        shapes.append((wl.m,))
        dtypes.append("int32")
    for v, op in zip(epi_inputs, epi.operands, strict=True):
        indices.append(position[v])
        shapes.append((op.size,))
        dtypes.append(op.dtype)
    r = tile.r
    packs: dict[int, Callable[[np.ndarray], np.ndarray]] = {
        3: lambda w: pack_weights(w, wl, r).reshape(-1),
        4: lambda w: weight_sums(w, mb * r),
    }

    def make() -> Any:
        return qconv_func(wl, tile, epi, vnni, x_dtype)

    return KernelPlan(
        key=("qconv", wl, tile, vnni, x_dtype, epi.key),
        make=make,
        input_indices=indices,
        param_shapes=shapes,
        output_shapes=[static_shape(o) for o in body.outputs],
        kernel_output_shapes=[(out_len,)] * len(body.outputs),
        packs=packs,
        config=tile,
        param_dtypes=dtypes,
        output_dtypes=list(epi.output_dtypes),
    )


# -- reading the group --------------------------------------------------------------------------


def threads_of(target: Any) -> int:
    """The target's core count (2 when it does not say)."""
    try:
        return int(target.attrs["num-cores"])
    except (AttributeError, KeyError, TypeError, ValueError):
        return 2


def anchor_of(body: Graph, op: str) -> Node:
    """The group's integer op: its first node, the only one of its kind."""
    nodes = list(body)
    if not nodes or nodes[0].op != op:
        raise LoweringError(f"an int8 group must start with its {op} (no prologue)")
    if any(n.op in ("lepton.QConv", "lepton.QMatMul") for n in nodes[1:]):
        raise LoweringError("a group with two integer ops is not supported")
    return nodes[0]


def body_input(v: Value | None, position: dict[Value, int]) -> Value:
    """`v`, which must be an input of the group's body."""
    if v is None or v not in position:
        raise LoweringError("an integer op's operands must be group inputs")
    return v


def static_shape(v: Value) -> tuple[int, ...]:
    """`v`'s shape, which must be fully static."""
    shape = v.shape
    if shape is None or not all(isinstance(d, (int, np.integer)) for d in shape):
        raise LoweringError(f"%{v.name}: needs a static shape, has {shape}")
    return tuple(int(d) for d in shape)


def check_scalars(x: Value, scale: Value, zp: Value) -> str:
    """The activations' TVM dtype (uint8/int8), checking that the scale and zero point are
    scalars of the right dtypes."""
    if x.dtype not in (DType.UINT8, DType.INT8):
        raise LoweringError(f"%{x.name}: activations must be uint8 or int8, got {x.dtype}")
    if math.prod(static_shape(scale)) != 1 or scale.dtype is not DType.FLOAT32:
        raise LoweringError(f"%{scale.name}: the activation scale must be a float32 scalar")
    if math.prod(static_shape(zp)) != 1 or zp.dtype is not x.dtype:
        raise LoweringError(f"%{zp.name}: the zero point must be a scalar of the input's dtype")
    return DTYPES[x.dtype]


def qconv_workload(node: Node) -> QConvWorkload:
    """Read a ``lepton.QConv`` node into a `QConvWorkload`.

    Raises:
        LoweringError: not 2-D, grouped, dynamic shapes, or operands of unexpected shapes.
    """
    x, w, ws = node.inputs[0], node.inputs[3], node.inputs[4]
    if x is None or w is None or ws is None:
        raise LoweringError(f"{node!r}: missing operand")
    xs, wsh = static_shape(x), static_shape(w)
    if len(xs) != 4 or len(wsh) != 4:
        raise LoweringError(f"{node!r}: only 2-D convolutions (NCHW) are supported")
    if int(node.attr("group", 1)) != 1:
        raise LoweringError(f"{node!r}: grouped/depthwise QConv is not supported")
    if w.dtype is not DType.INT8:
        raise LoweringError(f"{node!r}: weights must be int8")
    n, c, h, wd = xs
    m, cw, kh, kw = wsh
    if cw != c:
        raise LoweringError(f"{node!r}: weights have {cw} input channels, x has {c}")
    ws_n = math.prod(static_shape(ws))
    if ws_n not in (1, m) or ws.dtype is not DType.FLOAT32:
        raise LoweringError(f"{node!r}: w_scale must be float32 [M] or a scalar")
    bias = node.inputs[5] if len(node.inputs) > 5 else None
    if bias is not None and (static_shape(bias) != (m,) or bias.dtype is not DType.INT32):
        raise LoweringError(f"{node!r}: bias must be int32 [M]")
    strides, dil, eff = window_attrs(node.attrs, [kh, kw])
    begin, end = pads_for(auto_pad_of(node.attrs), [h, wd], eff, strides, node.attrs.get("pads"))
    wl = QConvWorkload(
        n=n, c=c, h=h, w=wd, m=m, kh=kh, kw=kw,
        strides=(int(strides[0]), int(strides[1])),
        pads=(int(begin[0]), int(begin[1]), int(end[0]), int(end[1])),
        dilations=(int(dil[0]), int(dil[1])),
        signed=x.dtype is DType.INT8, has_bias=bias is not None, per_channel=ws_n == m > 1,
    )  # fmt: skip
    ho, wo = wl.out_hw
    if min(n, c, m, ho, wo) < 1:
        raise LoweringError(f"{node!r}: empty convolution")
    if any(p < 0 for p in wl.pads):
        raise LoweringError(f"{node!r}: negative padding")
    if m * wl.c4 * kh * kw >= 2**31 // LANES:
        raise LoweringError(f"{node!r}: too large")
    return wl


# -- the epilogue -------------------------------------------------------------------------------


ConstOf = Callable[[Value | None], np.ndarray | None]


def requantize_params(node: Node, const: ConstOf) -> tuple[str, float, float] | None:
    """A ``QuantizeLinear``'s output dtype, ``1 / scale`` (float32) and zero point, or None:
    not a constant scalar scale and zero point, a blocked node, or a scale that is not a
    positive finite float32 with a finite normal reciprocal."""
    ins = list(node.inputs)
    dtype = DTYPES.get(node.outputs[0].dtype)  # type: ignore[arg-type]
    scale = const(ins[1]) if len(ins) > 1 else None
    zp = const(ins[2]) if len(ins) > 2 and ins[2] is not None else np.zeros((), np.int32)
    if dtype not in QUANT_RANGES or scale is None or zp is None:
        return None
    if scale.size != 1 or zp.size != 1 or int(node.attr("block_size", 0) or 0):
        return None
    s = np.float32(scale.reshape(()))
    with np.errstate(all="ignore"):
        inv = np.float32(1.0) / s
    if not (np.isfinite(s) and s > 0 and np.isfinite(inv) and inv >= np.finfo(np.float32).tiny):
        return None
    return dtype, float(inv), float(zp.reshape(()).item())


def quantize_by_reciprocal(
    node: Node, const: ConstOf, nonnegative: bool
) -> Callable[[Expr], Expr] | None:
    """``QuantizeLinear`` (constant scalar scale and zero point) as one multiply-add and a
    rounding conversion: ``lrint(clamp(x * (1 / scale) + zp))`` instead of the reference's
    ``clamp(rint(x / scale) + zp)``. The two differ by one unit only where ``x / scale``
    lies within an ulp of a rounding tie (the tests allow it; ONNX Runtime's requantization
    multiplies as well). ``vdivps`` alone cost more than the rest of the epilogue: a
    requantized 1x1 64->256 layer on 56x56 ran 1.3x the time of its float-output form with
    the division and rounding written out, 1.16x in this form (Zen 4, 2 threads). A
    `nonnegative` input (a Relu's output) skips the lower clamp (``x * inv + zp >= zp >=
    lo``). None (the reference form stays): see `requantize_params`."""
    params = requantize_params(node, const)
    if params is None:
        return None
    dtype, inv, zp = params
    lo, hi = QUANT_RANGES[dtype]
    f32 = "float32"
    ic, zc = tirx.const(inv, f32), tirx.const(zp, f32)
    low = None if nonnegative else tirx.const(float(lo), f32)

    def quantize(v: Expr) -> Expr:
        t = fma(v, ic, zc)
        t = tirx.min(t if low is None else tirx.max(t, low), tirx.const(float(hi), f32))
        return tirx.Cast(dtype, lrint(t))

    return quantize


def folded_requantize(fused: Node, anchor: Node, epi: QEpilogue) -> QEpilogue:
    """`epi` itself, or, for a group that only requantizes (``QConv [-> Relu] ->
    QuantizeLinear`` with a constant scalar scale and zero point, one output), an
    epilogue whose ``affine = (1 / scale, zp)`` the conv folds into its per-channel scale
    and shift, so each output vector costs one multiply-add, a clamp (to ``[max(lo, zp),
    hi]`` after a Relu: ``relu(y) / s + zp`` is ``max(y / s + zp, zp)``) and the rounding
    conversion. Within a unit of the unfolded form (products rounded in another order)."""
    body: Graph = fused.attrs["body"]
    nodes = list(body)[1:]
    ops = [n.op for n in nodes]
    if ops not in (["QuantizeLinear"], ["Relu", "QuantizeLinear"]) or epi.operands:
        return epi
    prev = anchor.outputs[0]
    for n in nodes:
        if not n.inputs or n.inputs[0] is not prev:
            return epi
        prev = n.outputs[0]
    if list(body.outputs) != [prev]:
        return epi
    q = nodes[-1]
    outer = {b: o for b, o in zip(body.inputs, fused.inputs, strict=True) if o is not None}

    def const(v: Value | None) -> np.ndarray | None:
        c = None if v is None else outer.get(v, v).const
        return None if c is None else np.asarray(c)

    params = requantize_params(q, const)
    if params is None:
        return epi
    dtype, inv, z = params
    lo, hi = QUANT_RANGES[dtype]
    low = tirx.const(float(max(lo, z)) if len(nodes) == 2 else float(lo), "float32")
    high = tirx.const(float(hi), "float32")

    def fn(y: Expr, idx: tuple[Expr, ...], loads: list[Any]) -> list[Expr]:
        return [tirx.Cast(dtype, lrint(tirx.min(tirx.max(y, low), high)))]

    return QEpilogue(
        out_shape=epi.out_shape,
        operands=(),
        output_dtypes=(dtype,),
        fn=fn,
        key=("requantize", dtype, inv, z, len(nodes) == 2),
        affine=(inv, z),
    )


Fn = Callable[[Expr, tuple[Expr, ...], list[Callable[[tuple[Expr, ...]], Expr]]], Expr]


def lower_epilogue(
    fused: Node, anchor: Node, out_shape: tuple[int, ...]
) -> tuple[QEpilogue, list[Value]]:
    """The element-wise ops after `anchor` as a `QEpilogue` over `out_shape` (the anchor's
    output shape), and the body inputs behind its operands (in operand order).

    Raises:
        LoweringError: an op outside the table, an operand that does not broadcast to the
            output, an op with another output shape, or a group output of another dtype
            than float32/uint8/int8.
    """
    body: Graph = fused.attrs["body"]
    outer = {b: o for b, o in zip(body.inputs, fused.inputs, strict=True) if o is not None}
    position = {b: i for i, b in enumerate(body.inputs)}
    values: dict[Value, Fn] = {anchor.outputs[0]: lambda y, idx, loads: y}
    operands: list[Value] = []
    specs: list[Operand] = []
    key: list[Any] = []
    ref: dict[Value, Any] = {v: ("in", i) for i, v in enumerate(body.inputs)}
    ref[anchor.outputs[0]] = ("anchor",)

    def const(v: Value | None) -> np.ndarray | None:
        if v is None:
            return None
        src = outer.get(v, v)
        return None if src.const is None else np.asarray(src.const)

    def operand(v: Value | None, reader: Node) -> Fn:
        """A value the epilogue reads: computed in it, a scalar constant, or a side tensor."""
        if v is None:
            raise LoweringError(f"{reader!r}: missing operand")
        if v in values:
            return values[v]
        if v not in position:
            raise LoweringError(f"%{v.name} is neither a group input nor computed in it")
        c = const(v)
        dt = DTYPES.get(v.dtype)  # type: ignore[arg-type]
        if dt is None or dt == "int32":
            raise LoweringError(f"%{v.name}: {v.dtype} operands are not supported")
        if c is not None and c.size == 1:
            val = c.reshape(()).item()
            key.append(("scalar", dt, val))
            return lambda y, idx, loads: tirx.const(val, dt)
        shape = static_shape(v)
        full = (1,) * (len(out_shape) - len(shape)) + shape
        if len(shape) > len(out_shape) or any(
            s not in (1, o) for s, o in zip(full, out_shape, strict=True)
        ):
            raise LoweringError(f"%{v.name} {shape} does not broadcast to {out_shape}")
        if v not in operands:
            operands.append(v)
            specs.append(Operand(shape, dt))
        k = operands.index(v)
        key.append(("operand", k, shape, dt))
        return lambda y, idx, loads: loads[k](idx)

    relu_outs: set[Value] = set()  # values a Relu computed (never negative)
    for node in list(body)[1:]:
        if node.op == "Relu":
            relu_outs.update(node.outputs)
        if len(node.outputs) != 1:
            raise LoweringError(f"{node!r}: multi-output nodes are not supported")
        out = node.outputs[0]
        if static_shape(out) != out_shape:
            raise LoweringError(f"{node!r}: output {out.shape} is not the product's {out_shape}")
        ins = list(node.inputs)
        key.append((node.op, tuple(sorted((k, repr(a)) for k, a in node.attrs.items())),
                    tuple(None if v is None else ref.get(v) for v in ins)))  # fmt: skip
        ref[out] = ("node", len(ref))
        un = unary_builder(node, const) if ins and ins[0] is not None else None
        if un is not None and node.op == "QuantizeLinear":
            un = quantize_by_reciprocal(node, const, ins[0] in relu_outs) or un
        if un is not None:
            src = operand(ins[0], node)
            key.append(tuple(None if (c := const(v)) is None
                             else (str(c.dtype), c.reshape(-1)[:4].tolist())
                             for v in ins[1:]))  # fmt: skip
            key.append(("->", DTYPES.get(out.dtype)))  # type: ignore[arg-type]
            values[out] = lambda y, idx, loads, f=src, g=un: g(f(y, idx, loads))
            continue
        fn = binary_builder(node.op)
        if fn is None or len(ins) != 2:
            raise LoweringError(f"op {node.op} is not supported in an int8 epilogue")
        if node.op == "Pow" or out.dtype is not DType.FLOAT32:
            raise LoweringError(f"{node!r}: only float32 {node.op} is supported")
        fa, fb = operand(ins[0], node), operand(ins[1], node)
        values[out] = lambda y, idx, loads, f=fa, g=fb, h=fn: h(f(y, idx, loads),
                                                                  g(y, idx, loads))  # fmt: skip
    outs: list[Fn] = []
    dtypes: list[str] = []
    for o in body.outputs:
        if o not in values:
            raise LoweringError(f"group output %{o.name} is not computed in the body")
        dt = DTYPES.get(o.dtype)  # type: ignore[arg-type]
        if dt not in ("float32", "uint8", "int8"):
            raise LoweringError(f"group output %{o.name}: {o.dtype} is not supported")
        outs.append(values[o])
        dtypes.append(dt)  # type: ignore[arg-type]

    def fn(y: Expr, idx: tuple[Expr, ...], loads: list[Any]) -> list[Expr]:
        return [f(y, idx, loads) for f in outs]

    epi = QEpilogue(
        out_shape=out_shape,
        operands=tuple(specs),
        output_dtypes=tuple(dtypes),
        fn=fn,
        key=(tuple(key), tuple(ref.get(o) for o in body.outputs), tuple(specs), tuple(dtypes)),
    )
    return epi, operands
