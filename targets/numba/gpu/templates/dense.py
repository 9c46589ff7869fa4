"""Matrix products, Gemm and MatMul, as shared-memory tiled kernels (`tiles`) with ``alpha``,
``beta * C`` and the group's element-wise epilogue fused into the store.

Gemm reads its operands transposed in place (``a[k, i]`` for ``transA``). MatMul with a 2-D
right operand treats every leading dim of the left one as rows (one product, fewer partial
tiles); with batched operands of the same batch shape, or a left operand without batch dims,
one product per batch item along grid z. Other batch broadcasts are refused.
"""

from __future__ import annotations

import math

from lepton_compiler.errors import LoweringError
from lepton_compiler.ir import Graph, Node, TensorType

from ...epilogue import Chain, Operand, static_shape
from ..emit import Constants, Lines, cuda_module_text
from . import CudaKernelSource
from .launch import TILE
from .tiles import tiled_launch, write_tiled

NAME = "dense"
ANCHORS = ("Gemm", "MatMul")


def plan(fused: Node) -> CudaKernelSource:
    """Write the product and its epilogue (see the module docstring).

    Raises:
        LoweringError: not float32, 1-D operands, a batch broadcast the template does not
            take, or an epilogue the chain table cannot write.
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
    a_s, b_s = static_shape(node.inputs[0]), static_shape(node.inputs[1])
    y_s = static_shape(node.outputs[0])
    if len(a_s) < 2 or len(b_s) < 2:
        raise LoweringError(f"{fused.name}: products with 1-D operands have no template")
    if 0 in (*a_s, *b_s, *y_s):
        raise LoweringError(f"{fused.name}: empty product")
    anchor_in = [i for i in idx if i is not None]
    if node.op == "Gemm":
        return _gemm(fused, node, idx, a_s, b_s, y_s, anchor_in)
    return _matmul(fused, idx, a_s, b_s, y_s, anchor_in)


def _gemm(
    fused: Node,
    node: Node,
    idx: list[int | None],
    a_s: tuple[int, ...],
    b_s: tuple[int, ...],
    y_s: tuple[int, ...],
    anchor_in: list[int],
) -> CudaKernelSource:
    if len(a_s) != 2 or len(b_s) != 2:
        raise LoweringError(f"{fused.name}: Gemm needs 2-D operands")
    ta, tb = bool(node.attrs.get("transA", 0)), bool(node.attrs.get("transB", 0))
    alpha, beta = float(node.attrs.get("alpha", 1.0)), float(node.attrs.get("beta", 1.0))
    m, n = y_s
    k = a_s[0] if ta else a_s[1]
    c_op = None
    if len(node.inputs) > 2 and node.inputs[2] is not None and beta != 0.0:
        c_op = _bias_operand(fused, idx[2], static_shape(node.inputs[2]), y_s)  # type: ignore[arg-type]
    chain = Chain.plan(fused, ("Gemm",), skip_inputs=anchor_in)
    consts = Constants()
    code = Lines()

    def store(code: Lines) -> None:
        acc = "acc" if alpha == 1.0 else f"acc * {consts(alpha)}"
        if c_op is not None:
            cl = c_op.load(["i", "j"])
            acc += f" + {cl}" if beta == 1.0 else f" + {consts(beta)} * {cl}"
        if acc != "acc":
            code(f"acc = {acc}")
        code(f"out[i, j] = {chain.lines(code, consts, 'acc', ['i', 'j'])}")

    write_tiled(
        code,
        consts,
        m,
        n,
        k,
        1,
        lambda c: None,
        lambda c: "a[ka, i]" if ta else "a[i, ka]",
        lambda c: "b[j, kb]" if tb else "b[kb, j]",
        store,
    )
    grid, block = tiled_launch(m, n, 1)
    params = ["a", "b", *(["c"] if c_op else []), *(op.name for op in chain.operands), "out"]
    doc = [
        f"Gemm {list(a_s)}{'ᵀ' if ta else ''} @ {list(b_s)}{'ᵀ' if tb else ''} -> {list(y_s)}, "
        f"alpha={alpha}, beta={beta}{', + C' if c_op else ''}; epilogue: "
        f"{' -> '.join(chain.ops) or 'none'}.",
        "",
        f"Shared-memory tiled product, {TILE}x{TILE} tiles; launch grid={grid}, block={block}.",
    ]
    return CudaKernelSource(
        name="gemm",
        source=cuda_module_text(doc, "gemm", params, code, consts),
        grid=grid,
        block=block,
        input_indices=[
            idx[0],  # type: ignore[list-item]
            idx[1],  # type: ignore[list-item]
            *([c_op.index] if c_op else []),
            *(op.index for op in chain.operands),
        ],
        param_shapes=[
            a_s,
            b_s,
            *([c_op.shape] if c_op else []),
            *(o.shape for o in chain.operands),
        ],
        param_dtypes=["float32"] * (2 + bool(c_op)) + [o.dtype for o in chain.operands],
        output_shapes=[y_s],
        output_dtypes=["float32"],
        ops=["Gemm", *chain.ops],
    )


def _bias_operand(fused: Node, index: int, shape: tuple[int, ...], y_s: tuple[int, ...]) -> Operand:
    """Gemm's C, declared ``(M or 1, N or 1)`` as it broadcasts onto the output."""
    if len(shape) > 2:
        raise LoweringError(f"{fused.name}: Gemm's C has rank {len(shape)}")
    full = (1,) * (2 - len(shape)) + tuple(shape)
    if any(s not in (1, y) for s, y in zip(full, y_s, strict=True)):
        raise LoweringError(f"{fused.name}: Gemm's C {list(shape)} does not broadcast")
    return Operand(index, "c", full, "float32")


