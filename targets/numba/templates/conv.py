"""2-D convolution (NCHW; 1-D convolutions as 2-D with height 1) with its bias and the
group's element-wise epilogue (activation, residual add, clip) fused.

Two loop structures:

- **GEMM** (groups with more than one input channel each: ordinary and grouped convs): per
  image and group, the input patches are copied into a ``[C/g * KH * KW, OH * OW]`` column
  buffer (im2col, parallel over rows, one slice copy per output row: 0.49 ms for a 64-channel
  56x56 3x3 layer, against 2.1 ms element by element, whose signed indices Numba checks for
  wraparound; a 1x1 stride-1 unpadded conv reads the input as is), then one ``np.dot``
  (OpenBLAS sgemm on the target's threads) writes ``weights @ columns`` straight into the
  output and a parallel pass over output channels adds the bias and runs the epilogue in
  place; or, with product tiles (`threads.product_tiles`), one tile of output channels per
  Numba thread, each on 1-thread OpenBLAS with its epilogue right after;
- **direct** (one input channel per group: depthwise, with any channel multiplier, up to 7x7
  taps): parallel over (image, output channel); the input channel is copied into a
  zero-padded plane, then every output is the unrolled sum of its taps (weights in locals),
  with bias and epilogue fused into the store.

The epilogue indexes its operands by (image, channel, pixel): a residual ``[N, C, H, W]`` or a
bias-like ``[C, 1, 1]`` is fine; an operand broadcast along only one of H and W is refused.
"""

from __future__ import annotations

from collections.abc import Callable

from lepton_compiler.errors import LoweringError
from lepton_compiler.ir import Graph, Node
from lepton_compiler.ops.kernels._padding import auto_pad_of, pads_for, window_attrs

from ..emit import Constants, Lines, module_text
from ..epilogue import Chain, static_shape
from . import KernelSource
from .loops import row_tiles

NAME = "conv"
ANCHORS = ("Conv",)

#: Depthwise kernels with more taps than this go through the GEMM path (one group each).
_MAX_UNROLLED_TAPS = 49


def plan(fused: Node, tiles: int = 1) -> KernelSource:
    """Write the conv group (see the module docstring).

    Raises:
        LoweringError: not a 1-D/2-D conv with static shapes, or an epilogue the chain
            table cannot write.
    """
    body: Graph = fused.attrs["body"]
    conv = next(iter(body))
    if len(conv.inputs) < 2 or conv.inputs[0] is None or conv.inputs[1] is None:
        raise LoweringError(f"{fused.name}: Conv needs X and W")
    xs, ws = static_shape(conv.inputs[0]), static_shape(conv.inputs[1])
    ys = static_shape(conv.outputs[0])
    if len(xs) not in (3, 4) or len(ws) != len(xs) or len(ys) != len(xs):
        raise LoweringError(f"{fused.name}: only 1-D and 2-D convolutions have a template")
    body_in = {bv: i for i, bv in enumerate(body.inputs)}
    x_idx, w_idx = body_in.get(conv.inputs[0]), body_in.get(conv.inputs[1])
    has_bias = len(conv.inputs) > 2 and conv.inputs[2] is not None
    b_idx = body_in.get(conv.inputs[2]) if has_bias else None  # type: ignore[arg-type]
    if x_idx is None or w_idx is None or (has_bias and b_idx is None):
        raise LoweringError(f"{fused.name}: the conv reads a value made inside the group")
    if any(t.dtype.name != "FLOAT32" for t in (conv.inputs[0].type, conv.outputs[0].type)):  # type: ignore[union-attr]
        raise LoweringError(f"{fused.name}: only float32 convolutions have a template")
    if len(xs) == 3:  # 1-D: a 2-D conv of height 1
        xs, ws, ys = (xs[0], xs[1], 1, xs[2]), (ws[0], ws[1], 1, ws[2]), (ys[0], ys[1], 1, ys[2])
    n, c, h, w = xs
    oc, cg, kh, kw = ws
    _, _, oh, ow = ys
    groups = int(conv.attrs.get("group", 1))
    kernel = [kh, kw]
    attrs = dict(conv.attrs)
    if len(static_shape(conv.inputs[0])) == 3:
        attrs = _as_2d(attrs)
    strides, dilations, eff = window_attrs(attrs, kernel)
    try:
        begin, _end = pads_for(auto_pad_of(attrs), [h, w], eff, strides, attrs.get("pads"))
    except ValueError as e:
        raise LoweringError(f"{fused.name}: {e}") from e
    if groups < 1 or c != cg * groups or oc % groups or 0 in (n, c, oh, ow, oc):
        raise LoweringError(f"{fused.name}: unsupported conv shapes {xs} x {ws}")
    chain = Chain.plan(
        fused,
        ("Conv",),
        groups=lambda o, s: _conv_groups(len(o)),
        skip_inputs=[i for i in (x_idx, w_idx, b_idx) if i is not None],
    )
    geo = _Geo(n, c, h, w, oc, cg, kh, kw, oh, ow, groups, strides, dilations, begin)
    consts = Constants()
    code = Lines()
    bias = "b" if has_bias else None
    direct = cg == 1 and groups > 1 and kh * kw <= _MAX_UNROLLED_TAPS
    if direct:
        _direct(code, consts, geo, bias, chain)
    else:
        _gemm(code, consts, geo, bias, chain, tiles)
    params = ["x", "w", *(["b"] if has_bias else []), *(op.name for op in chain.operands), "out"]
    scratch = [] if direct or geo.pointwise else [((cg * kh * kw, oh * ow), "float32")]
    if scratch:
        params.append("cols")
    kind = "direct (depthwise)" if direct else "im2col + np.dot" if scratch else "np.dot (1x1)"
    doc = [
        f"Conv {list(xs)} * {list(ws)} -> {list(ys)}, group={groups}, strides={strides}, "
        f"dilations={dilations}, pads(begin)={begin}; "
        f"epilogue: {' -> '.join(chain.ops) or 'none'}.",
        "",
        f"Loop structure: {kind}. Output written as [N, OC, OH*OW].",
    ]
    w_shape = (oc, kh, kw) if direct else (oc, cg * kh * kw)
    return KernelSource(
        name="conv2d",
        source=module_text(doc, "conv2d", params, code, consts),
        input_indices=[
            x_idx,
            w_idx,
            *([b_idx] if has_bias else []),  # type: ignore[list-item]
            *(op.index for op in chain.operands),
        ],
        param_shapes=[
            (n, c, h, w),
            w_shape,
            *([(oc,)] if has_bias else []),
            *(op.shape for op in chain.operands),
        ],
        param_dtypes=["float32"] * (2 + has_bias) + [op.dtype for op in chain.operands],
        output_shapes=[(n, oc, oh * ow)],
        output_dtypes=["float32"],
        scratch=scratch,
        ops=["Conv", *chain.ops],
    )


