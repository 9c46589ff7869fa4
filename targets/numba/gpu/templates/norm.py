"""Row-wise normalizations: Softmax (last axis), LayerNormalization and lepton.SkipLayerNorm,
with the group's element-wise epilogue fused into the final store.

One thread block per row (rows strided over the grid); the block's threads stride over the
row's columns, and every row statistic (max and sum of exponentials; mean and variance) is a
shared-memory tree reduction (`emit.block_reduce`). SkipLayerNorm writes the residual sum
``x + skip (+ bias)`` to the output on the first pass; each thread reads back only the
columns it wrote, so no barrier is needed for that.
"""

from __future__ import annotations

import math

from lepton_compiler.errors import LoweringError
from lepton_compiler.ir import Graph, Node, TensorType

from ...epilogue import Chain, static_shape
from ..emit import Constants, Lines, block_reduce, cuda_module_text, pow2_block
from . import CudaKernelSource
from .launch import MAX_GRID_Z

NAME = "norm"
ANCHORS = ("Softmax", "LayerNormalization", "lepton.SkipLayerNorm")


def plan(fused: Node) -> CudaKernelSource:
    """Write the normalization and its epilogue (see the module docstring).

    Raises:
        LoweringError: not float32, Softmax over another axis than the last, extra outputs
            (LayerNormalization's mean), per-column inputs of the wrong size, or an epilogue
            the chain table cannot write.
    """
    body: Graph = fused.attrs["body"]
    node = next(iter(body))
    if node.op not in ANCHORS or len(node.outputs) != 1 or not node.inputs:
        raise LoweringError(f"{fused.name}: not a normalization group with one output")
    body_in = {bv: i for i, bv in enumerate(body.inputs)}
    for v in node.inputs:
        if v is None:
            continue
        if v not in body_in:
            raise LoweringError(f"{fused.name}: {node.op} reads a value made inside the group")
        if not isinstance(v.type, TensorType) or v.type.dtype.name != "FLOAT32":
            raise LoweringError(f"{fused.name}: only float32 normalizations have a template")
    xs = static_shape(node.inputs[0])
    if len(xs) == 0 or 0 in xs:
        raise LoweringError(f"{fused.name}: empty or scalar input")
    r = len(xs)
    axis = int(node.attrs.get("axis", -1))
    axis = axis + r if axis < 0 else axis
    if node.op == "lepton.SkipLayerNorm":
        axis = r - 1
    elif node.op == "Softmax" and axis != r - 1:
        raise LoweringError(f"{fused.name}: Softmax over a non-last axis has no template")
    rows, d = math.prod(xs[:axis]), math.prod(xs[axis:])
    present = [(k, v) for k, v in enumerate(node.inputs) if v is not None]
    anchor_in = [body_in[v] for _, v in present]
    chain = Chain.plan(
        fused,
        (node.op,),
        groups=lambda o, s: [list(range(axis)), list(range(axis, r))],
        skip_inputs=anchor_in,
    )
    names, shapes = _params(fused, node, present, xs, rows, d)
    threads = pow2_block(d)
    grid, block = (min(rows, MAX_GRID_Z),), (threads,)
    consts = Constants()
    code = Lines()
    code(f"sh = cuda.shared.array({threads}, float32)", "tid = cuda.threadIdx.x")
    code(f"for i in range(cuda.blockIdx.x, {rows}, cuda.gridDim.x):").indent()
    if node.op == "Softmax":
        _softmax(code, consts, d, threads)
    else:
        _layer_norm(code, consts, node, d, threads, set(names))
    code(f"out[i, j] = {chain.lines(code, consts, 'acc', ['i', 'j'])}")
    label = {"Softmax": "softmax", "LayerNormalization": "layer_norm"}.get(
        node.op, "skip_layer_norm"
    )
    doc = [
        f"{node.op} over the last {r - axis} axis/axes of {list(xs)} ({rows} rows of {d}); "
        f"epilogue: {' -> '.join(chain.ops) or 'none'}.",
        "",
        f"One block of {threads} threads per row, shared-memory tree reductions; launch "
        f"grid={grid}, block={block}.",
    ]
    ops = chain.operands
    return CudaKernelSource(
        name=label,
        source=cuda_module_text(doc, label, [*names, *(o.name for o in ops), "out"], code, consts),
        grid=grid,
        block=block,
        input_indices=[*anchor_in, *(o.index for o in ops)],
        param_shapes=[*shapes, *(o.shape for o in ops)],
        param_dtypes=["float32"] * len(names) + [o.dtype for o in ops],
        output_shapes=[(rows, d)],
        output_dtypes=["float32"],
        ops=[node.op, *chain.ops],
    )


