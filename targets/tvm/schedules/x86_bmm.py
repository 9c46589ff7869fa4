"""x86 kernel for a batched product of two activations, ``[..., M, K] @ [..., K, N]`` with
broadcasting leading dims (attention's ``q @ k^T`` and ``p @ v`` when they are not fused into
``lepton.Attention``), written directly as TIR (like `x86_attention`'s ``p @ v`` stage).

B is not a constant, so nothing is packed: a register tile is ``RB`` rows of A times ``CW``
contiguous columns of B (up to 4 vectors); each reduction step broadcasts ``RB`` values of A
and does ``CW / lanes`` contiguous loads of a row of B. Tiles never leave the tensors: the
last column chunk is shifted left to end at ``N`` (overlapping the previous chunk, whose
columns it recomputes, when ``N > CW``), and rows past ``M`` load a clamped row and are not
stored. Tasks (parallel) are (batch, chunk of row blocks); an element-wise epilogue is applied
as each element is stored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from tvm import tirx
from tvm.script import tirx as T

from .x86_attention import (
    Epilogue,
    bcast_offset,
    drop_params,
    epilogue_expr,
    epilogue_sizes,
    operand_flags,
)

__all__ = ["BmmShape", "bmm_func"]


@dataclass(frozen=True)
class BmmShape:
    """Everything that determines a batched-product kernel.

    Attributes:
        lead: the output's leading (batch) dims.
        a_lead, b_lead: A's and B's leading dims (broadcast to `lead`, right-aligned).
        m, k, n: the product's sizes.
        lanes: fp32 vector lanes.
        tasks: the number of parallel tasks to aim for.
    """

    lead: tuple[int, ...]
    a_lead: tuple[int, ...]
    b_lead: tuple[int, ...]
    m: int
    k: int
    n: int
    lanes: int
    tasks: int

    @property
    def cw(self) -> int:
        """Columns per tile: whole vectors, at most 4 (all of N when N is below a vector);
        the last chunk overlaps the previous one when N is not a multiple."""
        L = self.lanes
        if self.n <= L:
            return self.n
        return min(self.n // L * L, 4 * L)

    @property
    def rb(self) -> int:
        """Rows per tile: 24 accumulators at most (8 with one vector)."""
        vecs = -(-self.cw // self.lanes)
        return max(1, min(self.m, 24 // vecs, 8))


def bmm_func(a: BmmShape, epi: Epilogue | None = None) -> tirx.PrimFunc:
    """The kernel ``main(x, y[, e0, e1], out)`` on flat buffers (see the module
    docstring)."""
    nb = math.prod(a.lead)
    M, K, N = a.m, a.k, a.n
    CW, RB = a.cw, a.rb
    NCC = -(-N // CW)  # column chunks
    NRB = -(-M // RB)  # row blocks per batch
    per_batch = max(1, min(NRB, -(-a.tasks // max(1, nb))))
    BPT = -(-NRB // per_batch)  # row blocks per task
    NT = -(-NRB // BPT)  # tasks per batch
    x_n = math.prod(a.a_lead) * M * K
    y_n = math.prod(a.b_lead) * K * N
    o_n = nb * M * N
    e0_n, e1_n = epilogue_sizes(epi)
    zero = tirx.const(0.0, "float32")

    def xoff(b: Any) -> Any:
        return bcast_offset(b, a.lead, a.a_lead, M * K)

    def yoff(b: Any) -> Any:
        return bcast_offset(b, a.lead, a.b_lead, K * N)

    def row(t: Any, ib: Any, r: Any) -> Any:
        return (t % NT) * (BPT * RB) + ib * RB + r

    def col(cc: Any, c: Any) -> Any:
        return tirx.min(cc * CW, N - CW) + c

    @T.prim_func
    def main_fn(
        x: T.Buffer((x_n,), "float32"),
        y: T.Buffer((y_n,), "float32"),
        e0: T.Buffer((e0_n,), "float32"),
        e1: T.Buffer((e1_n,), "float32"),
        out: T.Buffer((o_n,), "float32"),
    ) -> None:
        T.func_attr({"global_symbol": "main", "tirx.noalias": True})
        for t in T.parallel(nb * NT):
            acc = T.decl_buffer((RB * CW,), "float32", scope="local")
            for ib in range(BPT):
                if row(t, ib, 0) < M:
                    for cc in range(NCC):
                        for r in T.unroll(RB):
                            for c in T.vectorized(CW):
                                acc[r * CW + c] = zero
                        for kk in range(K):
                            for r in T.unroll(RB):
                                for c in T.vectorized(CW):
                                    acc[r * CW + c] = acc[r * CW + c] + x[
                                        xoff(t // NT) + T.min(row(t, ib, r), M - 1) * K + kk
                                    ] * y[yoff(t // NT) + kk * N + col(cc, c)]
                        for r in range(RB):
                            if row(t, ib, r) < M:
                                for c in T.vectorized(CW):
                                    out[
                                        (t // NT) * (M * N) + row(t, ib, r) * N + col(cc, c)
                                    ] = epilogue_expr(
                                        epi,
                                        acc[r * CW + c],
                                        (t // NT) * (M * N) + row(t, ib, r) * N + col(cc, c),
                                        [e0, e1],
                                    )

    return drop_params(main_fn, [True, True, *operand_flags(epi), True])
