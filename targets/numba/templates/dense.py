"""Matrix products, Gemm and MatMul, with the group's element-wise epilogue fused.

One ``np.dot`` (OpenBLAS sgemm on the target's threads) writes the product straight into the
output (a transposed ``B`` is passed as a transposed view, which BLAS reads without a copy),
then a parallel pass over the rows applies ``alpha``, ``beta * C`` and the epilogue in place.
With product tiles (`threads.product_tiles`) the rows are split into one tile per Numba
thread instead, each tile on 1-thread OpenBLAS with its epilogue right after (a transposed
``A``, whose rows are not contiguous, stays one product). MatMul with a 2-D right operand
treats every leading dim of the left one as rows; with batched right operands of the same
batch shape, one GEMM per batch item.
"""

from __future__ import annotations

import math

from lepton_compiler.errors import LoweringError
from lepton_compiler.ir import Graph, Node, TensorType

from ..emit import Constants, Lines, module_text
from ..epilogue import Chain, Operand, merged_shape, static_shape
from . import KernelSource
from .loops import row_tiles

NAME = "dense"
ANCHORS = ("Gemm", "MatMul")


def plan(fused: Node, tiles: int = 1) -> KernelSource:
    """Write the product and its epilogue (see the module docstring).

    Raises:
        LoweringError: not float32, a shape the template does not take (1-D operands,
            broadcast batch dims), or an epilogue the chain table cannot write.
    """
    body: Graph = fused.attrs["body"]
    node = next(iter(body))
    if node.op not in ANCHORS or len(node.inputs) < 2 or None in node.inputs[:2]:
        raise LoweringError(f"{fused.name}: not a Gemm/MatMul group")
    for v in [*node.inputs, node.outputs[0]]:
        if v is not None and (not isinstance(v.type, TensorType) or v.type.dtype.name != "FLOAT32"):
            raise LoweringError(f"{fused.name}: only float32 products have a template")
    body_in = {bv: i for i, bv in enumerate(body.inputs)}
    idx = [body_in.get(v) if v is not None else None for v in node.inputs]
    if any(i is None for v, i in zip(node.inputs, idx, strict=True) if v is not None):
        raise LoweringError(f"{fused.name}: the product reads a value made inside the group")
    a_s, b_s, y_s = (
        static_shape(node.inputs[0]),
        static_shape(node.inputs[1]),
        static_shape(node.outputs[0]),
    )
    if 0 in y_s or 0 in a_s or 0 in b_s:
        raise LoweringError(f"{fused.name}: empty product")
    if node.op == "Gemm":
        return _gemm(fused, node, idx, a_s, b_s, y_s, tiles)
    return _matmul(fused, node, idx, a_s, b_s, y_s, tiles)


def _gemm(
    fused: Node,
    node: Node,
    idx: list[int | None],
    a_s: tuple[int, ...],
    b_s: tuple[int, ...],
    y_s: tuple[int, ...],
    tiles: int,
) -> KernelSource:
    if len(a_s) != 2 or len(b_s) != 2:
        raise LoweringError(f"{fused.name}: Gemm needs 2-D operands")
    ta, tb = bool(node.attrs.get("transA", 0)), bool(node.attrs.get("transB", 0))
    alpha, beta = float(node.attrs.get("alpha", 1.0)), float(node.attrs.get("beta", 1.0))
    m, n = y_s
    has_c = len(node.inputs) > 2 and node.inputs[2] is not None and beta != 0.0
    anchor_in = [i for i in idx if i is not None]
    chain = Chain.plan(fused, ("Gemm",), skip_inputs=anchor_in)
    consts = Constants()
    code = Lines()
    b_expr = "b.T" if tb else "b"
    c_op = None
    if has_c:
        cs = static_shape(node.inputs[2])
        c_op = Operand(idx[2], "c", merged_shape("C", cs, y_s, [[0], [1]]), "float32")  # type: ignore[arg-type]
    epilogue = alpha != 1.0 or c_op is not None or bool(chain.nodes)
    if ta or tiles == 1:  # one product (rows of aᵀ are not contiguous), then the epilogue
        code(f"np.dot({'a.T' if ta else 'a'}, {b_expr}, out)")
        if epilogue:
            code(f"for i in prange({m}):").indent()
    else:
        row_tiles(code, m, tiles)
        code("i0 = t * step", f"i1 = min({m}, i0 + step)")
        code(f"np.dot(a[i0:i1], {b_expr}, out[i0:i1])")
        if epilogue:
            code("for i in range(i0, i1):").indent()
    if epilogue:
        code(f"for j in range({n}):").indent()
        acc = "out[i, j]" if alpha == 1.0 else f"out[i, j] * {consts(alpha)}"
        if c_op is not None:
            cl = c_op.load(["i", "j"])
            acc += f" + {cl}" if beta == 1.0 else f" + {consts(beta)} * {cl}"
        code(f"acc = {acc}")
        value = chain.lines(code, consts, "acc", ["i", "j"])
        code(f"out[i, j] = {value}")
    ops = [op for op in chain.operands]
    params = ["a", "b", *(["c"] if c_op else []), *(op.name for op in ops), "out"]
    doc = [
        f"Gemm {list(a_s)}{'ᵀ' if ta else ''} @ {list(b_s)}{'ᵀ' if tb else ''} -> {list(y_s)}, "
        f"alpha={alpha}, beta={beta}{', + C' if c_op else ''}; epilogue: "
        f"{' -> '.join(chain.ops) or 'none'}.",
        "",
        "One tile of rows per thread: np.dot into the output, then alpha, C and the epilogue "
        "over the tile."
        if tiles > 1 and not ta
        else "One np.dot into the output, then alpha, C and the epilogue in a parallel pass.",
    ]
    return KernelSource(
        name="gemm",
        source=module_text(doc, "gemm", params, code, consts),
        input_indices=[
            idx[0],
            idx[1],
            *([c_op.index] if c_op else []),  # type: ignore[list-item]
            *(op.index for op in ops),
        ],
        param_shapes=[a_s, b_s, *([c_op.shape] if c_op else []), *(op.shape for op in ops)],
        param_dtypes=["float32"] * (2 + bool(c_op)) + [op.dtype for op in ops],
        output_shapes=[y_s],
        output_dtypes=["float32"],
        ops=["Gemm", *chain.ops],
    )


