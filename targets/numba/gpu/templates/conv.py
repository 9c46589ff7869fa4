"""2-D convolution (NCHW; 1-D as 2-D with height 1) with its bias and the group's
element-wise epilogue (activation, residual add, clip) fused into the store.

Two kernels:

- **implicit GEMM** (groups with more than one input channel each: ordinary and grouped
  convs): per image and group, ``out[oc, p] = sum_k w[oc, k] * col[k, p]`` with ``k`` running
  over (input channel, ky, kx) and ``p`` over output positions, as the shared-memory tiled
  product of `tiles`; the B tile is the im2col column gathered from the input on the fly
  (strides, dilations and padding resolved per element, zero in the padding), so the column
  matrix never exists. Grid: (position tiles, output-channel tiles, images x groups);
- **direct** (one input channel per group: depthwise, any channel multiplier): one thread
  per output element in a grid-stride loop, summing its ``KH x KW`` taps with bounds tests.

The epilogue indexes its operands by (image, channel, pixel), as on the CPU.
"""

from __future__ import annotations

from lepton_compiler.errors import LoweringError
from lepton_compiler.ir import Graph, Node
from lepton_compiler.ops.kernels._padding import auto_pad_of, pads_for, window_attrs

from ...epilogue import Chain, static_shape
from ..emit import Constants, Lines, cuda_module_text
from . import CudaKernelSource
from .launch import TILE, flat_launch, grid_stride, unflatten
from .tiles import tiled_launch, write_tiled

NAME = "conv"
ANCHORS = ("Conv",)


class _Geo:
    """The conv's sizes, as the code writers use them."""

    def __init__(
        self,
        xs: tuple[int, ...],
        ws: tuple[int, ...],
        ys: tuple[int, ...],
        groups: int,
        strides: list[int],
        dilations: list[int],
        begin: list[int],
    ) -> None:
        self.n, self.c, self.h, self.w = xs
        self.oc, self.cg, self.kh, self.kw = ws
        self.oh, self.ow = ys[2], ys[3]
        self.groups, self.ocg = groups, self.oc // groups
        self.sh, self.sw = strides
        self.dh, self.dw = dilations
        self.ph, self.pw = begin

    def input_at(
        self, code: Lines, consts: Constants, n: str, c: str, oy: str, ox: str, ky: str, kx: str
    ) -> str:
        """Statements loading ``x[n, c, iy, ix]`` under tap (ky, kx) of output (oy, ox), zero
        in the padding; returns the variable holding it."""
        code(f"iy = {oy} * {self.sh} - {self.ph} + {ky} * {self.dh}")
        code(f"ix = {ox} * {self.sw} - {self.pw} + {kx} * {self.dw}")
        code(f"xv = {consts(0.0)}")
        code(f"if iy >= 0 and iy < {self.h} and ix >= 0 and ix < {self.w}:").indent()
        code(f"xv = x[{n}, {c}, iy, ix]").dedent()
        return "xv"


