"""Integer 2-D convolution (``lepton.QConv``, NCHW; 1-D as 2-D with height 1): uint8/int8
activations, int8 weights, int32 bias, with the float epilogue and a final
``QuantizeLinear`` fused into the store (uint8/int8 or float32 output).

The integer sum is computed exactly in float32 as in `qdense` (the centered activations
``x - x_zero_point`` and the weights widened to float32, partial sums below 2^24, checked on
the constant weights at compile time, the reduction split into chunks where needed). Padding
is the zero point, i.e. 0 once centered. Two loop structures, as the float conv template's:

- **GEMM** (more than one input channel per group): per image and group, the centered
  patches go into a float32 ``[C/g * KH * KW, OH * OW]`` column buffer (im2col, parallel over
  rows, one converted run per output row), then ``np.dot`` per chunk of the reduction (OpenBLAS
  sgemm) into a float32 product buffer, chunk results summed in int32, and a parallel pass
  over output channels adds the int32 bias, scales by ``float32(x_scale) *
  float32(w_scale[m])`` and runs the chain into the output; with product tiles
  (`threads.product_tiles`) one tile of output channels per thread instead;
- **direct** (depthwise, up to 7x7 taps): per (image, channel), a zero-padded centered float32
  plane, every output the unrolled sum of its taps (exact: 49 * 255 * 128 < 2^24), then bias,
  scale and chain in the store.
"""

from __future__ import annotations

import math

import numpy as np

from lepton_compiler.errors import LoweringError
from lepton_compiler.ir import Graph, Node
from lepton_compiler.ops.kernels._padding import auto_pad_of, pads_for, window_attrs
from lepton_compiler.ops.quant import combined_scale

from ..emit import Constants, Lines, module_text
from ..epilogue import Chain, static_shape
from . import KernelSource
from .conv import _as_2d, _Geo, emit_im2col, emit_taps
from .loops import row_tiles
from .qdense import integer_operands, k_chunks, max_deviation, requantize

NAME = "qconv"
ANCHORS = ("lepton.QConv",)

#: Depthwise kernels with more taps than this go through the GEMM path.
_MAX_UNROLLED_TAPS = 49


