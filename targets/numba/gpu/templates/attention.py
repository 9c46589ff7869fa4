"""lepton.Attention: ``softmax(q kᵀ · scale + mask) v`` per batch item, head and query row,
composed of the dense and norm pieces in one kernel.

One thread block per (item, query row), rows strided over the grid. The block's threads
stride over the key positions: each computes its scores (a dot product over the head dim),
scaled and masked, into a shared row of scores; a tree reduction gives the row max, the
exponentials replace the scores and a second reduction their sum; then the threads stride
over the value columns, each a dot product of the probabilities with a column of ``v``.
The mask is indexed by every batch dim separately, so a ``[B, 1, 1, S]`` padding mask is
read without being expanded. Groups with an epilogue are refused (the fusion passes make
none); so are key lengths beyond `MAX_KEYS` (the shared score row).
"""

from __future__ import annotations

import math

from lepton_compiler.errors import LoweringError
from lepton_compiler.ir import Graph, Node, TensorType

from ...epilogue import static_shape
from ..emit import Constants, Lines, block_reduce, cuda_module_text, pow2_block
from . import CudaKernelSource
from .launch import MAX_GRID_Z, unflatten

NAME = "attention"
ANCHORS = ("lepton.Attention",)

#: Longest key sequence: its float32 score row (16 KiB) must fit in shared memory.
MAX_KEYS = 4096


def plan(fused: Node) -> CudaKernelSource:
    """Write the attention kernel (see the module docstring).

    Raises:
        LoweringError: not float32, batch dims that differ between q, k and v, a mask that
            does not broadcast, too many keys, or an epilogue.
    """
    body: Graph = fused.attrs["body"]
    nodes = list(body)
    node = nodes[0]
    if len(nodes) != 1 or node.op != "lepton.Attention" or len(node.inputs) < 3:
        raise LoweringError(f"{fused.name}: attention with an epilogue has no template")
    body_in = {bv: i for i, bv in enumerate(body.inputs)}
    for v in node.inputs:
        if v is None:
            continue
        if v not in body_in or not isinstance(v.type, TensorType):
            raise LoweringError(f"{fused.name}: attention reads a value made inside the group")
        if v.type.dtype.name != "FLOAT32":
            raise LoweringError(f"{fused.name}: only float32 attention has a template")
    q, k, v = (static_shape(x) for x in node.inputs[:3])
    if len(q) < 2 or q[:-2] != k[:-2] or q[:-2] != v[:-2] or q[-1] != k[-1] or k[-2] != v[-2]:
        raise LoweringError(f"{fused.name}: q, k, v shapes {q}, {k}, {v} have no template")
    batch, s, sk, dk, dv = q[:-2], q[-2], k[-2], q[-1], v[-1]
    nb = math.prod(batch)
    if 0 in (nb, s, sk, dv, dk):
        raise LoweringError(f"{fused.name}: empty attention")
    if sk > MAX_KEYS:
        raise LoweringError(f"{fused.name}: {sk} keys exceed the shared score row ({MAX_KEYS})")
    mask = node.inputs[3] if len(node.inputs) > 3 else None
    score_shape = (*batch, s, sk)
    mask_shape = _mask_shape(fused, static_shape(mask), score_shape) if mask is not None else None
    scale = float(node.attrs["scale"])
    threads = pow2_block(sk)
    grid, block = (min(nb * s, MAX_GRID_Z),), (threads,)
    consts = Constants()
    code = Lines()
    code(f"sh = cuda.shared.array({threads}, float32)  # reduction scratch")
    code(f"p = cuda.shared.array({sk}, float32)  # the row's scores, then probabilities")
    code("tid = cuda.threadIdx.x")
    code(f"for row in range(cuda.blockIdx.x, {nb * s}, cuda.gridDim.x):").indent()
    code(f"t = row // {s}", f"i = row % {s}")
    coords = [f"b{d}" for d in range(len(batch))]
    if mask_shape is not None and coords:
        unflatten(code, "t", batch, coords)
    code(f"m = {consts(-math.inf)}")
    code(f"for j in range(tid, {sk}, {threads}):").indent()
    code(f"x = {consts(0.0)}")
    code(f"for d in range({dk}):").indent()
    code("x += q[t, i, d] * k[t, j, d]").dedent()
    score = f"x * {consts(scale)}"
    if mask_shape is not None:
        at = [c if n > 1 else "0" for c, n in zip([*coords, "i", "j"], mask_shape, strict=True)]
        score += f" + mask[{', '.join(at)}]"
    code(f"x = {score}", "p[j] = x", "m = max(m, x)").dedent()
    block_reduce(code, "sh", "m", threads, "max", "m")
    code(f"total = {consts(0.0)}")
    code(f"for j in range(tid, {sk}, {threads}):").indent()
    code("e = math.exp(p[j] - m)", "p[j] = e", "total += e").dedent()
    block_reduce(code, "sh", "total", threads, "+", "total")
    code(f"inv = {consts(1.0)} / total")
    code(f"for c in range(tid, {dv}, {threads}):").indent()
    code(f"acc = {consts(0.0)}")
    code(f"for j in range({sk}):").indent()
    code("acc += p[j] * v[t, j, c]").dedent()
    code("out[t, i, c] = acc * inv").dedent()
    code("cuda.syncthreads()  # every thread is done with p before the next row")
    doc = [
        f"Attention q{list(q)} k{list(k)} v{list(v)}, scale={scale}, mask "
        f"{list(mask_shape) if mask_shape else 'none'} -> {[*batch, s, dv]}.",
        "",
        f"One block of {threads} threads per (item, query row): scores into shared memory, "
        f"tree-reduced max and sum, then p v; launch grid={grid}, block={block}.",
    ]
    params = ["q", "k", "v", *(["mask"] if mask_shape else []), "out"]
    return CudaKernelSource(
        name="attention",
        source=cuda_module_text(doc, "attention", params, code, consts),
        grid=grid,
        block=block,
        input_indices=[body_in[x] for x in node.inputs[: 4 if mask_shape else 3]],  # type: ignore[index]
        param_shapes=[
            (nb, s, dk),
            (nb, sk, dk),
            (nb, sk, dv),
            *([mask_shape] if mask_shape else []),
        ],
        param_dtypes=["float32"] * (3 + bool(mask_shape)),
        output_shapes=[(nb, s, dv)],
        output_dtypes=["float32"],
        ops=["lepton.Attention"],
    )


def _mask_shape(fused: Node, shape: tuple[int, ...], scores: tuple[int, ...]) -> tuple[int, ...]:
    """The mask declared with the scores' rank, 1 where it is broadcast."""
    if len(shape) > len(scores):
        raise LoweringError(f"{fused.name}: the mask has a higher rank than the scores")
    full = (1,) * (len(scores) - len(shape)) + tuple(shape)
    if any(m not in (1, s) for m, s in zip(full, scores, strict=True)):
        raise LoweringError(f"{fused.name}: mask {list(shape)} does not broadcast to {scores}")
    return full