def plan(fused: Node) -> CudaKernelSource:
    """Write the conv group (see the module docstring).

    Raises:
        LoweringError: not a float32 1-D/2-D conv with static shapes, or an epilogue the
            chain table cannot write.
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
    attrs = dict(conv.attrs)
    if len(xs) == 3:  # 1-D: a 2-D conv of height 1
        xs, ws, ys = (xs[0], xs[1], 1, xs[2]), (ws[0], ws[1], 1, ws[2]), (ys[0], ys[1], 1, ys[2])
        attrs = _as_2d(attrs)
    groups = int(attrs.get("group", 1))
    strides, dilations, eff = window_attrs(attrs, [ws[2], ws[3]])
    try:
        begin, _end = pads_for(auto_pad_of(attrs), [xs[2], xs[3]], eff, strides, attrs.get("pads"))
    except ValueError as e:
        raise LoweringError(f"{fused.name}: {e}") from e
    if groups < 1 or xs[1] != ws[1] * groups or ws[0] % groups or 0 in (*xs, *ys, ws[0]):
        raise LoweringError(f"{fused.name}: unsupported conv shapes {xs} x {ws}")
    chain = Chain.plan(
        fused,
        ("Conv",),
        groups=lambda o, s: [[0], [1], list(range(2, len(o)))],
        skip_inputs=[i for i in (x_idx, w_idx, b_idx) if i is not None],
    )
    g = _Geo(xs, ws, ys, groups, strides, dilations, begin)
    consts = Constants()
    code = Lines()
    bias = "b" if has_bias else None
    direct = g.cg == 1 and groups > 1
    if direct:
        grid, block = flat_launch(g.n * g.oc * g.oh * g.ow)
        _direct(code, consts, g, bias, chain)
        kind = "direct (depthwise): one thread per output element, grid-stride loop"
    else:
        grid, block = tiled_launch(g.ocg, g.oh * g.ow, g.n * groups)
        _implicit_gemm(code, consts, g, bias, chain)
        kind = f"implicit GEMM, {TILE}x{TILE} tiles, im2col gathered into shared memory"
    params = ["x", "w", *(["b"] if has_bias else []), *(op.name for op in chain.operands), "out"]
    doc = [
        f"Conv {list(xs)} * {list(ws)} -> {list(ys)}, group={groups}, strides={strides}, "
        f"dilations={dilations}, pads(begin)={begin}; "
        f"epilogue: {' -> '.join(chain.ops) or 'none'}.",
        "",
        f"Kernel: {kind}; launch grid={grid}, block={block}. Output written as [N, OC, OH*OW].",
    ]
    return CudaKernelSource(
        name="conv2d",
        source=cuda_module_text(doc, "conv2d", params, code, consts),
        grid=grid,
        block=block,
        input_indices=[
            x_idx,
            w_idx,
            *([b_idx] if has_bias else []),  # type: ignore[list-item]
            *(op.index for op in chain.operands),
        ],
        param_shapes=[
            xs,
            (g.oc, g.cg * g.kh * g.kw),
            *([(g.oc,)] if has_bias else []),
            *(op.shape for op in chain.operands),
        ],
        param_dtypes=["float32"] * (2 + has_bias) + [op.dtype for op in chain.operands],
        output_shapes=[(g.n, g.oc, g.oh * g.ow)],
        output_dtypes=["float32"],
        ops=["Conv", *chain.ops],
    )


def _as_2d(attrs: dict) -> dict:
    """1-D conv attributes as those of a 2-D conv of height 1."""
    out = dict(attrs)
    for key in ("strides", "dilations", "kernel_shape"):
        if attrs.get(key):
            out[key] = [1, *attrs[key]]
    if attrs.get("pads"):
        p = list(attrs["pads"])
        out["pads"] = [0, p[0], 0, p[1]]
    return out


def _store(
    code: Lines, consts: Constants, bias: str | None, chain: Chain, n: str, oc: str, p: str
) -> None:
    """(bias), the chain, the store of ``acc`` at ``out[n, oc, p]``."""
    if bias:
        code(f"acc += {bias}[{oc}]")
    code(f"out[{n}, {oc}, {p}] = {chain.lines(code, consts, 'acc', [n, oc, p])}")


def _implicit_gemm(code: Lines, consts: Constants, g: _Geo, bias: str | None, chain: Chain) -> None:
    taps = g.kh * g.kw

    def bind(code: Lines) -> None:
        if g.groups > 1:
            code(f"n = q // {g.groups}", f"grp = q % {g.groups}")
        else:
            code("n = q")

    def load_b(code: Lines) -> str:
        code(f"c = kb // {taps}", f"ky = (kb // {g.kw}) % {g.kh}", f"kx = kb % {g.kw}")
        code(f"oy = j // {g.ow}", f"ox = j % {g.ow}")
        chan = "c" if g.groups == 1 else f"grp * {g.cg} + c"
        return g.input_at(code, consts, "n", chan, "oy", "ox", "ky", "kx")

    def store(code: Lines) -> None:
        oc = "i"
        if g.groups > 1:
            code(f"oc = grp * {g.ocg} + i")
            oc = "oc"
        _store(code, consts, bias, chain, "n", oc, "j")

    load_a = "w[i, ka]" if g.groups == 1 else f"w[grp * {g.ocg} + i, ka]"
    write_tiled(
        code,
        consts,
        g.ocg,
        g.oh * g.ow,
        g.cg * taps,
        g.n * g.groups,
        bind,
        lambda c: load_a,
        load_b,
        store,
    )


def _direct(code: Lines, consts: Constants, g: _Geo, bias: str | None, chain: Chain) -> None:
    grid_stride(code, g.n * g.oc * g.oh * g.ow)
    unflatten(code, "t", (g.n, g.oc, g.oh, g.ow), ("n", "oc", "oy", "ox"))
    code(f"c = oc // {g.ocg}", f"acc = {consts(0.0)}")
    code(f"for ky in range({g.kh}):").indent()
    code(f"for kx in range({g.kw}):").indent()
    xv = g.input_at(code, consts, "n", "c", "oy", "ox", "ky", "kx")
    code(f"acc += w[oc, ky * {g.kw} + kx] * {xv}").dedent().dedent()
    _store(code, consts, bias, chain, "n", "oc", f"oy * {g.ow} + ox")
