"""x86 kernel for LayerNorm over the last (flattened) axis, with the residual add of
``lepton.SkipLayerNorm`` folded in, written directly as TIR (like `x86_attention`).

Rows run in parallel (contiguous blocks of rows per task). Per row of ``h`` elements:

1. ``s = x + skip (+ bias)`` into a row buffer (L1-resident), summing vectors of ``s``;
2. the variance as the mean of ``(s - mean)²`` (two passes over the row buffer: as accurate
   as the reference, which also subtracts the mean first);
3. ``y = (s - mean) * rstd * gamma (+ beta)``.

Vector loops run over whole vectors of the row; a scalar loop takes the tail. The leading dims
of ``x`` and ``skip`` may broadcast to the output's (index arithmetic, `bcast_offset`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tvm import tirx
from tvm.script import tirx as T

from .x86_attention import (
    Epilogue,
    bcast_offset,
    drop_params,
    epilogue_expr,
    epilogue_sizes,
    operand_flags,
    tree_reduce,
)

__all__ = ["NormShape", "layer_norm_func"]


@dataclass(frozen=True)
class NormShape:
    """Everything that determines a layer-norm kernel.

    Attributes:
        lead: the output's leading dims (rows).
        h: the normalized length (last axis, or the flattened trailing axes).
        x_lead: the leading dims of ``x`` (broadcast to ``lead``).
        skip_lead: the leading dims of ``skip``, or None without one.
        has_bias: a ``bias`` [h] added before normalizing.
        has_beta: a ``beta`` [h] added after scaling.
        epsilon: added to the variance.
        lanes: fp32 vector lanes.
        tasks: parallel tasks the rows are split into.
        rms: RMS normalization (``RMSNormalization``): no mean is subtracted, the
            statistic is the mean of squares.
    """

    lead: tuple[int, ...]
    h: int
    x_lead: tuple[int, ...]
    skip_lead: tuple[int, ...] | None
    has_bias: bool
    has_beta: bool
    epsilon: float
    lanes: int
    tasks: int
    rms: bool = False


def layer_norm_func(a: NormShape, epi: Epilogue | None = None) -> tirx.PrimFunc:
    """The kernel ``main(x[, skip], gamma[, beta][, bias][, e0, e1], out)`` on flat buffers
    (parameter order: x, skip, gamma, beta, bias, as in ``lepton.SkipLayerNorm``; absent ones
    dropped); `epi` is applied to each output element as it is stored."""
    rows = math.prod(a.lead)
    H, L = a.h, a.lanes
    NV, TAIL = H // L, H % L
    RPT = -(-rows // max(1, min(a.tasks, rows)))
    NT = -(-rows // RPT)
    has_skip = a.skip_lead is not None
    x_n = math.prod(a.x_lead) * H
    s_n = math.prod(a.skip_lead) * H if a.skip_lead is not None else 1
    o_n = rows * H
    e0_n, e1_n = epilogue_sizes(epi)
    zero = tirx.const(0.0, "float32")
    inv_h = tirx.const(1.0 / H, "float32")
    eps = tirx.const(a.epsilon, "float32")

    def xoff(r: object) -> object:
        return bcast_offset(r, a.lead, a.x_lead, H)

    def soff(r: object) -> object:
        return bcast_offset(r, a.lead, a.skip_lead or (), H)

    def value(x: object, skip: object, bias: object, r: object, j: object) -> object:
        v = x[xoff(r) + j]  # type: ignore[index]
        if a.has_bias:
            v = v + bias[j]  # type: ignore[index]
        if has_skip:
            v = v + skip[soff(r) + j]  # type: ignore[index]
        return v

    def mean(total: object) -> object:
        """The value subtracted from the row: its mean, or 0 for RMS normalization."""
        return zero if a.rms else total * inv_h  # type: ignore[operator]

    def scaled(row: object, gamma: object, beta: object, stat: object, j: object) -> object:
        v = (row[j] - stat[0]) * stat[1] * gamma[j]  # type: ignore[index]
        if a.has_beta:
            v = v + beta[j]  # type: ignore[index]
        return v

    @T.prim_func
    def main_fn(
        x: T.Buffer((x_n,), "float32"),
        skip: T.Buffer((s_n,), "float32"),
        gamma: T.Buffer((H,), "float32"),
        beta: T.Buffer((H,), "float32"),
        bias: T.Buffer((H,), "float32"),
        e0: T.Buffer((e0_n,), "float32"),
        e1: T.Buffer((e1_n,), "float32"),
        out: T.Buffer((o_n,), "float32"),
    ) -> None:
        T.func_attr({"global_symbol": "main", "tirx.noalias": True})
        for t in T.parallel(NT):
            row = T.decl_buffer((H,), "float32", scope="local")
            red = T.decl_buffer((L,), "float32", scope="local")
            stat = T.decl_buffer((2,), "float32", scope="local")
            for rr in range(RPT):
                if t * RPT + rr < rows:
                    for ll in T.vectorized(L):
                        red[ll] = zero
                    for jo in range(NV):
                        for ll in T.vectorized(L):
                            row[jo * L + ll] = value(x, skip, bias, t * RPT + rr, jo * L + ll)
                            red[ll] = red[ll] + row[jo * L + ll]
                    stat[0] = tree_reduce(red, L, tirx.Add)
                    for ll in range(TAIL):
                        row[NV * L + ll] = value(x, skip, bias, t * RPT + rr, NV * L + ll)
                        stat[0] = stat[0] + row[NV * L + ll]
                    stat[0] = mean(stat[0])
                    for ll in T.vectorized(L):
                        red[ll] = zero
                    for jo in range(NV):
                        for ll in T.vectorized(L):
                            red[ll] = red[ll] + (row[jo * L + ll] - stat[0]) * (
                                row[jo * L + ll] - stat[0]
                            )
                    stat[1] = tree_reduce(red, L, tirx.Add)
                    for ll in range(TAIL):
                        stat[1] = stat[1] + (row[NV * L + ll] - stat[0]) * (
                            row[NV * L + ll] - stat[0]
                        )
                    stat[1] = T.float32(1.0) / T.sqrt(stat[1] * inv_h + eps)
                    for jo in range(NV):
                        for ll in T.vectorized(L):
                            out[(t * RPT + rr) * H + jo * L + ll] = epilogue_expr(
                                epi,
                                scaled(row, gamma, beta, stat, jo * L + ll),
                                (t * RPT + rr) * H + jo * L + ll,
                                [e0, e1],
                            )
                    for ll in range(TAIL):
                        out[(t * RPT + rr) * H + NV * L + ll] = epilogue_expr(
                            epi,
                            scaled(row, gamma, beta, stat, NV * L + ll),
                            (t * RPT + rr) * H + NV * L + ll,
                            [e0, e1],
                        )

    return drop_params(
        main_fn, [True, has_skip, True, a.has_beta, a.has_bias, *operand_flags(epi), True]
    )