def _matmul(
    fused: Node,
    idx: list[int | None],
    a_s: tuple[int, ...],
    b_s: tuple[int, ...],
    y_s: tuple[int, ...],
    anchor_in: list[int],
) -> CudaKernelSource:
    k, n, r = b_s[-2], b_s[-1], len(y_s)
    batch_a, batch_b = a_s[:-2], b_s[:-2]
    if len(b_s) == 2:  # every leading dim of a is a row
        m, nb = math.prod(a_s[:-1]), 1
        groups = [list(range(r - 1)), [r - 1]]
        decl = [(m, k), (k, n), (m, n)]
        a_load, b_load, coords = "a[i, ka]", "b[kb, j]", ["i", "j"]
        how = f"one product of {m} rows"
    elif tuple(batch_a) == tuple(batch_b) or math.prod(batch_a) == 1:
        m, nb = a_s[-2], math.prod(batch_b)
        groups = [list(range(r - 2)), [r - 2], [r - 1]]
        same = tuple(batch_a) == tuple(batch_b)
        decl = [(nb, m, k) if same else (m, k), (nb, k, n), (nb, m, n)]
        a_load, b_load, coords = (
            "a[q, i, ka]" if same else "a[i, ka]",
            "b[q, kb, j]",
            ["q", "i", "j"],
        )
        how = f"{nb} products along grid z"
    else:
        raise LoweringError(f"{fused.name}: MatMul batch broadcast {a_s} @ {b_s} has no template")
    chain = Chain.plan(fused, ("MatMul",), groups=lambda o, s: groups, skip_inputs=anchor_in)
    consts = Constants()
    code = Lines()
    at = ", ".join(coords)

    def store(code: Lines) -> None:
        code(f"out[{at}] = {chain.lines(code, consts, 'acc', coords)}")

    write_tiled(
        code, consts, m, n, k, nb, lambda c: None, lambda c: a_load, lambda c: b_load, store
    )
    grid, block = tiled_launch(m, n, nb)
    doc = [
        f"MatMul {list(a_s)} @ {list(b_s)} -> {list(y_s)}; epilogue: "
        f"{' -> '.join(chain.ops) or 'none'}.",
        "",
        f"Shared-memory tiled product ({how}), {TILE}x{TILE} tiles; launch grid={grid}, "
        f"block={block}.",
    ]
    ops = chain.operands
    return CudaKernelSource(
        name="matmul",
        source=cuda_module_text(
            doc, "matmul", ["a", "b", *(o.name for o in ops), "out"], code, consts
        ),
        grid=grid,
        block=block,
        input_indices=[idx[0], idx[1], *(o.index for o in ops)],  # type: ignore[list-item]
        param_shapes=[decl[0], decl[1], *(o.shape for o in ops)],
        param_dtypes=["float32", "float32", *(o.dtype for o in ops)],
        output_shapes=[decl[2]],
        output_dtypes=["float32"],
        ops=["MatMul", *chain.ops],
    )