def _as_2d(attrs: dict) -> dict:
    """1-D conv attributes as those of a 2-D conv of height 1."""
    out = dict(attrs)
    for key, one in (("strides", 1), ("dilations", 1), ("kernel_shape", 1)):
        if attrs.get(key):
            out[key] = [one, *attrs[key]]
    if attrs.get("pads"):
        p = list(attrs["pads"])
        out["pads"] = [0, p[0], 0, p[1]]
    return out


def _conv_groups(rank: int) -> list[list[int]]:
    return [[0], [1], list(range(2, rank))]


class _Geo:
    """The conv's sizes, as the code writers use them."""

    def __init__(
        self,
        n: int,
        c: int,
        h: int,
        w: int,
        oc: int,
        cg: int,
        kh: int,
        kw: int,
        oh: int,
        ow: int,
        groups: int,
        strides: list[int],
        dilations: list[int],
        begin: list[int],
    ) -> None:
        self.n, self.c, self.h, self.w = n, c, h, w
        self.oc, self.cg, self.kh, self.kw, self.oh, self.ow = oc, cg, kh, kw, oh, ow
        self.groups, self.ocg = groups, oc // groups
        self.sh, self.sw = strides
        self.dh, self.dw = dilations
        self.ph, self.pw = begin
        self.pointwise = (kh, kw, self.sh, self.sw, self.ph, self.pw) == (1, 1, 1, 1, 0, 0) and (
            oh,
            ow,
        ) == (h, w)


def _store_epilogue(
    code: Lines, consts: Constants, g: _Geo, bias: str | None, chain: Chain, n: str, oc: str, p: str
) -> None:
    """acc = out[n, oc, p] (+ bias); the chain; store."""
    code(f"acc = out[{n}, {oc}, {p}]" + (f" + {bias}[{oc}]" if bias else ""))
    value = chain.lines(code, consts, "acc", [n, oc, p])
    code(f"out[{n}, {oc}, {p}] = {value}")


def emit_im2col(code: Lines, g: _Geo, copy: Callable[[str], list[str]]) -> None:
    """Write the column matrix of image ``n`` (group ``g``): row ``(c, ky, kx)`` holds the
    input seen by that tap at every output pixel, 0.0 where it reads padding (one slice copy
    per output row). ``copy(src)`` gives the lines that fill ``dst[base + lo : base + hi]``
    from the input slice `src` (a plain copy, or one that converts as it goes)."""
    ci = "c" if g.groups == 1 else f"g * {g.cg} + c"
    code(f"for row in prange({g.cg * g.kh * g.kw}):").indent()
    code(f"c = row // {g.kh * g.kw}", f"ky = (row // {g.kw}) % {g.kh}", f"kx = row % {g.kw}")
    code(f"lo = max(0, -((kx * {g.dw} - {g.pw}) // {g.sw}))")
    code(f"hi = max(lo, min({g.ow}, ({g.w - 1 + g.pw} - kx * {g.dw}) // {g.sw} + 1))")
    code(f"first = lo * {g.sw} - {g.pw} + kx * {g.dw}")
    code(f"last = (hi - 1) * {g.sw} - {g.pw} + kx * {g.dw} + 1")
    code("dst = cols[row]")
    code(f"for oy in range({g.oh}):").indent()
    code(f"iy = oy * {g.sh} - {g.ph} + ky * {g.dh}", f"base = oy * {g.ow}")
    code(f"if iy < 0 or iy >= {g.h}:").indent()
    code(f"dst[base : base + {g.ow}] = 0.0").dedent()
    code("else:").indent()
    code("dst[base : base + lo] = 0.0")
    step = "" if g.sw == 1 else f" : {g.sw}"
    code(*copy(f"x[n, {ci}, iy, first:last{step}]"))
    code(f"dst[base + hi : base + {g.ow}] = 0.0").dedent().dedent().dedent()


