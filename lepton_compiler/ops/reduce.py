"""Reductions (ReduceSum, ReduceMean, ArgMax, CumSum, ...), tagged for fusion."""

from __future__ import annotations

from .registry import override

for _op in ("ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1",
            "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare", "ArgMax",
            "ArgMin", "CumSum", "CumProd"):  # fmt: skip
    override(_op, category="reduction")
