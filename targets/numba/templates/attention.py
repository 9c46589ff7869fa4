"""lepton.Attention: ``softmax(q kᵀ · scale + mask) v`` per batch item and head.

Three phases: per (batch, head) item one ``np.dot`` for the scores into a scratch buffer
(``k`` passed transposed, no copy); the scaled, masked softmax of every score row in place,
parallel over all rows; per item one ``np.dot`` of the probabilities with ``v`` into the
output. The products stay outside ``prange`` on purpose: OpenBLAS called from several Numba
threads at once serializes on its own locks, and with more than one BLAS thread it
oversubscribes the cores (BERT-base's attention, 12 heads of 128 x 64: 1.55 ms this way;
1.95 ms with the products inside ``prange`` on 1-thread BLAS, 18 ms on 2-thread BLAS).
The mask is indexed by every batch dim separately, so a ``[B, 1, 1, S]`` padding mask is
read without being expanded. Groups with an epilogue are refused (the fusion passes produce none).
"""

from __future__ import annotations

import math

from lepton_compiler.errors import LoweringError
from lepton_compiler.ir import Graph, Node, TensorType

from ..emit import Constants, Lines, module_text
from ..epilogue import merged_shape, static_shape
from . import KernelSource

NAME = "attention"
ANCHORS = ("lepton.Attention",)


def plan(fused: Node, tiles: int = 1) -> KernelSource:
    """Write the attention kernel (see the module docstring).

    Raises:
        LoweringError: not float32, batch dims that differ between q, k and v, a mask that
            does not broadcast, or an epilogue.
    """
    body: Graph = fused.attrs["body"]
    nodes = list(body)
    node = nodes[0]
    if len(nodes) != 1 or node.op != "lepton.Attention" or len(node.inputs) < 3:
        raise LoweringError(f"{fused.name}: attention with an epilogue has no template")
    body_in = {bv: i for i, bv in enumerate(body.inputs)}
    present = [v for v in node.inputs if v is not None]
    for v in present:
        if v not in body_in or not isinstance(v.type, TensorType):
            raise LoweringError(f"{fused.name}: attention reads a value made inside the group")
        if v.type.dtype.name != "FLOAT32":
            raise LoweringError(f"{fused.name}: only float32 attention has a template")
    q, k, v = (static_shape(x) for x in node.inputs[:3])
    if len(q) < 2 or q[:-2] != k[:-2] or q[:-2] != v[:-2] or q[-1] != k[-1] or k[-2] != v[-2]:
        raise LoweringError(f"{fused.name}: q, k, v shapes {q}, {k}, {v} have no template")
    batch, s, sk, dv = q[:-2], q[-2], k[-2], v[-1]
    nb = math.prod(batch)
    if 0 in (nb, s, sk, dv, q[-1]):
        raise LoweringError(f"{fused.name}: empty attention")
    score_shape = (*batch, s, sk)
    mask = node.inputs[3] if len(node.inputs) > 3 else None
    mask_shape = None
    if mask is not None:
        mask_shape = merged_shape(
            "mask", static_shape(mask), score_shape, [[d] for d in range(len(score_shape))]
        )
    scale = float(node.attrs["scale"])
    consts = Constants()
    code = Lines()
    code(f"for t in range({nb}):").indent()
    code("np.dot(q[t], k[t].T, scores[t])").dedent()
    code(f"for row in prange({nb * s}):").indent()
    code(f"t = row // {s}", f"i = row % {s}")
    coords = []
    for d in range(len(batch)):
        stride = math.prod(batch[d + 1 :])
        expr = "t" if stride == 1 else f"t // {stride}"
        coords.append(f"b{d}")
        code(f"b{d} = {expr}" if d == 0 else f"b{d} = {expr} % {batch[d]}")
    code(f"m = {consts(-math.inf)}")
    code(f"for j in range({sk}):").indent()
    score = f"scores[t, i, j] * {consts(scale)}"
    if mask_shape is not None:
        idx = [c if n > 1 else "0" for c, n in zip([*coords, "i", "j"], mask_shape, strict=True)]
        score += f" + mask[{', '.join(idx)}]"
    code(f"x = {score}", "scores[t, i, j] = x", "m = max(m, x)").dedent()
    code(f"total = {consts(0.0)}")
    code(f"for j in range({sk}):").indent()
    code("e = math.exp(scores[t, i, j] - m)", "scores[t, i, j] = e", "total += e").dedent()
    code(f"inv = {consts(1.0)} / total")
    code(f"for j in range({sk}):").indent()
    code("scores[t, i, j] *= inv").dedent().dedent()
    code(f"for t in range({nb}):").indent()
    code("np.dot(scores[t], v[t], out[t])")
    doc = [
        f"Attention q{list(q)} k{list(k)} v{list(v)}, scale={scale}, mask "
        f"{list(mask_shape) if mask_shape else 'none'} -> {[*batch, s, dv]}.",
        "",
        f"scores = q kᵀ (np.dot per item), masked softmax over {nb * s} rows in parallel, "
        "out = p v (np.dot per item).",
    ]
    params = ["q", "k", "v", *(["mask"] if mask_shape else []), "out", "scores"]
    return KernelSource(
        name="attention",
        source=module_text(doc, "attention", params, code, consts),
        input_indices=[body_in[x] for x in node.inputs[: 4 if mask_shape else 3]],  # type: ignore[index]
        param_shapes=[
            (nb, s, q[-1]),
            (nb, sk, k[-1]),
            (nb, sk, dv),
            *([mask_shape] if mask_shape else []),
        ],
        param_dtypes=["float32"] * (3 + bool(mask_shape)),
        output_shapes=[(nb, s, dv)],
        output_dtypes=["float32"],
        scratch=[((nb, s, sk), "float32")],
        ops=["lepton.Attention"],
    )