def emit_taps(code: Lines, g: _Geo, result: str) -> None:
    """The direct (depthwise) loops over one padded plane ``pad``: the channel's weights as
    locals, the output rows and columns, and ``result = sum of taps``; the code is left inside
    the column loop, where the caller stores."""
    taps = [(ky, kx) for ky in range(g.kh) for kx in range(g.kw)]
    for ky, kx in taps:
        code(f"w{ky}_{kx} = w[oc, {ky}, {kx}]")
    code(f"for oy in range({g.oh}):").indent()
    for ky in range(g.kh):
        code(f"r{ky} = pad[oy * {g.sh} + {ky * g.dh}]")
    code(f"for ox in range({g.ow}):").indent()
    code(f"ix = ox * {g.sw}")
    terms = [f"r{ky}[ix + {kx * g.dw}] * w{ky}_{kx}" for ky, kx in taps]
    code(f"{result} = (")
    code.indent()
    for i in range(0, len(terms), 3):
        code(" + ".join(terms[i : i + 3]) + (" +" if i + 3 < len(terms) else ""))
    code.dedent()
    code(")")


def _gemm(
    code: Lines, consts: Constants, g: _Geo, bias: str | None, chain: Chain, tiles: int
) -> None:
    code(f"for n in range({g.n}):").indent()
    if g.groups > 1:
        code(f"for g in range({g.groups}):").indent()
    if g.pointwise:
        src = "x[n]" if g.groups == 1 else f"x[n, g * {g.cg}:(g + 1) * {g.cg}]"
        code(f"cols_n = {src}.reshape(({g.cg}, {g.h * g.w}))")
        cols = "cols_n"
    else:
        cols = "cols"
        emit_im2col(code, g, lambda src: [f"dst[base + lo : base + hi] = {src}"])
    base = f"g * {g.ocg}" if g.groups > 1 else "0"
    if tiles > 1:  # one tile of output channels per thread, its epilogue right after
        row_tiles(code, g.ocg, tiles)
        code(f"oc0 = {base} + t * step", f"oc1 = min({base} + {g.ocg}, oc0 + step)")
        code(f"np.dot(w[oc0:oc1], {cols}, out[n, oc0:oc1])")
        loop = "for oc in range(oc0, oc1):"
    else:  # one product on multi-threaded BLAS, then a parallel epilogue
        if g.groups > 1:
            rows = f"{base}:{base} + {g.ocg}"
            code(f"np.dot(w[{rows}], {cols}, out[n, {rows}])")
            loop = f"for oc in prange({base}, {base} + {g.ocg}):"
        else:
            code(f"np.dot(w, {cols}, out[n])")
            loop = f"for oc in prange({g.oc}):"
    if bias or chain.nodes:
        code(loop).indent()
        code(f"for p in range({g.oh * g.ow}):").indent()
        _store_epilogue(code, consts, g, bias, chain, "n", "oc", "p")


def _direct(code: Lines, consts: Constants, g: _Geo, bias: str | None, chain: Chain) -> None:
    """Depthwise: per (image, channel) plane, a zero-padded copy of the input channel (every
    tap in range, no bounds tests), then every output a sum of the unrolled taps with the
    weights in locals, bias and epilogue fused into the store. (0.18 ms against 0.63 ms for
    tap-by-tap row accumulation in the output on a 192-channel 28x28 3x3 layer.)"""
    hp = (g.oh - 1) * g.sh + (g.kh - 1) * g.dh + 1
    wp = (g.ow - 1) * g.sw + (g.kw - 1) * g.dw + 1
    code(f"for t in prange({g.n * g.oc}):").indent()
    code(f"n = t // {g.oc}", f"oc = t % {g.oc}", f"c = oc // {g.ocg}")
    code(f"pad = np.zeros(({hp}, {wp}), np.float32)")
    y0, y1 = max(0, -g.ph), min(g.h, hp - g.ph)
    x0, x1 = max(0, -g.pw), min(g.w, wp - g.pw)
    if y1 > y0 and x1 > x0:
        code(f"for iy in range({y0}, {y1}):").indent()
        code(f"pad[iy + {g.ph}, {x0 + g.pw} : {x1 + g.pw}] = x[n, c, iy, {x0}:{x1}]").dedent()
    emit_taps(code, g, "acc")
    if bias:
        code(f"acc = acc + {bias}[oc]")
    value = chain.lines(code, consts, "acc", ["n", "oc", f"oy * {g.ow} + ox"])
    code(f"out[n, oc, oy * {g.ow} + ox] = {value}")
