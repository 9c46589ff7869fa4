"""Element-wise chains (a fusion group without an anchor, or a lone element-wise op): one
thread per output element in a grid-stride loop, every op of the chain a statement, one
store.

The output's dims are merged where all operands broadcast alike (`epilogue.merge_groups`, as
on the CPU), so ``x[1, 64, 56, 56] + b[64, 1, 1]`` is indexed as ``(1, 64, 3136)`` and a
same-shape chain is one flat index.
"""

from __future__ import annotations

import math

from lepton_compiler.errors import LoweringError
from lepton_compiler.ir import Node

from ...epilogue import OPS, Chain, merge_groups
from ..emit import Constants, Lines, cuda_module_text
from . import CudaKernelSource
from .launch import flat_launch, grid_stride, unflatten

NAME = "elementwise"
ANCHORS = ("", *(op for op in OPS if op != "Identity"))


def plan(fused: Node) -> CudaKernelSource:
    """Write the chain as a grid-stride kernel (see the module docstring).

    Raises:
        LoweringError: an op has no entry in `epilogue.OPS`, or an operand's broadcast
            cannot be indexed.
    """
    chain = Chain.plan(fused, None, groups=merge_groups)
    if not chain.out_shape or 0 in chain.out_shape:
        raise LoweringError(f"{fused.name}: scalar or empty outputs have no template")
    shape = tuple(math.prod(chain.out_shape[d] for d in g) for g in chain.groups)
    total = math.prod(shape)
    grid, block = flat_launch(total)
    consts = Constants()
    code = Lines()
    names = [f"i{d}" for d in range(len(shape))]
    grid_stride(code, total)
    unflatten(code, "t", shape, names)
    value = chain.lines(code, consts, None, names)
    code(f"out[{', '.join(names)}] = {value}")
    doc = [
        f"Element-wise chain {' -> '.join(chain.ops)} over float32{list(chain.out_shape)}.",
        "",
        f"One thread per element of the merged shape {list(shape)} (grid-stride loop); "
        f"launch grid={grid}, block={block}; operands: "
        + (", ".join(f"{op.name}{list(op.shape)}" for op in chain.operands) or "none")
        + ".",
    ]
    params = [*(op.name for op in chain.operands), "out"]
    return CudaKernelSource(
        name="elementwise",
        source=cuda_module_text(doc, "elementwise", params, code, consts),
        grid=grid,
        block=block,
        input_indices=[op.index for op in chain.operands],
        param_shapes=[op.shape for op in chain.operands],
        param_dtypes=[op.dtype for op in chain.operands],
        output_shapes=[shape],
        output_dtypes=["float32"],
        ops=chain.ops,
    )