def plan(fused: Node, tiles: int = 1) -> KernelSource:
    """Write the integer conv group (see the module docstring).

    Raises:
        LoweringError: not a 1-D/2-D conv with static shapes, non-constant weights or
            scales, or an epilogue the chain table cannot write.
    """
    body: Graph = fused.attrs["body"]
    conv = next(iter(body))
    if conv.op not in ANCHORS:
        raise LoweringError(f"{fused.name}: not a lepton.QConv group")
    ops = integer_operands(fused, conv)
    xs, ys = static_shape(conv.inputs[0]), static_shape(conv.outputs[0])
    ws = tuple(ops.weights.shape)
    if len(xs) not in (3, 4) or len(ws) != len(xs) or len(ys) != len(xs):
        raise LoweringError(f"{fused.name}: only 1-D and 2-D integer convolutions have a template")
    attrs = {k: v for k, v in conv.attrs.items() if k != "kernel_shape"}
    if len(xs) == 3:
        xs, ws, ys = (xs[0], xs[1], 1, xs[2]), (ws[0], ws[1], 1, ws[2]), (ys[0], ys[1], 1, ys[2])
        attrs = _as_2d(attrs)
    n, c, h, w = xs
    oc, cg, kh, kw = ws
    _, _, oh, ow = ys
    ops.check_scale(fused, oc)
    groups = int(conv.attrs.get("group", 1))
    strides, dilations, eff = window_attrs(attrs, [kh, kw])
    try:
        begin, _end = pads_for(auto_pad_of(attrs), [h, w], eff, strides, attrs.get("pads"))
    except ValueError as e:
        raise LoweringError(f"{fused.name}: {e}") from e
    if groups < 1 or c != cg * groups or oc % groups or 0 in (n, c, oh, ow, oc):
        raise LoweringError(f"{fused.name}: unsupported conv shapes {xs} x {ws}")
    chain = Chain.plan(
        fused,
        ANCHORS,
        groups=lambda o, s: [[0], [1], list(range(2, len(o)))],
        skip_inputs=ops.indices,
        int_output=True,
    )
    geo = _Geo(n, c, h, w, oc, cg, kh, kw, oh, ow, groups, strides, dilations, begin)
    consts = Constants()
    code = Lines()
    code("zp = xzp[0]")
    bias = "b[oc]" if ops.bias is not None else None
    direct = cg == 1 and groups > 1 and kh * kw <= _MAX_UNROLLED_TAPS
    k = cg * kh * kw
    w2d = ops.weights.reshape(oc, k)
    chunks = 1 if direct else k_chunks(w2d, max_deviation(ops.x_dtype, ops.zero_point))
    kc = math.ceil(k / chunks)
    if direct:
        _direct(code, consts, geo, bias, chain)
        scratch: list[tuple[tuple[int, ...], str]] = []
        w_shape: tuple[int, ...] = (oc, kh, kw)
        kind = "direct (depthwise), exact float32 taps"
    else:
        _gemm(code, consts, geo, bias, chain, tiles, chunks, kc)
        scratch = [((chunks * kc, oh * ow), "float32"), ((oc, oh * ow), "float32")]
        scratch += [((oc, oh * ow), "int32")] if chunks > 1 else []
        w_shape = (chunks, oc, kc)
        kind = f"im2col + exact float32 np.dot in {chunks} chunk(s) of {kc}"

    def pack_w(wt: np.ndarray) -> np.ndarray:
        if direct:
            return wt.reshape(w_shape).astype(np.float32)
        packed = np.zeros((oc, chunks * kc), np.float32)
        packed[:, :k] = wt.reshape(oc, k)
        return np.ascontiguousarray(packed.reshape(oc, chunks, kc).transpose(1, 0, 2))

    has_b = ops.bias is not None
    params = ["x", "xzp", "w", "s", *(["b"] if has_b else [])]
    params += [*(op.name for op in chain.operands), "out"]
    params += [] if direct else ["cols", "prod", *(["acc"] if chunks > 1 else [])]
    x_scale = ops.x_scale
    doc = [
        f"QConv {list(xs)} ({ops.x_dtype}) * {list(ws)} (int8) -> {list(ys)} "
        f"({chain.out_dtype}), group={groups}, strides={strides}, dilations={dilations}, "
        f"pads(begin)={begin}; bias: {has_b}; epilogue: {' -> '.join(chain.ops) or 'none'}.",
        "",
        f"Loop structure: {kind}. Output written as [N, OC, OH*OW].",
    ]
    return KernelSource(
        name="qconv2d",
        source=module_text(doc, "qconv2d", params, code, consts),
        input_indices=[
            ops.x,
            ops.zero_point_input,
            ops.w,
            ops.w_scale,
            *([ops.bias] if has_b else []),  # type: ignore[list-item]
            *(op.index for op in chain.operands),
        ],
        param_shapes=[
            (n, c, h, w),
            (1,),
            w_shape,
            (oc,),
            *([(oc,)] if has_b else []),
            *(op.shape for op in chain.operands),
        ],
        param_dtypes=[
            ops.x_dtype,
            "float32",
            "float32",
            "float32",
            *(["int32"] if has_b else []),
            *(op.dtype for op in chain.operands),
        ],
        output_shapes=[(n, oc, oh * ow)],
        output_dtypes=[chain.out_dtype],
        scratch=scratch,
        packs={
            2: pack_w,
            3: lambda wsc: combined_scale(x_scale, wsc, oc),
        },
        ops=["lepton.QConv", *chain.ops],
    )


def _im2col(code: Lines, g: _Geo) -> None:
    """Columns of image ``n`` (group ``g``): row (c, ky, kx) holds the centered input seen by
    that tap at every output pixel, 0.0 (the zero point) where it reads padding."""
    emit_im2col(code, g, lambda src: [
        f"src = {src}", "seg = dst[base + lo : base + hi]",
        "for j in range(hi - lo):", "    seg[j] = np.float32(src[j]) - zp",
    ])  # fmt: skip


