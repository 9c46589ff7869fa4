"""Pass pipelines per opt level, as literal lists: reading this file is reading the compiler.

A pipeline is a list of stages; a stage is a list of pass names run in order, repeated until
no pass changes the graph (at most `Stage.rounds` times).

- O0 runs nothing.
- O1 cleans up (`CLEANUP`).
- O2 also fuses (`FUSION`): affine ops fold into their producers, then every anchor op and its
  element-wise epilogue become one `lepton.Fused` group, i.e. one kernel.
  With the ``int8`` option (an `Int8Config`), the layers are quantized between the pattern
  fusions and group fusion (`QUANT`); QDQ patterns of pre-quantized models are lowered to
  integer ops there too, with or without the option.
- O3 adds target-specific rewrites; until those exist it runs the O2 list.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .ir import Graph
from .pass_manager import FixedPoint, Pass, PassContext, PassManager, PassResult


@dataclass(frozen=True)
class Stage:
    """Pass names run in order, repeated while any changes the graph (up to `rounds`)."""

    name: str
    passes: tuple[str, ...]
    rounds: int = 4


CLEANUP = Stage("cleanup", (
    "qoperator_to_qdq",                  # pre-quantized QLinear*/…Integer ops -> QDQ form
    "dead_code_elimination",             # drop what nobody reads
    "identity_elimination",              # Identity, Dropout, x*1, x+0, cancelling Transposes
    "shape_folding",                     # Shape/Size/Gather(Shape) from static dims
    "constant_folding",                  # compute all-constant nodes (size-capped)
    "canonicalize",                      # one form for Sub/Div by constants, Clip, Gemm
    "common_subexpression_elimination",  # merge duplicate nodes and equal constants
    "dead_code_elimination",             # drop what the rewrites left behind
))  # fmt: skip

FUSION = Stage("fusion", (
    "fold_batchnorm",                    # BN and per-channel Mul/Add into Conv/Gemm weights
    "fuse_activations",                  # GELU, SiLU, HardSwish, HardSigmoid, Mish patterns
    "fuse_normalization",                # LayerNorm, RMSNorm, Softmax decompositions
    "fuse_skip_layernorm",               # residual Add (+ bias) + LayerNorm
    "fuse_attention",                    # QK^T -> scale -> mask -> Softmax -> V (before the next)
    "fold_matmul_transpose",             # a Transpose of a MatMul operand into the MatMul
    "fuse_matmul_bias",                  # MatMul + bias -> Gemm / lepton.MatMulAdd
    "dead_code_elimination",
), rounds=1)  # fmt: skip

QUANT = Stage("quantize", (
    "quantize_int8",                     # calibrate, QDQ on Conv/Gemm/MatMul (int8 option only)
    "quantize_before_maxpool",           # Q(MaxPool(x)) -> MaxPool(Q(x)): pool 8-bit data
    "lower_qdq",                         # DQ -> Conv/MatMul patterns -> lepton.QConv/QMatMul
    "dead_code_elimination",
), rounds=1)  # fmt: skip

GROUPS = Stage("groups", (
    "fuse_groups",                       # anchor + element-wise epilogue -> lepton.Fused
), rounds=1)  # fmt: skip

PIPELINES: dict[int, list[Stage]] = {
    0: [],
    1: [CLEANUP],
    2: [CLEANUP, FUSION, QUANT, GROUPS],
    3: [CLEANUP, FUSION, QUANT, GROUPS],
}


def build_pipeline(opt_level: int, passes: Sequence[str] | None = None) -> list[Pass]:
    """The passes for an opt level, or exactly `passes` when given (e.g. from ``--passes``)."""
    if passes is not None:
        return PassManager(passes).passes
    stages = PIPELINES[max(0, min(3, opt_level))]
    return [FixedPoint(list(s.passes), max_iterations=s.rounds, name=s.name) for s in stages]


def run_pipeline(graph: Graph, ctx: PassContext, passes: Sequence[str] | None = None) -> PassResult:
    """Run the pipeline for ``ctx.opt_level`` (or the explicit `passes`) on `graph`."""
    return PassManager(build_pipeline(ctx.opt_level, passes)).run(graph, ctx)
