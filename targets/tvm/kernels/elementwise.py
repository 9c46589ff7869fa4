"""Element-wise family: chains of broadcasting binary ops, Cast and the unary ops of
`te_elementwise.UNARY_OPS` with no anchor, comparisons, boolean logic and ``Where``
(`te_logic`), and the data-movement ops of `te_movement` (``Slice``, ``Concat``, ``Split``, ``Pad``,
``Expand``, ``Tile``; ``Transpose`` comes through the layout family), as one parallel,
vectorized loop per output. Tensors may be float32, int32, int64 or bool (unary math ops stay
float32)."""

from __future__ import annotations

from typing import Any

from lepton_compiler.ir import Node

from ..schedules.x86_conv import vector_lanes
from ..schedules.x86_elementwise import schedule_elementwise_group
from ..te_elementwise import UNARY_OPS
from ..te_logic import LOGIC_OPS
from ..te_movement import MOVEMENT_OPS
from ..te_ops import _BINARY_NAMES, LoweringError, lower_group
from .conv import plan_from_lowered

NAME = "elementwise"
ANCHORS = (
    "", "Cast", "CastLike", *_BINARY_NAMES, "Sum", "Mean", *sorted(set(UNARY_OPS) - {"Identity"}),
    *(op for op in MOVEMENT_OPS if op != "Transpose"), "Split", *LOGIC_OPS,
)  # fmt: skip


def plan(fused: Node, target: Any) -> Any:
    """Lower an anchor-less chain; refuses groups holding any other op."""
    if any(n.op == "Conv" for n in fused.attrs["body"]):
        raise LoweringError("a conv group belongs to the conv family")
    lanes = vector_lanes(target)
    lg = lower_group(fused)
    plan = plan_from_lowered(lg, lambda: schedule_elementwise_group(lg, lanes), ("ew", lanes))
    plan.param_dtypes = [str(t.dtype) for t in lg.params]
    plan.output_dtypes = [str(t.dtype) for t in lg.outputs]
    return plan