def _matmul(
    fused: Node,
    node: Node,
    idx: list[int | None],
    a_s: tuple[int, ...],
    b_s: tuple[int, ...],
    y_s: tuple[int, ...],
    tiles: int,
) -> KernelSource:
    if len(a_s) < 2 or len(b_s) < 2:
        raise LoweringError(f"{fused.name}: MatMul with 1-D operands has no template")
    k, n = b_s[-2], b_s[-1]
    r = len(y_s)
    consts = Constants()
    code = Lines()
    anchor_in = [i for i in idx if i is not None]
    if len(b_s) == 2:
        rows = math.prod(a_s[:-1])
        chain = Chain.plan(
            fused,
            ("MatMul",),
            groups=lambda o, s: [list(range(r - 1)), [r - 1]],
            skip_inputs=anchor_in,
        )
        a_decl, b_decl, y_decl = (rows, k), (k, n), (rows, n)
        coords = ["i", "j"]
        if tiles == 1:
            code("np.dot(a, b, out)")
            if chain.nodes:
                code(f"for i in prange({rows}):").indent()
            how = f"one product of {rows} rows"
        else:
            row_tiles(code, rows, tiles)
            code("i0 = t * step", f"i1 = min({rows}, i0 + step)")
            code("np.dot(a[i0:i1], b, out[i0:i1])")
            if chain.nodes:
                code("for i in range(i0, i1):").indent()
            how = f"{rows} rows, one tile of rows per thread"
        if chain.nodes:
            code(f"for j in range({n}):").indent()
    else:
        batch_a, batch_b = a_s[:-2], b_s[:-2]
        if tuple(batch_a) != tuple(batch_b):
            raise LoweringError(f"{fused.name}: MatMul with broadcast batch dims has no template")
        nb, m = math.prod(batch_a), a_s[-2]
        chain = Chain.plan(
            fused,
            ("MatMul",),
            groups=lambda o, s: [list(range(r - 2)), [r - 2], [r - 1]],
            skip_inputs=anchor_in,
        )
        a_decl, b_decl, y_decl = (nb, m, k), (nb, k, n), (nb, m, n)
        code(f"for q in {'prange' if tiles > 1 else 'range'}({nb}):").indent()
        code("np.dot(a[q], b[q], out[q])")
        coords = ["q", "i", "j"]
        if chain.nodes:
            code(f"for i in range({m}):").indent()
            code(f"for j in range({n}):").indent()
        how = f"{nb} GEMMs" + (", in parallel" if tiles > 1 else "")
    if chain.nodes:
        code(f"acc = out[{', '.join(coords)}]")
        value = chain.lines(code, consts, "acc", coords)
        code(f"out[{', '.join(coords)}] = {value}")
    ops = chain.operands
    doc = [
        f"MatMul {list(a_s)} @ {list(b_s)} -> {list(y_s)}; epilogue: "
        f"{' -> '.join(chain.ops) or 'none'}.",
        "",
        f"np.dot ({how}) into the output, the epilogue over each tile right after it.",
    ]
    return KernelSource(
        name="matmul",
        source=module_text(
            doc, "matmul", ["a", "b", *(op.name for op in ops), "out"], code, consts
        ),
        input_indices=[idx[0], idx[1], *(op.index for op in ops)],  # type: ignore[list-item]
        param_shapes=[a_decl, b_decl, *(op.shape for op in ops)],
        param_dtypes=["float32", "float32", *(op.dtype for op in ops)],
        output_shapes=[y_decl],
        output_dtypes=["float32"],
        ops=["MatMul", *chain.ops],
    )
