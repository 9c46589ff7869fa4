"""Pooling: MaxPool and AveragePool (2-D, NCHW) and GlobalAveragePool / GlobalMaxPool (any
spatial rank), with the group's element-wise epilogue fused into the store.

Parallel over (image, channel); every output element reduces its window with bounds tests
against the unpadded input (padding never enters memory), the divisor of an average counts
the taps that the ONNX attributes say count (``count_include_pad``, ceil-mode overhang never).

MaxPool and GlobalMaxPool also take uint8/int8 data (``quantize_before_maxpool`` leaves them
in quantized CNNs): the maximum starts from the dtype's minimum, what ``-inf`` quantizes to,
and is stored as that dtype, or through an epilogue that begins by dequantizing it.
"""

from __future__ import annotations

import math

import numpy as np

from lepton_compiler.errors import LoweringError
from lepton_compiler.ir import Graph, Node, TensorType
from lepton_compiler.ops.kernels._padding import auto_pad_of, pads_for, window_attrs

from ..emit import Constants, Lines, module_text
from ..epilogue import Chain, static_shape
from . import KernelSource

NAME = "pool"
ANCHORS = ("MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool")
_EIGHT_BIT = ("UINT8", "INT8")


def plan(fused: Node, tiles: int = 1) -> KernelSource:
    """Write the pool and its epilogue (see the module docstring).

    Raises:
        LoweringError: not float32 (or uint8/int8 for a maximum), a MaxPool with its Indices
            output, a windowed pool that is not 2-D, or an epilogue the chain table cannot
            write.
    """
    body: Graph = fused.attrs["body"]
    node = next(iter(body))
    x = node.inputs[0] if node.inputs else None
    if node.op not in ANCHORS or x is None or len(node.outputs) != 1:
        raise LoweringError(f"{fused.name}: not a pooling group with one output")
    if not isinstance(x.type, TensorType) or x.type.dtype.name != "FLOAT32":
        _check_eight_bit(fused, node)
    x_idx = list(body.inputs).index(x) if x in body.inputs else None
    if x_idx is None:
        raise LoweringError(f"{fused.name}: the pool reads a value made inside the group")
    xs, ys = static_shape(x), static_shape(node.outputs[0])
    if len(xs) < 3 or 0 in xs:
        raise LoweringError(f"{fused.name}: pooling needs [N, C, spatial...] input")
    consts = Constants()
    code = Lines()
    if node.op.startswith("Global"):
        return _global(fused, node, x_idx, xs, ys, consts, code)
    return _window(fused, node, x_idx, xs, ys, consts, code)


def _check_eight_bit(fused: Node, node: Node) -> None:
    """A pool on non-float32 data must be an 8-bit maximum whose result the group stores or
    dequantizes (no other op reads it: the epilogue computes in float32).

    Raises:
        LoweringError: it is not.
    """
    x = node.inputs[0]
    assert x is not None
    dtype = x.type.dtype.name if isinstance(x.type, TensorType) else None
    if dtype not in _EIGHT_BIT or node.op not in ("MaxPool", "GlobalMaxPool"):
        raise LoweringError(f"{fused.name}: only float32 (or 8-bit MaxPool) has a template")
    if any(u.op != "DequantizeLinear" or i != 0 for u, i in node.outputs[0].uses):
        raise LoweringError(f"{fused.name}: only a DequantizeLinear may read an 8-bit pool")


def _data_dtype(node: Node) -> str:
    """The NumPy dtype name of the pooled data."""
    x = node.inputs[0]
    assert x is not None and isinstance(x.type, TensorType)
    return np.dtype(x.type.dtype.numpy).name


def _lowest(node: Node, consts: Constants) -> str:
    """The start of a maximum: ``-inf``, or the minimum of an 8-bit dtype."""
    dtype = _data_dtype(node)
    return consts(-math.inf) if dtype == "float32" else str(int(np.iinfo(dtype).min))


def _global(
    fused: Node,
    node: Node,
    x_idx: int,
    xs: tuple[int, ...],
    ys: tuple[int, ...],
    consts: Constants,
    code: Lines,
) -> KernelSource:
    n, c, s = xs[0], xs[1], math.prod(xs[2:])
    r = len(ys)
    chain = Chain.plan(
        fused,
        (node.op,),
        groups=lambda o, sh: [[0], [1], list(range(2, r))],
        skip_inputs=[x_idx],
        int_output=_data_dtype(node) != "float32",
    )
    is_max = node.op == "GlobalMaxPool"
    code(f"for t in prange({n * c}):").indent()
    code(f"n = t // {c}", f"c = t % {c}")
    code(f"acc = {_lowest(node, consts) if is_max else consts(0.0)}")
    code(f"for i in range({s}):").indent()
    code("acc = max(acc, x[n, c, i])" if is_max else "acc += x[n, c, i]").dedent()
    if not is_max:
        code(f"acc = acc * {consts(1.0 / s)}")
    value = chain.lines(code, consts, "acc", ["n", "c", "0"])
    code(f"out[n, c, 0] = {value}")
    doc = [f"{node.op} {list(xs)} -> {list(ys)}; epilogue: {' -> '.join(chain.ops) or 'none'}."]
    return _source(node, doc, code, consts, x_idx, (n, c, s), (n, c, 1), chain)