def _params(
    fused: Node,
    node: Node,
    present: list[tuple[int, object]],
    xs: tuple[int, ...],
    rows: int,
    d: int,
) -> tuple[list[str], list[tuple[int, ...]]]:
    """The anchor's parameter names and declared shapes: rows x columns for the input (and
    the skip), one value per column for scale, bias, gamma and beta."""
    names: list[str] = []
    shapes: list[tuple[int, ...]] = []
    skip = node.op == "lepton.SkipLayerNorm"
    for k, v in present:
        shape = static_shape(v)  # type: ignore[arg-type]
        if k == 0 or (skip and k == 1):
            if k == 1 and shape != xs:
                raise LoweringError(f"{fused.name}: the skip input must have the input's shape")
            names.append("x" if k == 0 else "skip")
            shapes.append((rows, d))
            continue
        if math.prod(shape) != d:
            raise LoweringError(f"{fused.name}: input {k} must hold one value per column")
        table = {1: "scale", 2: "bias"} if not skip else {2: "gamma", 3: "beta", 4: "bias"}
        if k not in table:
            raise LoweringError(f"{fused.name}: {node.op} has no input {k}")
        names.append(table[k])
        shapes.append((d,))
    return names, shapes


def _softmax(code: Lines, consts: Constants, d: int, threads: int) -> None:
    code(f"m = {consts(-math.inf)}")
    code(f"for j in range(tid, {d}, {threads}):").indent()
    code("m = max(m, x[i, j])").dedent()
    block_reduce(code, "sh", "m", threads, "max", "m")
    code(f"s = {consts(0.0)}")
    code(f"for j in range(tid, {d}, {threads}):").indent()
    code("e = math.exp(x[i, j] - m)", "out[i, j] = e", "s += e").dedent()
    block_reduce(code, "sh", "s", threads, "+", "s")
    code(f"inv = {consts(1.0)} / s")
    code(f"for j in range(tid, {d}, {threads}):").indent()
    code("acc = out[i, j] * inv")


def _layer_norm(
    code: Lines, consts: Constants, node: Node, d: int, threads: int, names: set[str]
) -> None:
    eps = float(node.attrs.get("epsilon", 1e-5))
    skip = node.op == "lepton.SkipLayerNorm"
    code(f"s = {consts(0.0)}")
    code(f"for j in range(tid, {d}, {threads}):").indent()
    if skip:
        code("v = x[i, j] + skip[i, j]" + (" + bias[j]" if "bias" in names else ""))
        code("out[i, j] = v", "s += v").dedent()
        src = "out"
    else:
        code("s += x[i, j]").dedent()
        src = "x"
    block_reduce(code, "sh", "s", threads, "+", "total")
    code(f"mean = total * {consts(1.0 / d)}")
    code(f"s = {consts(0.0)}")
    code(f"for j in range(tid, {d}, {threads}):").indent()
    code(f"c = {src}[i, j] - mean", "s += c * c").dedent()
    block_reduce(code, "sh", "s", threads, "+", "total")
    code(f"inv = {consts(1.0)} / math.sqrt(total * {consts(1.0 / d)} + {consts(eps)})")
    code(f"for j in range(tid, {d}, {threads}):").indent()
    scale, shift = ("gamma", "beta") if skip else ("scale", "bias")
    acc = f"({src}[i, j] - mean) * inv * {scale}[j]"
    code(f"acc = {acc} + {shift}[j]" if shift in names else f"acc = {acc}")
