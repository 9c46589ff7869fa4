"""Pooling: MaxPool and AveragePool (2-D, NCHW) and GlobalAveragePool / GlobalMaxPool (any
spatial rank), with the group's element-wise epilogue fused into the store.

One thread per output element in a grid-stride loop. A windowed pool reduces its window with
bounds tests against the unpadded input (padding never enters memory); the divisor of an
average counts the taps the ONNX attributes say count (``count_include_pad``; the ceil-mode
overhang never). A global pool's thread reduces its (image, channel) plane.
"""

from __future__ import annotations

import math

from lepton_compiler.errors import LoweringError
from lepton_compiler.ir import Graph, Node, TensorType
from lepton_compiler.ops.kernels._padding import auto_pad_of, pads_for, window_attrs

from ...epilogue import Chain, static_shape
from ..emit import Constants, Lines, cuda_module_text
from . import CudaKernelSource
from .launch import flat_launch, grid_stride, unflatten

NAME = "pool"
ANCHORS = ("MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool")


def plan(fused: Node) -> CudaKernelSource:
    """Write the pool and its epilogue (see the module docstring).

    Raises:
        LoweringError: not float32, a MaxPool with its Indices output, a windowed pool that
            is not 2-D, or an epilogue the chain table cannot write.
    """
    body: Graph = fused.attrs["body"]
    node = next(iter(body))
    x = node.inputs[0] if node.inputs else None
    if node.op not in ANCHORS or x is None or len(node.outputs) != 1:
        raise LoweringError(f"{fused.name}: not a pooling group with one output")
    if not isinstance(x.type, TensorType) or x.type.dtype.name != "FLOAT32":
        raise LoweringError(f"{fused.name}: only float32 pooling has a template")
    if x not in body.inputs:
        raise LoweringError(f"{fused.name}: the pool reads a value made inside the group")
    x_idx = list(body.inputs).index(x)
    xs, ys = static_shape(x), static_shape(node.outputs[0])
    if len(xs) < 3 or 0 in xs:
        raise LoweringError(f"{fused.name}: pooling needs [N, C, spatial...] input")
    consts = Constants()
    code = Lines()
    is_max = node.op in ("MaxPool", "GlobalMaxPool")
    start = consts(-math.inf) if is_max else consts(0.0)
    if node.op.startswith("Global"):
        n, c, s = xs[0], xs[1], math.prod(xs[2:])
        r = len(ys)
        chain = Chain.plan(
            fused,
            (node.op,),
            groups=lambda o, sh: [[0], [1], list(range(2, r))],
            skip_inputs=[x_idx],
        )
        x_decl, y_decl, coords = (n, c, s), (n, c, 1), ["n", "c", "0"]
        grid, block = flat_launch(n * c)
        grid_stride(code, n * c)
        unflatten(code, "t", (n, c), ("n", "c"))
        code(f"acc = {start}")
        code(f"for p in range({s}):").indent()
        code("acc = max(acc, x[n, c, p])" if is_max else "acc += x[n, c, p]").dedent()
        if not is_max:
            code(f"acc = acc * {consts(1.0 / s)}")
        what = f"{node.op} {list(xs)} -> {list(ys)}"
    else:
        chain = Chain.plan(fused, (node.op,), skip_inputs=[x_idx])
        x_decl, y_decl, coords = xs, ys, ["n", "c", "oy", "ox"]
        grid, block = flat_launch(math.prod(ys))
        what = _window(fused, node, xs, ys, code, consts, start, is_max)
    code(f"out[{', '.join(coords)}] = {chain.lines(code, consts, 'acc', coords)}")
    doc = [
        f"{what}; epilogue: {' -> '.join(chain.ops) or 'none'}.",
        "",
        f"One thread per output element (grid-stride loop); launch grid={grid}, block={block}.",
    ]
    name = {"MaxPool": "max_pool", "AveragePool": "average_pool"}.get(node.op, "global_pool")
    ops = chain.operands
    return CudaKernelSource(
        name=name,
        source=cuda_module_text(doc, name, ["x", *(o.name for o in ops), "out"], code, consts),
        grid=grid,
        block=block,
        input_indices=[x_idx, *(o.index for o in ops)],
        param_shapes=[x_decl, *(o.shape for o in ops)],
        param_dtypes=["float32", *(o.dtype for o in ops)],
        output_shapes=[y_decl],
        output_dtypes=["float32"],
        ops=[node.op, *chain.ops],
    )


def _window(
    fused: Node,
    node: Node,
    xs: tuple[int, ...],
    ys: tuple[int, ...],
    code: Lines,
    consts: Constants,
    start: str,
    is_max: bool,
) -> str:
    """Write a windowed pool's reduction into ``acc``; return its description."""
    if len(xs) != 4:
        raise LoweringError(f"{fused.name}: only 2-D {node.op} has a template")
    kernel = [int(k) for k in node.attrs.get("kernel_shape") or []]
    if len(kernel) != 2:
        raise LoweringError(f"{fused.name}: {node.op} needs a 2-D kernel_shape")
    h, w = xs[2], xs[3]
    strides, dil, eff = window_attrs(node.attrs, kernel)
    try:
        begin, end = pads_for(auto_pad_of(node.attrs), [h, w], eff, strides, node.attrs.get("pads"))
    except ValueError as e:
        raise LoweringError(f"{fused.name}: {e}") from e
    (kh, kw), (sh, sw), (dh, dw), (ph, pw) = kernel, strides, dil, begin
    grid_stride(code, math.prod(ys))
    unflatten(code, "t", ys, ("n", "c", "oy", "ox"))
    code(f"acc = {start}")
    if not is_max:
        code("count = 0")
    include = bool(node.attrs.get("count_include_pad", 0))
    code(f"for ky in range({kh}):").indent()
    code(f"iy = oy * {sh} - {ph} + ky * {dh}")
    code(f"for kx in range({kw}):").indent()
    code(f"ix = ox * {sw} - {pw} + kx * {dw}")
    code(f"if iy >= 0 and iy < {h} and ix >= 0 and ix < {w}:").indent()
    code("acc = max(acc, x[n, c, iy, ix])" if is_max else "acc += x[n, c, iy, ix]")
    if not is_max and not include:
        code("count += 1")
    code.dedent()
    if not is_max and include:  # padded taps count, the ceil-mode overhang does not
        code(f"if iy >= {-ph} and iy < {h + end[0]} and ix >= {-pw} and ix < {w + end[1]}:")
        code.indent()("count += 1").dedent()
    code.dedent().dedent()
    if not is_max:
        code("acc = acc / np.float32(max(count, 1))")
    return (
        f"{node.op} {list(xs)} -> {list(ys)}, kernel={kernel}, strides={strides}, "
        f"dilations={dil}, pads={begin + end}"
    )