def _window(
    fused: Node,
    node: Node,
    x_idx: int,
    xs: tuple[int, ...],
    ys: tuple[int, ...],
    consts: Constants,
    code: Lines,
) -> KernelSource:
    if len(xs) != 4:
        raise LoweringError(f"{fused.name}: only 2-D {node.op} has a template")
    kernel = [int(k) for k in node.attrs.get("kernel_shape") or []]
    if len(kernel) != 2:
        raise LoweringError(f"{fused.name}: {node.op} needs a 2-D kernel_shape")
    n, c, h, w = xs
    oh, ow = ys[2], ys[3]
    strides, dil, eff = window_attrs(node.attrs, kernel)
    auto_pad = auto_pad_of(node.attrs)
    try:
        begin, end = pads_for(auto_pad, [h, w], eff, strides, node.attrs.get("pads"))
    except ValueError as e:
        raise LoweringError(f"{fused.name}: {e}") from e
    chain = Chain.plan(
        fused, (node.op,), skip_inputs=[x_idx], int_output=_data_dtype(node) != "float32"
    )
    is_max = node.op == "MaxPool"
    (kh, kw), (sh, sw), (dh, dw), (ph, pw) = kernel, strides, dil, begin
    code(f"for t in prange({n * c}):").indent()
    code(f"n = t // {c}", f"c = t % {c}")
    code(f"for oy in range({oh}):").indent()
    code(f"for ox in range({ow}):").indent()
    code(f"acc = {_lowest(node, consts) if is_max else consts(0.0)}")
    if not is_max:
        code("cy = 0", "cx = 0")
    code(f"for ky in range({kh}):").indent()
    code(f"iy = oy * {sh} - {ph} + ky * {dh}")
    code(f"if iy >= 0 and iy < {h}:").indent()
    code(f"for kx in range({kw}):").indent()
    code(f"ix = ox * {sw} - {pw} + kx * {dw}")
    code(f"if ix >= 0 and ix < {w}:").indent()
    code("acc = max(acc, x[n, c, iy, ix])" if is_max else "acc += x[n, c, iy, ix]")
    code.dedent().dedent().dedent().dedent()
    if not is_max:
        include = bool(node.attrs.get("count_include_pad", 0))
        lo_y, hi_y = (-ph, h + end[0]) if include else (0, h)
        lo_x, hi_x = (-pw, w + end[1]) if include else (0, w)
        code(f"for ky in range({kh}):").indent()
        code(f"iy = oy * {sh} - {ph} + ky * {dh}")
        code(f"if iy >= {lo_y} and iy < {hi_y}:").indent()
        code("cy += 1").dedent().dedent()
        code(f"for kx in range({kw}):").indent()
        code(f"ix = ox * {sw} - {pw} + kx * {dw}")
        code(f"if ix >= {lo_x} and ix < {hi_x}:").indent()
        code("cx += 1").dedent().dedent()
        code("acc = acc / np.float32(max(cy * cx, 1))")
    value = chain.lines(code, consts, "acc", ["n", "c", "oy", "ox"])
    code(f"out[n, c, oy, ox] = {value}")
    doc = [
        f"{node.op} {list(xs)} -> {list(ys)}, kernel={kernel}, strides={strides}, "
        f"dilations={dil}, pads={begin + end}; epilogue: {' -> '.join(chain.ops) or 'none'}."
    ]
    return _source(node, doc, code, consts, x_idx, xs, ys, chain)


def _source(
    node: Node,
    doc: list[str],
    code: Lines,
    consts: Constants,
    x_idx: int,
    x_decl: tuple[int, ...],
    y_decl: tuple[int, ...],
    chain: Chain,
) -> KernelSource:
    op = node.op
    name = {"MaxPool": "max_pool", "AveragePool": "average_pool"}.get(op, "global_pool")
    ops = chain.operands
    return KernelSource(
        name=name,
        source=module_text(doc, name, ["x", *(o.name for o in ops), "out"], code, consts),
        input_indices=[x_idx, *(o.index for o in ops)],
        param_shapes=[x_decl, *(o.shape for o in ops)],
        param_dtypes=[_data_dtype(node), *(o.dtype for o in ops)],
        output_shapes=[y_decl],
        output_dtypes=[chain.out_dtype],
        ops=[op, *chain.ops],
    )
