"""TE compute builders for IR nodes, and `lower_group` for `lepton.Fused` groups.

Supported ops: Conv (2-D, NCHW, fp32, groups=1; strides, pads, dilations, optional bias input),
Add/Sub/Mul/Div/Max/Min/PRelu/Pow with numpy broadcasting, Identity, and every unary op of
`te_elementwise.UNARY_OPS` (Relu, Clip, Gelu, Sigmoid, HardSwish...; constant operands such as
Clip bounds baked in).

Conv is written so that a CPU schedule can vectorize it without tails or gathers:

1. ``xph`` — the padded input split into ``s_h x s_w`` stride phases and flattened per phase:
   ``xph[n, c, ph, pw, r * Wq + q] = xpad[n, c, r * s_h + ph, q * s_w + pw]`` (zero outside).
   A strided convolution becomes a stride-1 one over the phases, and every kernel tap reads a
   *contiguous* run of ``xph``.
2. ``conv_flat[n, m, p]`` — the convolution over flattened output positions ``p = h * Wq + w``,
   where ``Wq`` (the phase width) is at least the output width: the columns ``w >= Wo`` are
   computed and thrown away (``(Wq - Wo) / Wq`` of the work, 2/58 on a 56x56 3x3 layer), and
   ``p`` is padded up to ``p_align`` so the vector loop has no tail.
3. ``conv_crop[n, m, h, w] = conv_flat[n, m, h * Wq + w] (+ bias[m])`` — back to NCHW; the
   epilogue ops read it and a schedule inlines them all into one output loop.

Two variants let the schedule compute the epilogue straight from its register tile (no
extra pass over the output): *by rows* (``conv2d_nchw(rows=True)``: ``conv_flat`` indexed
``[n, m, h, w]`` with ``w`` up to the width rounded to whole vectors) and *flat direct*
(`conv2d_direct`, for 1x1/stride-1/unpadded convs: no ``xph`` at all, NCHW tensors declared
``[N, C, H*W]`` — the same memory; `lower_group(flat=True)`). Only the stride phases some
tap reads are materialised (a 1x1 stride-2 conv copies one phase of four).

Weights (and every other tensor input, constants included) become placeholders, so one kernel
serves every layer of the same shape; scalar operands of unary ops (Clip bounds, a Pow
exponent) are the only constants baked in.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tvm import te, tirx

from lepton_compiler.errors import LeptonError
from lepton_compiler.ir import DType, Graph, Node, Value

from .te_elementwise import UNARY_OPS, binary_builder, unary_builder
from .te_logic import LOGIC_OPS, lower_logic
from .te_movement import MOVEMENT_OPS, lower_movement, lower_split

__all__ = [
    "ConvWorkload",
    "LoweredGroup",
    "LoweringError",
    "conv2d_cvec",
    "conv2d_direct",
    "conv2d_nchw",
    "conv_workload",
    "cvec_weight_shape",
    "lower_group",
    "pack_cvec_weights",
]

#: Names of the conv stages (schedules find their blocks by these names).
XPH, CONV_FLAT, CONV_CROP = "xph", "conv_flat", "conv_crop"
#: Stages of the channel-vector form (`conv2d_cvec`): padded input, blocked accumulation.
XPAD, CONV_CVEC = "xpad", "conv_cvec"

#: Two-tensor element-wise ops (numpy broadcasting); Pow only with a tensor exponent.
_BINARY_NAMES = ("Add", "Sub", "Mul", "Div", "Max", "Min", "PRelu")
#: Their TE functions ``(a, b) -> expr``.
_BINARY: dict[str, Callable[[Any, Any], Any]] = {
    name: fn for name in _BINARY_NAMES if (fn := binary_builder(name)) is not None
}


class LoweringError(LeptonError):
    """A node or group that this backend cannot lower (unsupported op, attribute or type)."""


class WindowGeometry:
    """Output size and stride phases of a 2-D window op, for dataclasses with the fields
    ``h, w, kh, kw, strides, pads (top, left, bottom, right), dilations`` (the float and the
    int8 convolution workloads)."""

    h: int
    w: int
    kh: int
    kw: int
    strides: tuple[int, int]
    pads: tuple[int, int, int, int]
    dilations: tuple[int, int]

    @property
    def out_hw(self) -> tuple[int, int]:
        """Output height and width."""
        (sh, sw), (dh, dw) = self.strides, self.dilations
        hp = self.h + self.pads[0] + self.pads[2]
        wp = self.w + self.pads[1] + self.pads[3]
        return (hp - dh * (self.kh - 1) - 1) // sh + 1, (wp - dw * (self.kw - 1) - 1) // sw + 1

    @property
    def phase_hw(self) -> tuple[int, int]:
        """Height and width of one stride phase of the padded input (``Hq``, ``Wq``)."""
        (sh, sw) = self.strides
        hp = self.h + self.pads[0] + self.pads[2]
        wp = self.w + self.pads[1] + self.pads[3]
        return -(-hp // sh), -(-wp // sw)


@dataclass(frozen=True)
class ConvWorkload(WindowGeometry):
    """Everything that determines a Conv kernel (the cache key part of a conv group)."""

    n: int
    c: int
    h: int
    w: int
    m: int
    kh: int
    kw: int
    strides: tuple[int, int]
    pads: tuple[int, int, int, int]  # top, left, bottom, right
    dilations: tuple[int, int]
    has_bias: bool

    @property
    def flat_len(self) -> int:
        """Flattened output positions actually needed (``Ho * Wq``)."""
        return self.out_hw[0] * self.phase_hw[1]

    @property
    def direct(self) -> bool:
        """A 1x1, stride-1, unpadded conv: a plain GEMM over flattened positions, which
        `lower_group(flat=True)` lowers without the ``xph`` copy and in flat NC(HW) layout."""
        return (self.kh, self.kw, self.strides, self.pads) == (1, 1, (1, 1), (0, 0, 0, 0))

    @property
    def flops(self) -> int:
        """Multiply-adds times two over the valid output."""
        ho, wo = self.out_hw
        return 2 * self.n * self.m * ho * wo * self.c * self.kh * self.kw


@dataclass
class LoweredGroup:
    """A fused group as TE: kernel arguments, outputs and what the schedule needs to know.

    Attributes:
        params: placeholders in kernel-argument order (outputs follow them in the PrimFunc).
        outputs: the output tensors, in the order of the group's outputs.
        output_shapes: the outputs' shapes in the IR (with ``flat``, the kernel writes the
            same memory as ``[..., H*W]``).
        flat: lowered in flat layout (see `lower_group`).
        rows: the conv is computed by output rows (see `conv2d_nchw`).
        input_indices: for each placeholder, the index of the fused node's input it receives.
        conv: the conv workload when the group's anchor is a Conv, else None.
        key: a hashable description of the whole computation (shapes, attributes, ops).
    """

    params: list[te.Tensor]
    outputs: list[te.Tensor]
    output_shapes: list[tuple[int, ...]]
    flat: bool
    input_indices: list[int]
    conv: ConvWorkload | None
    key: tuple[Any, ...]
    rows: bool = False
    stage_names: list[str] = field(default_factory=list)

    def prim_func(self) -> tirx.PrimFunc:
        """The PrimFunc ``(params..., outputs...)`` (outputs written in place)."""
        return te.create_prim_func([*self.params, *self.outputs])


def _ints(seq: Sequence[Any] | None, n: int, default: int) -> tuple[int, ...]:
    if seq is None or len(seq) == 0:
        return (default,) * n
    return tuple(int(x) for x in seq)


def _static_shape(v: Value) -> tuple[int, ...]:
    shape = v.shape
    if shape is None or not all(isinstance(d, (int, np.integer)) for d in shape):
        raise LoweringError(f"%{v.name}: needs a static shape, has {shape}")
    return tuple(int(d) for d in shape)


#: The dtypes anchor-less element-wise groups take (Cast converts between them).
_TVM_DTYPES = {
    DType.FLOAT32: "float32", DType.INT32: "int32", DType.INT64: "int64", DType.BOOL: "bool",
    DType.UINT8: "uint8", DType.INT8: "int8",
}  # fmt: skip
#: Element-wise ops whose output may be an 8-bit integer tensor (requantization).
_QUANT_OPS = ("QuantizeLinear", "DequantizeLinear")
#: Binary ops that are exact on integers with TVM's semantics (Div truncates, unlike ONNX's
#: reference on negative operands, so it stays float only).
_INT_BINARY = ("Add", "Sub", "Mul", "Max", "Min")


def _cast(a: te.Tensor, to: str, name: str) -> te.Tensor:
    return te.compute(a.shape, lambda *i: a(*i).astype(to), name=name)


def _check_elementwise_dtype(v: Value) -> None:
    if v.dtype not in _TVM_DTYPES:
        raise LoweringError(f"%{v.name}: {v.dtype} is not supported in element-wise kernels")


def _check_f32(v: Value) -> None:
    if v.dtype is not DType.FLOAT32:
        raise LoweringError(f"%{v.name}: only float32 is supported, got {v.dtype}")


def conv_workload(node: Node) -> ConvWorkload:
    """Read a Conv node's shapes and attributes into a `ConvWorkload`.

    Raises:
        LoweringError: not 2-D, not groups=1, auto_pad other than NOTSET/VALID, or shapes unknown.
    """
    x, w = node.inputs[0], node.inputs[1]
    if x is None or w is None:
        raise LoweringError(f"{node!r}: Conv needs X and W")
    xs, ws = _static_shape(x), _static_shape(w)
    if len(xs) != 4 or len(ws) != 4:
        raise LoweringError(f"{node!r}: only 2-D Conv (NCHW) is supported, X is {xs}")
    if int(node.attr("group", 1)) != 1:
        raise LoweringError(f"{node!r}: grouped Conv (group={node.attr('group')}) not supported")
    auto_pad = node.attr("auto_pad", "NOTSET")
    if isinstance(auto_pad, bytes):
        auto_pad = auto_pad.decode()
    strides = _ints(node.attr("strides"), 2, 1)
    dilations = _ints(node.attr("dilations"), 2, 1)
    kh, kw = ws[2], ws[3]
    if auto_pad in ("NOTSET", "VALID"):
        pads = _ints(node.attr("pads"), 4, 0) if auto_pad == "NOTSET" else (0, 0, 0, 0)
        top, left, bottom, right = pads[0], pads[1], pads[2], pads[3]
    elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        tb = []
        for i, k in ((2, kh), (3, kw)):
            s, d = strides[i - 2], dilations[i - 2]
            out = -(-xs[i] // s)
            total = max(0, (out - 1) * s + d * (k - 1) + 1 - xs[i])
            small, big = total // 2, total - total // 2
            tb.append((small, big) if auto_pad == "SAME_UPPER" else (big, small))
        top, bottom = tb[0]
        left, right = tb[1]
    else:
        raise LoweringError(f"{node!r}: auto_pad={auto_pad!r} not supported")
    if ws[1] != xs[1]:
        raise LoweringError(f"{node!r}: W has {ws[1]} input channels, X has {xs[1]}")
    has_bias = len(node.inputs) > 2 and node.inputs[2] is not None
    return ConvWorkload(
        n=xs[0], c=xs[1], h=xs[2], w=xs[3], m=ws[0], kh=kh, kw=kw,
        strides=(strides[0], strides[1]), pads=(top, left, bottom, right),
        dilations=(dilations[0], dilations[1]), has_bias=has_bias,
    )  # fmt: skip


def conv2d_nchw(
    x: te.Tensor,
    w: te.Tensor,
    bias: te.Tensor | None,
    wl: ConvWorkload,
    p_align: int = 16,
    rows: bool = False,
    row_width: int | None = None,
) -> te.Tensor:
    """The TE conv (see the module docstring): ``xph`` -> ``conv_flat`` -> ``conv_crop``.

    With ``rows`` (for output widths that are whole vectors) ``conv_flat`` is instead
    ``[N, M, Ho, Wo]`` reading ``xph[..., h * Wq + w + tap]``: still contiguous per tap, and
    its index matches the output's, so a schedule can run the epilogue inside the register
    tile (no garbage columns and no separate crop pass over memory).

    Args:
        x: input placeholder ``[N, C, H, W]``.
        w: weight placeholder ``[M, C, KH, KW]``.
        bias: optional bias ``[M]``, added in ``conv_crop``.
        wl: the workload (shapes and attributes).
        p_align: the flattened output length is rounded up to a multiple of this (the
            schedule's vector width times its register block of vectors).
        rows: compute ``conv_flat`` by output rows (see above).
        row_width: with ``rows``, the width of ``conv_flat`` (default ``Wo``); a wider one
            (``Wo`` rounded up to whole vectors) computes garbage columns that the crop drops.

    Returns:
        The NCHW output ``conv_crop``.
    """
    sh, sw = wl.strides
    dh, dw = wl.dilations
    pt, pl = wl.pads[0], wl.pads[1]
    ho, wo = wl.out_hw
    hq, wq = wl.phase_hw
    wt = row_width if row_width is not None else wo
    plen = ((ho - 1) * wq + wt) if rows else -(-wl.flat_len // p_align) * p_align
    reach = ((dh * (wl.kh - 1)) // sh) * wq + (dw * (wl.kw - 1)) // sw
    qrows = -(-(plen + reach) // wq)  # whole phase rows, so schedules can split q by Wq
    qlen = qrows * wq
    f32 = "float32"

    def xph_fn(n: Any, c: Any, ph: Any, pw: Any, q: Any) -> Any:
        r, col = q // wq, q % wq
        hi = r * sh + ph - pt
        wi = col * sw + pw - pl
        inside = tirx.all(r < hq, hi >= 0, hi < wl.h, wi >= 0, wi < wl.w)
        return tirx.if_then_else(inside, x[n, c, hi, wi], tirx.const(0.0, f32))

    # Only the stride phases some tap reads (a 1x1 stride-2 conv reads phase (0, 0) only).
    nph = _phases_used(wl.kh, dh, sh)
    npw = _phases_used(wl.kw, dw, sw)
    xph = te.compute((wl.n, wl.c, nph, npw, qlen), xph_fn, name=XPH)
    rc = te.reduce_axis((0, wl.c), name="rc")
    rkh = te.reduce_axis((0, wl.kh), name="rkh")
    rkw = te.reduce_axis((0, wl.kw), name="rkw")

    def flat_fn(n: Any, m: Any, p: Any) -> Any:
        ph, oh = (dh * rkh) % sh, (dh * rkh) // sh
        pw, ow = (dw * rkw) % sw, (dw * rkw) // sw
        return te.sum(
            xph[n, rc, ph, pw, p + oh * wq + ow] * w[m, rc, rkh, rkw], axis=[rc, rkh, rkw]
        )

    def rows_fn(n: Any, m: Any, h: Any, x_: Any) -> Any:
        return flat_fn(n, m, h * wq + x_)

    if rows:
        conv = te.compute((wl.n, wl.m, ho, wt), rows_fn, name=CONV_FLAT)

        def crop_rows(n: Any, m: Any, h: Any, x_: Any) -> Any:
            v = conv[n, m, h, x_]
            return v + bias[m] if bias is not None else v

        return te.compute((wl.n, wl.m, ho, wo), crop_rows, name=CONV_CROP)

    flat = te.compute((wl.n, wl.m, plen), flat_fn, name=CONV_FLAT)

    def crop_fn(n: Any, m: Any, h: Any, x_: Any) -> Any:
        v = flat[n, m, h * wq + x_]
        return v + bias[m] if bias is not None else v

    return te.compute((wl.n, wl.m, ho, wo), crop_fn, name=CONV_CROP)


def _phases_used(k: int, d: int, s: int) -> int:
    """How many stride phases (counted from 0) the taps ``d * t % s`` reach."""
    used = {(d * t) % s for t in range(k)}
    return len(used) if used == set(range(len(used))) else s


def conv2d_direct(
    x: te.Tensor, w: te.Tensor, bias: te.Tensor | None, wl: ConvWorkload
) -> te.Tensor:
    """A direct (1x1, stride 1, no padding) conv on a flat input ``[N, C, H*W]``; returns
    the flat output ``conv_crop[N, M, H*W]`` (after ``conv_flat``, the reduction)."""
    rc = te.reduce_axis((0, wl.c), name="rc")
    flat = te.compute(
        (wl.n, wl.m, wl.h * wl.w),
        lambda n, m, p: te.sum(x[n, rc, p] * w[m, rc, 0, 0], axis=[rc]),
        name=CONV_FLAT,
    )
    if bias is None:
        return te.compute(flat.shape, lambda n, m, p: flat[n, m, p], name=CONV_CROP)
    return te.compute(flat.shape, lambda n, m, p: flat[n, m, p] + bias[m], name=CONV_CROP)


def cvec_weight_shape(wl: ConvWorkload, nb: int) -> tuple[int, int, int, int, int]:
    """The packed weight layout of the channel-vector form: ``[Mpad / nb, C, KH, KW, nb]``
    (output channels padded with zeros to whole blocks of ``nb``)."""
    return (-(-wl.m // nb), wl.c, wl.kh, wl.kw, nb)


def pack_cvec_weights(w: np.ndarray, wl: ConvWorkload, nb: int) -> np.ndarray:
    """OIHW weights -> `cvec_weight_shape` (run once at compile time for constant weights),
    so one register tile's ``nb`` output channels are contiguous for every (c, kh, kw)."""
    blocks, c, kh, kw, _ = cvec_weight_shape(wl, nb)
    w = np.asarray(w, dtype=np.float32).reshape(wl.m, c, kh, kw)
    padded = np.zeros((blocks * nb, c, kh, kw), np.float32)
    padded[: wl.m] = w
    return np.ascontiguousarray(padded.reshape(blocks, nb, c, kh, kw).transpose(0, 2, 3, 4, 1))


def conv2d_cvec(
    x: te.Tensor, wp: te.Tensor, bias: te.Tensor | None, wl: ConvWorkload, nb: int
) -> te.Tensor:
    """The conv vectorized over output channels (small spatial sizes, pointwise convs).

    ``conv_cvec[n, mb, oh, ow, j]`` accumulates output channel ``mb * nb + j`` from the
    packed weights ``wp`` (`cvec_weight_shape`): a schedule loads ``nb / lanes`` contiguous
    weight vectors per (c, tap) and broadcasts one input value per output position, so no
    lane is wasted on positions that do not fill a vector (7x7 = 49, 14x14 = 196). Padding,
    when there is any, is a separate ``xpad`` stage; strides and dilations are plain index
    arithmetic (the input is only ever broadcast, never loaded as a vector). The crop
    ``conv_crop[n, m, oh, ow] = conv_cvec[n, m // nb, oh, ow, m % nb] (+ bias[m])`` is
    NCHW, so the epilogue and the kernel interface are those of the other forms.
    """
    sh, sw = wl.strides
    dh, dw = wl.dilations
    pt, pl, pb, pr = wl.pads
    ho, wo = wl.out_hw
    src = x
    if any(wl.pads):
        hp, wp_ = wl.h + pt + pb, wl.w + pl + pr

        def pad_fn(n: Any, c: Any, i: Any, j: Any) -> Any:
            inside = tirx.all(i >= pt, i < pt + wl.h, j >= pl, j < pl + wl.w)
            return tirx.if_then_else(inside, x[n, c, i - pt, j - pl], tirx.const(0.0, "float32"))

        src = te.compute((wl.n, wl.c, hp, wp_), pad_fn, name=XPAD)
    rc = te.reduce_axis((0, wl.c), name="rc")
    rkh = te.reduce_axis((0, wl.kh), name="rkh")
    rkw = te.reduce_axis((0, wl.kw), name="rkw")
    blocks = -(-wl.m // nb)
    acc = te.compute(
        (wl.n, blocks, ho, wo, nb),
        lambda n, mb, oh, ow, j: te.sum(
            src[n, rc, oh * sh + rkh * dh, ow * sw + rkw * dw] * wp[mb, rc, rkh, rkw, j],
            axis=[rc, rkh, rkw],
        ),
        name=CONV_CVEC,
    )

    def crop(n: Any, m: Any, oh: Any, ow: Any) -> Any:
        v = acc[n, m // nb, oh, ow, m % nb]
        return v + bias[m] if bias is not None else v

    return te.compute((wl.n, wl.m, ho, wo), crop, name=CONV_CROP)


def _flat_binary(
    fn: Callable[[Any, Any], Any],
    operands: list[tuple[te.Tensor, tuple[int, ...], bool]],
    out_shape: tuple[int, ...],
    name: str,
) -> te.Tensor:
    """A binary op in the flat domain ``(n, m, p)`` of a 4-D logical output.

    Each operand is (tensor, logical shape, flat?): flat operands are indexed ``[.., p]``,
    the others broadcast over both spatial dims (their last two logical dims are 1)."""

    def load(t: te.Tensor, logical: tuple[int, ...], is_flat: bool, idx: tuple[Any, ...]) -> Any:
        s4 = (1,) * (4 - len(logical)) + logical
        first = 4 - len(logical)
        if is_flat:
            return t[(*[0 if s4[j] == 1 else idx[j] for j in range(first, 2)], idx[2])]
        return t[tuple(0 if j >= 2 or s4[j] == 1 else idx[j] for j in range(first, 4))]

    n, m, h, w = out_shape
    a, b = operands
    return te.compute((n, m, h * w), lambda *i: fn(load(*a, i), load(*b, i)), name=name)


def _broadcast(
    fn: Callable[[Any, Any], Any], a: te.Tensor, b: te.Tensor, shape: tuple[int, ...], name: str
) -> te.Tensor:
    """Element-wise binary op with numpy broadcasting to `shape`."""

    def index(t: te.Tensor, idx: tuple[Any, ...]) -> Any:
        dims = [int(d) for d in t.shape]
        off = len(idx) - len(dims)
        return t[tuple(0 if d == 1 else idx[off + i] for i, d in enumerate(dims))]

    return te.compute(shape, lambda *i: fn(index(a, i), index(b, i)), name=name)


def _variadic(
    op: str, parts: Sequence[te.Tensor], shape: tuple[int, ...], name: str
) -> tuple[te.Tensor, list[str]]:
    """``Max``/``Min``/``Sum``/``Mean`` of any number of broadcasting tensors, folded left
    into binary stages; returns the result and the names of the stages before it (the
    schedule inlines them)."""
    fn = binary_builder("Add" if op in ("Sum", "Mean") else op)
    assert fn is not None
    made: list[te.Tensor] = []
    acc = parts[0]
    for k, t in enumerate(parts[1:]):
        step = tuple(int(d) for d in np.broadcast_shapes(
            tuple(int(d) for d in acc.shape), tuple(int(d) for d in t.shape)))  # fmt: skip
        acc = _broadcast(fn, acc, t, step, f"{name}_{k}")
        made.append(acc)
    if op == "Mean":
        a, inv = acc, tirx.const(1.0 / len(parts), "float32")
        acc = te.compute(tuple(int(d) for d in a.shape), lambda *i: a(*i) * inv, name=f"{name}_m")
        made.append(acc)
    if not made or tuple(int(d) for d in acc.shape) != shape:  # a copy, or a broadcast
        acc = _broadcast(lambda u, v: u, acc, acc, shape, f"{name}_b")
        made.append(acc)
    return acc, [t.op.name for t in made[:-1]]


def _unary(a: te.Tensor, fn: Callable[[Any], Any], name: str) -> te.Tensor:
    return te.compute(a.shape, lambda *i: fn(a(*i)), name=name)


def lower_group(
    fused: Node,
    p_align: int = 16,
    flat: bool = False,
    rows: bool = False,
    row_width: int | None = None,
    cvec: int = 0,
) -> LoweredGroup:
    """Lower a `lepton.Fused` node (or a single Conv/element-wise node) to TE.

    Walks the body in order; body inputs become placeholders the first time a node reads them
    as a tensor (in body-input order), so the kernel's parameters are a subset of the fused
    node's inputs (`LoweredGroup.input_indices` says which).

    Args:
        fused: the fused node (attrs ``body``, ``anchor``, ``epilogue``).
        p_align: alignment of a conv's flattened output length (see `conv2d_nchw`).
        flat: lower a direct conv group (`ConvWorkload.direct`) in flat layout: every
            kernel parameter or output with the conv's full spatial extent is declared
            ``[..., H*W]`` (the same memory as NCHW; `GroupKernel` reshapes), so the epilogue
            runs inside the conv's register tile. Raises `LoweringError` where it cannot.
        rows: lower the conv by output rows (`conv2d_nchw`'s ``rows``).
        row_width: `conv2d_nchw`'s ``row_width``.
        cvec: when nonzero, lower the conv vectorized over output channels (`conv2d_cvec`)
            with blocks of ``cvec`` channels; the weights are then declared packed
            (`cvec_weight_shape`; `pack_cvec_weights` turns OIHW into it).

    Raises:
        LoweringError: an op, attribute, dtype or dynamic shape this backend does not handle.
    """
    body: Graph = fused.attrs["body"]
    conv_free = not any(n.op == "Conv" for n in body)  # other dtypes only without a conv
    outer = {b: o for b, o in zip(body.inputs, fused.inputs, strict=True) if o is not None}
    position = {b: i for i, b in enumerate(body.inputs)}
    env: dict[Value, te.Tensor] = {}
    is_flat: dict[Value, bool] = {}
    used: set[Value] = set()
    conv: ConvWorkload | None = None
    key: list[Any] = [("flat", flat)]
    names: list[str] = []
    spatial: tuple[int, int] | None = None
    if flat:
        anchor = next((n for n in body if n.op == "Conv"), None)
        if anchor is None or not conv_workload(anchor).direct:
            raise LoweringError("flat lowering needs a direct (1x1, stride 1, unpadded) Conv")
        wl0 = conv_workload(anchor)
        spatial = (wl0.h, wl0.w)

    def const_of(v: Value | None) -> np.ndarray | None:
        if v is None:
            return None
        src = outer.get(v, v)
        return None if src.const is None else np.asarray(src.const)

    def tensor(v: Value | None, as_is: bool = False) -> te.Tensor:
        if v is None:
            raise LoweringError("missing input")
        if v in env:
            return env[v]
        if v in position:
            if conv_free:
                _check_elementwise_dtype(v)
            else:
                _check_f32(v)
            shape = _static_shape(v)
            vflat = False
            if spatial is not None and not as_is:
                s4 = (1,) * (4 - len(shape)) + shape
                if len(shape) >= 3 and s4[2:] == spatial:
                    shape, vflat = (*shape[:-2], spatial[0] * spatial[1]), True
                elif s4[2:] != (1, 1):
                    raise LoweringError(f"%{v.name} {shape} does not broadcast in flat layout")
            t = te.placeholder(shape, _TVM_DTYPES.get(v.dtype, "float32"), name=f"arg{position[v]}")
            env[v], is_flat[v] = t, vflat
            used.add(v)
            return t
        raise LoweringError(f"%{v.name} is neither a body input nor computed in the body")

    ref: dict[Value, tuple[str, int]] = {v: ("in", i) for i, v in enumerate(body.inputs)}
    for i, node in enumerate(body):
        name = f"{node.op_type.lower()}_{i}"
        key.append(tuple(None if v is None else ref.get(v) for v in node.inputs))
        op = node.op
        out = node.outputs[0]
        if op == "Conv":
            if conv is not None:
                raise LoweringError("a group with two Convs is not supported")
            conv = conv_workload(node)
            x = tensor(node.inputs[0])
            wv = node.inputs[1]
            only_weights = sum(v is wv for n in body for v in n.inputs) == 1
            if cvec and not flat and wv in position and wv not in env and only_weights:
                _check_f32(wv)  # declared in the packed layout (`cvec_weight_shape`)
                w = te.placeholder(cvec_weight_shape(conv, cvec), "float32", f"arg{position[wv]}")
                env[wv], is_flat[wv] = w, False
                used.add(wv)
            elif cvec:
                raise LoweringError(
                    "channel-vector conv needs its weights as a body input read by the Conv only"
                )
            else:
                w = tensor(wv, as_is=True)
            b = tensor(node.inputs[2], as_is=True) if conv.has_bias else None
            if b is not None and [int(d) for d in b.shape] != [conv.m]:
                raise LoweringError(f"{node!r}: bias shape {b.shape}")
            if flat:
                res = conv2d_direct(x, w, b, conv)
                is_flat[out] = True
            elif cvec:
                res = conv2d_cvec(x, w, b, conv, cvec)
            else:
                res = conv2d_nchw(x, w, b, conv, p_align, rows, row_width)
            key.append(("Conv", conv, p_align, rows, row_width, cvec))
        elif op in ("Sum", "Mean") or (op in ("Max", "Min") and len(node.inputs) != 2):
            if flat or not conv_free or any(v is None for v in node.inputs):
                raise LoweringError(f"{node!r}: variadic {op} is supported alone only")
            if out.dtype is not DType.FLOAT32 and op == "Mean":
                raise LoweringError(f"{node!r}: Mean on {out.dtype} is not supported")
            res, stages = _variadic(op, [tensor(v) for v in node.inputs], _static_shape(out), name)
            names.extend(stages)
            key.append((op, tuple(tuple(int(d) for d in tensor(v).shape) for v in node.inputs)))
        elif op in _BINARY_NAMES or (op == "Pow" and const_of(node.inputs[1]) is None):
            if len(node.inputs) != 2:  # Max/Min are variadic in ONNX
                raise LoweringError(f"{node!r}: {len(node.inputs)} operands")
            if out.dtype is not DType.FLOAT32 and op not in _INT_BINARY:
                raise LoweringError(f"{node!r}: {op} on {out.dtype} is not supported")
            fn = binary_builder(op)
            assert fn is not None
            a, b = tensor(node.inputs[0]), tensor(node.inputs[1])
            shape = _static_shape(out)
            if flat:
                if len(shape) != 4 or shape[2:] != spatial:
                    raise LoweringError(f"{node!r}: output {shape} is not conv-shaped")
                ops = [(env[v], _static_shape(v), is_flat[v]) for v in node.inputs[:2]]  # type: ignore[index]
                res = _flat_binary(fn, ops, shape, name)
                is_flat[out] = True
            else:
                res = _broadcast(fn, a, b, shape, name)
            key.append((op, tuple(int(d) for d in a.shape), tuple(int(d) for d in b.shape)))
        elif op in ("Cast", "CastLike"):  # CastLike: the dtype of its second input
            a = tensor(node.inputs[0])
            _check_elementwise_dtype(out)
            to = _TVM_DTYPES[out.dtype]  # type: ignore[index]
            is_flat[out] = is_flat.get(node.inputs[0], False)  # type: ignore[arg-type]
            res = _cast(a, to, name)
            key.append(("Cast", str(a.dtype), to))  # CastLike's second input is not read
        elif op == "Identity":
            env[out] = tensor(node.inputs[0])
            is_flat[out] = is_flat.get(node.inputs[0], False)  # type: ignore[arg-type]
            ref[out] = ref.get(node.inputs[0], ("node", i))  # type: ignore[arg-type]
            continue
        elif op in UNARY_OPS:
            fn1 = unary_builder(node, const_of)
            if fn1 is None:
                raise LoweringError(f"{node!r}: needs constant operands for {op}")
            if op in _QUANT_OPS:
                _check_elementwise_dtype(out)
            else:
                _check_f32(out)
            a = tensor(node.inputs[0])
            is_flat[out] = is_flat.get(node.inputs[0], False)  # type: ignore[arg-type]
            res = _unary(a, fn1, name)
            consts = tuple(
                None if (c := const_of(v)) is None else repr(np.asarray(c).tolist())
                for v in node.inputs[1:]
            )
            attrs = tuple(sorted((k, repr(val)) for k, val in node.attrs.items()))
            key.append((op, attrs, consts, str(out.dtype)))
        elif op in LOGIC_OPS:
            if flat or not conv_free:
                raise LoweringError(f"{node!r}: {op} in a conv group is not supported")
            _check_elementwise_dtype(out)
            operands = [tensor(v) for v in node.inputs]
            res, lkey = lower_logic(node, operands, _static_shape(out), name)
            key.append(lkey)
        elif op == "Split":
            if flat or not conv_free:
                raise LoweringError(f"{node!r}: Split in a conv group is not supported")
            for v in node.outputs:
                _check_elementwise_dtype(v)
            parts, skey = lower_split(
                node, tensor(node.inputs[0]), const_of, [_static_shape(o) for o in node.outputs],
                name,
            )  # fmt: skip
            key.append(skey)
            for k, (o, t) in enumerate(zip(node.outputs, parts, strict=True)):
                env[o] = t
                ref[o] = ("node", i * 1000 + k)
                names.append(t.op.name)
            continue
        elif op in MOVEMENT_OPS:
            if flat or not conv_free:
                raise LoweringError(f"{node!r}: {op} in a conv group is not supported")
            for v in node.outputs:
                _check_elementwise_dtype(v)
            res, mkey = lower_movement(node, tensor, const_of, _static_shape(out), name)
            key.append(mkey)
        else:
            raise LoweringError(f"op {op} is not supported by the TVM backend yet")
        if len(node.outputs) != 1:
            raise LoweringError(f"{node!r}: multi-output nodes are not supported")
        env[out] = res
        ref[out] = ("node", i)
        names.append(res.op.name)
    outputs = []
    for o in body.outputs:
        if o not in env or o in position:
            raise LoweringError(f"group output %{o.name} is not computed in the body")
        outputs.append(env[o])
    params_v = sorted(used, key=lambda v: position[v])
    params = [env[v] for v in params_v]
    in_shapes = tuple(
        (position[v], tuple(int(d) for d in env[v].shape), str(env[v].dtype)) for v in params_v
    )
    out_ids = tuple(names.index(t.op.name) for t in outputs)
    if flat and not all(is_flat.get(o, False) for o in body.outputs):
        raise LoweringError("a group output is not in flat layout")
    return LoweredGroup(
        params=params,
        outputs=outputs,
        output_shapes=[_static_shape(o) for o in body.outputs],
        flat=flat,
        rows=rows,
        input_indices=[position[v] for v in params_v],
        conv=conv,
        key=(in_shapes, tuple(key), out_ids),
        stage_names=names,
    )
