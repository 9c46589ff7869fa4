"""Element-wise chains (a fusion group without an anchor, or a lone element-wise op): one loop
nest over the output, every op of the chain a statement in the innermost loop, one store.

The output's dims are merged where all operands broadcast alike (`epilogue.merge_groups`),
so ``x[1, 64, 56, 56] + b[64, 1, 1]`` is a nest over ``(1, 64, 3136)`` and a same-shape
chain is one flat loop, split into parallel chunks.
"""

from __future__ import annotations

from lepton_compiler.errors import LoweringError
from lepton_compiler.ir import Node

from ..emit import Constants, Lines, module_text
from ..epilogue import OPS, Chain
from . import KernelSource
from .loops import parallel_nest

NAME = "elementwise"
ANCHORS = ("", *(op for op in OPS if op != "Identity"))


def plan(fused: Node, tiles: int = 1) -> KernelSource:
    """Write the chain as one loop nest (see the module docstring).

    Raises:
        LoweringError: an op has no entry in `epilogue.OPS`, or an operand's broadcast
            cannot be indexed.
    """
    chain = Chain.plan(
        fused, None, groups=lambda out, shapes: _groups(out, shapes), int_output=True
    )
    if not chain.out_shape or 0 in chain.out_shape:
        raise LoweringError(f"{fused.name}: scalar or empty outputs have no template")
    out_shape = tuple(_prod(chain.out_shape, g) for g in chain.groups)
    consts = Constants()
    code = Lines()
    names = [f"i{d}" for d in range(len(out_shape))]
    parallel_nest(code, out_shape, names)
    value = chain.lines(code, consts, None, names)
    code(f"out[{', '.join(names)}] = {value}")
    params = [op.name for op in chain.operands]
    doc = [
        f"Element-wise chain {' -> '.join(chain.ops)} over "
        f"{chain.out_dtype}{list(chain.out_shape)}.",
        "",
        f"Loop nest over the merged shape {list(out_shape)}; operands: "
        + (", ".join(f"{op.name}{list(op.shape)}" for op in chain.operands) or "none")
        + ".",
    ]
    source = module_text(doc, "elementwise", [*params, "out"], code, consts)
    return KernelSource(
        name="elementwise",
        source=source,
        input_indices=[op.index for op in chain.operands],
        param_shapes=[op.shape for op in chain.operands],
        param_dtypes=[op.dtype for op in chain.operands],
        output_shapes=[out_shape],
        output_dtypes=[chain.out_dtype],
        ops=chain.ops,
    )


def _prod(shape: tuple[int, ...], dims: list[int]) -> int:
    p = 1
    for d in dims:
        p *= shape[d]
    return p


def _groups(out: tuple[int, ...], shapes: list[tuple[int, ...]]) -> list[list[int]]:
    from ..epilogue import merge_groups

    return merge_groups(out, shapes)