def _gemm(
    code: Lines,
    consts: Constants,
    g: _Geo,
    bias: str | None,
    chain: Chain,
    tiles: int,
    chunks: int,
    kc: int,
) -> None:
    k = g.cg * g.kh * g.kw
    if chunks * kc > k:
        code(f"cols[{k}:] = 0.0")  # the last chunk's rows past K (scratch is shared)
    code(f"for n in range({g.n}):").indent()
    if g.groups > 1:
        code(f"for g in range({g.groups}):").indent()
    _im2col(code, g)
    base = f"g * {g.ocg}" if g.groups > 1 else "0"
    if tiles > 1:  # one tile of output channels per thread, its epilogue right after
        row_tiles(code, g.ocg, tiles)
        code(f"oc0 = {base} + t * step", f"oc1 = min({base} + {g.ocg}, oc0 + step)")
        rows, loop = "oc0:oc1", "for oc in range(oc0, oc1):"
    else:  # products on multi-threaded BLAS, then parallel passes over the channels
        rows = f"{base}:{base} + {g.ocg}" if g.groups > 1 else ""
        loop = f"for oc in prange({base}, {base} + {g.ocg}):" if g.groups > 1 else (
            f"for oc in prange({g.oc}):"
        )  # fmt: skip
    p = g.oh * g.ow
    for ch in range(chunks):
        w_rows = f"w[{ch}, {rows}]" if rows else f"w[{ch}]"
        prod = f"prod[{rows}]" if rows else "prod"
        code(f"np.dot({w_rows}, cols[{ch * kc}:{(ch + 1) * kc}], {prod})")
        if ch < chunks - 1:
            code(loop).indent()
            code(f"for p in range({p}):").indent()
            code(f"acc[oc, p] {'=' if ch == 0 else '+='} np.int32(prod[oc, p])")
            code.dedent().dedent()
    code(loop).indent()
    code(f"for p in range({p}):").indent()
    total = "np.int32(prod[oc, p])" + (" + acc[oc, p]" if chunks > 1 else "")
    value = requantize(code, consts, chain, total, bias, "s[oc]", ["n", "oc", "p"])
    code(f"out[n, oc, p] = {value}")


def _direct(code: Lines, consts: Constants, g: _Geo, bias: str | None, chain: Chain) -> None:
    """Depthwise: per (image, channel), a centered zero-padded float32 plane, every output
    the unrolled (exact) sum of its taps, bias, scale and chain in the store."""
    hp = (g.oh - 1) * g.sh + (g.kh - 1) * g.dh + 1
    wp = (g.ow - 1) * g.sw + (g.kw - 1) * g.dw + 1
    code(f"for t in prange({g.n * g.oc}):").indent()
    code(f"n = t // {g.oc}", f"oc = t % {g.oc}", f"c = oc // {g.ocg}")
    code(f"pad = np.zeros(({hp}, {wp}), np.float32)")
    y0, y1 = max(0, -g.ph), min(g.h, hp - g.ph)
    x0, x1 = max(0, -g.pw), min(g.w, wp - g.pw)
    if y1 > y0 and x1 > x0:
        code(f"for iy in range({y0}, {y1}):").indent()
        code(f"src = x[n, c, iy, {x0}:{x1}]", f"dst = pad[iy + {g.ph}, {x0 + g.pw} : {x1 + g.pw}]")
        code(f"for j in range({x1 - x0}):").indent()
        code("dst[j] = np.float32(src[j]) - zp").dedent().dedent()
    emit_taps(code, g, "dot")
    value = requantize(
        code, consts, chain, "np.int32(dot)", bias, "s[oc]", ["n", "oc", f"oy * {g.ow} + ox"]
    )
    code(f"out[n, oc, oy * {g.ow} + ox] = {value}")
