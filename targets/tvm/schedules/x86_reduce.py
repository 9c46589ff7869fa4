"""x86 kernels for reductions over any set of axes, written directly as TIR (like
`x86_pool`'s global pools).

The input is a row-major tensor described by *runs*: consecutive axes merged into one, each
run either kept or reduced (`kernels.reduce.blocks`). Two forms:

- innermost run reduced (``[..., L]`` summed over ``L``): each output accumulates its
  contiguous runs of ``L`` into ``lanes`` partial results, combined by a tree at the end;
  the other reduced runs (if any) are an outer loop;
- innermost run kept (``[..., R, I]`` reduced over ``R``): each output row of ``I``
  contiguous elements accumulates whole vectors, ``CHUNK`` elements at a time (the
  accumulator stays in L1), over every combination of the reduced runs.

Either way the outputs (or output rows) are split into ``tasks`` parallel tasks (1: no
thread-pool launch). Index arithmetic for the merged runs is generated per run from static
sizes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tvm import tirx
from tvm.script import tirx as T

from .x86_attention import (
    Epilogue,
    drop_params,
    epilogue_expr,
    epilogue_sizes,
    operand_flags,
    tree_reduce,
)

__all__ = ["ArgShape", "ReduceShape", "arg_func", "reduce_func"]

#: Output elements accumulated together in the innermost-kept form.
CHUNK = 512

_F32 = "float32"


@dataclass(frozen=True)
class ReduceShape:
    """Everything that determines a reduction kernel.

    Attributes:
        op: the ONNX op (``ReduceSum``...).
        runs: (reduced, size) per run of merged axes, outermost first.
        lanes: fp32 vector lanes.
        tasks: parallel tasks.
    """

    op: str
    runs: tuple[tuple[bool, int], ...]
    lanes: int
    tasks: int


def _op(op: str) -> tuple[Callable[[Any, Any], Any], Any, Callable[[Any], Any]]:
    """(combine, initial value, map applied to each input element) of a reduction."""
    inf = tirx.const(math.inf, _F32)
    add = tirx.Add
    table: dict[str, tuple[Callable[[Any, Any], Any], Any, Callable[[Any], Any]]] = {
        "ReduceSum": (add, tirx.const(0.0, _F32), lambda v: v),
        "ReduceMean": (add, tirx.const(0.0, _F32), lambda v: v),
        "ReduceSumSquare": (add, tirx.const(0.0, _F32), lambda v: v * v),
        "ReduceL1": (add, tirx.const(0.0, _F32), tirx.abs),
        "ReduceMax": (tirx.max, -inf, lambda v: v),
        "ReduceMin": (tirx.min, inf, lambda v: v),
        "ReduceProd": (tirx.Mul, tirx.const(1.0, _F32), lambda v: v),
        "ReduceL2": (add, tirx.const(0.0, _F32), lambda v: v * v),
        "ReduceLogSum": (add, tirx.const(0.0, _F32), lambda v: v),
        "ReduceLogSumExp": (add, tirx.const(0.0, _F32), tirx.exp),
    }
    return table[op]


def _offset(flat: Any, runs: list[tuple[int, int]]) -> Any:
    """Input offset of flat index `flat` over `runs` (size, input stride), outermost
    first: the sum of each run's digit times its stride."""
    total: Any = tirx.const(0, "int32")
    inner = 1
    for size, stride in reversed(runs):
        digit = tirx.floormod(tirx.floordiv(flat, inner), size) if inner > 1 else (
            tirx.floormod(flat, size))  # fmt: skip
        total = total + digit * stride
        inner *= size
    return total


def reduce_func(a: ReduceShape, epi: Epilogue | None = None) -> tirx.PrimFunc:
    """The kernel ``main(x[, e0, e1], out)`` on flat buffers (see the module docstring);
    `epi` is applied to each result as it is stored."""
    runs = list(a.runs)
    sizes = [n for _, n in runs]
    strides = [math.prod(sizes[i + 1 :]) for i in range(len(runs))]
    kept = [(n, s) for (red, n), s in zip(runs, strides, strict=True) if not red]
    reduced = [(n, s) for (red, n), s in zip(runs, strides, strict=True) if red]
    total = math.prod(sizes)
    count = math.prod(n for n, _ in reduced)
    combine, init, fmap = _op(a.op)
    scale = tirx.const(1.0 / count, _F32) if a.op == "ReduceMean" else None

    def finish(v: Any, flat: Any, bufs: Sequence[Any]) -> Any:
        """The reduced value as stored: scaled or transformed, then the epilogue."""
        if scale is not None:
            v = v * scale
        elif a.op == "ReduceL2":
            v = tirx.sqrt(v)
        elif a.op in ("ReduceLogSum", "ReduceLogSumExp"):
            v = tirx.log(v)
        return epilogue_expr(epi, v, flat, bufs)

    sizes_e = epilogue_sizes(epi)
    if not runs or runs[-1][0]:
        func = _inner_reduced(a, kept, reduced, total, combine, init, fmap, finish, sizes_e)
    else:
        func = _inner_kept(a, kept, reduced, total, combine, init, fmap, finish, sizes_e)
    return drop_params(func, [True, *operand_flags(epi), True])


def _inner_reduced(
    a: ReduceShape,
    kept: list[tuple[int, int]],
    reduced: list[tuple[int, int]],
    total: int,
    combine: Any,
    init: Any,
    fmap: Any,
    finish: Any,
    sizes_e: Sequence[int],
) -> tirx.PrimFunc:
    L = a.lanes
    run = reduced[-1][0] if reduced else 1  # contiguous elements per step
    outer_red = reduced[:-1]
    n_outer_red = math.prod(n for n, _ in outer_red)
    n_out = math.prod(n for n, _ in kept)
    NV, TAIL = run // L, run % L
    PPT = -(-n_out // max(1, min(a.tasks, n_out)))  # outputs per task
    NT = -(-n_out // PPT)

    def base(o: Any, rr: Any) -> Any:
        return _offset(o, kept) + _offset(rr, outer_red)

    @T.prim_func
    def main_fn(
        x: T.Buffer((total,), "float32"),
        e0: T.Buffer((sizes_e[0],), "float32"),
        e1: T.Buffer((sizes_e[1],), "float32"),
        out: T.Buffer((n_out,), "float32"),
    ) -> None:
        T.func_attr({"global_symbol": "main", "tirx.noalias": True})
        for t in T.parallel(NT):
            red = T.decl_buffer((L,), "float32", scope="local")
            acc = T.decl_buffer((1,), "float32", scope="local")
            for pp in range(PPT):
                if t * PPT + pp < n_out:
                    for ll in T.vectorized(L):
                        red[ll] = init
                    acc[0] = init
                    for rr in range(n_outer_red):
                        for jo in range(NV):
                            for ll in T.vectorized(L):
                                red[ll] = combine(
                                    red[ll], fmap(x[base(t * PPT + pp, rr) + jo * L + ll])
                                )
                        for ll in range(TAIL):
                            acc[0] = combine(acc[0], fmap(x[base(t * PPT + pp, rr) + NV * L + ll]))
                    out[t * PPT + pp] = finish(
                        combine(acc[0], tree_reduce(red, L, combine)), t * PPT + pp, [e0, e1]
                    )

    return main_fn


def _inner_kept(
    a: ReduceShape,
    kept: list[tuple[int, int]],
    reduced: list[tuple[int, int]],
    total: int,
    combine: Any,
    init: Any,
    fmap: Any,
    finish: Any,
    sizes_e: Sequence[int],
) -> tirx.PrimFunc:
    L = a.lanes
    inner = kept[-1][0]
    outer_kept = kept[:-1]
    n_rows = math.prod(n for n, _ in outer_kept)
    n_red = math.prod(n for n, _ in reduced)
    CH = inner if inner <= CHUNK else CHUNK  # CHUNK is whole vectors
    NCH = -(-inner // CH)  # chunks per row
    LAST = inner - (NCH - 1) * CH  # width of a row's last chunk
    units = n_rows * NCH
    PPT = -(-units // max(1, min(a.tasks, units)))
    NT = -(-units // PPT)
    n_out = n_rows * inner
    CHP = -(-CH // L) * L  # the accumulator in whole vectors

    def src(u: Any, rr: Any) -> Any:
        """Input offset of the first element of chunk `u` at reduced index `rr`."""
        return _offset(u // NCH, outer_kept) + _offset(rr, reduced) + u % NCH * CH

    def load(x: Any, u: Any, rr: Any, j: Any) -> Any:
        """The mapped input element `j` of chunk `u` at reduced index `rr`."""
        return fmap(x[src(u, rr) + j])

    def dst(u: Any) -> Any:
        return u // NCH * inner + u % NCH * CH

    @T.prim_func
    def main_fn(
        x: T.Buffer((total,), "float32"),
        e0: T.Buffer((sizes_e[0],), "float32"),
        e1: T.Buffer((sizes_e[1],), "float32"),
        out: T.Buffer((n_out,), "float32"),
    ) -> None:
        T.func_attr({"global_symbol": "main", "tirx.noalias": True})
        for t in T.parallel(NT):
            acc = T.decl_buffer((CHP,), "float32", scope="local")
            for pp in range(PPT):
                if t * PPT + pp < units:
                    for j in T.vectorized(CHP):
                        acc[j] = init
                    for rr in range(n_red):
                        if (t * PPT + pp) % NCH < NCH - 1:
                            for jo in range(CH // L):
                                for ll in T.vectorized(L):
                                    acc[jo * L + ll] = combine(
                                        acc[jo * L + ll], load(x, t * PPT + pp, rr, jo * L + ll)
                                    )
                        else:
                            for jo in range(LAST // L):
                                for ll in T.vectorized(L):
                                    acc[jo * L + ll] = combine(
                                        acc[jo * L + ll], load(x, t * PPT + pp, rr, jo * L + ll)
                                    )
                            for j in range(LAST // L * L, LAST):
                                acc[j] = combine(acc[j], load(x, t * PPT + pp, rr, j))
                    if (t * PPT + pp) % NCH < NCH - 1:
                        for j in T.vectorized(CH):
                            out[dst(t * PPT + pp) + j] = finish(
                                acc[j], dst(t * PPT + pp) + j, [e0, e1]
                            )
                    else:
                        for jo in range(LAST // L):
                            for ll in T.vectorized(L):
                                out[dst(t * PPT + pp) + jo * L + ll] = finish(
                                    acc[jo * L + ll], dst(t * PPT + pp) + jo * L + ll, [e0, e1]
                                )
                        for j in range(LAST % L):
                            out[dst(t * PPT + pp) + LAST // L * L + j] = finish(
                                acc[LAST // L * L + j], dst(t * PPT + pp) + LAST // L * L + j,
                                [e0, e1],
                            )

    return main_fn


@dataclass(frozen=True)
class ArgShape:
    """An ``ArgMax``/``ArgMin`` kernel over axis ``n`` of a flat ``[outer, n, inner]``
    tensor.

    Attributes:
        outer, n, inner: the flat view.
        is_max: ArgMax (else ArgMin).
        last: ``select_last_index`` (ties go to the last index, else the first).
        lanes: fp32 vector lanes.
        tasks: parallel tasks.
    """

    outer: int
    n: int
    inner: int
    is_max: bool
    last: bool
    lanes: int
    tasks: int


def arg_func(a: ArgShape) -> tirx.PrimFunc:
    """The kernel ``main(x, out)`` (``out`` int64 ``[outer, inner]``): a running best value
    and index per output element, ``W`` contiguous inner elements at a time (the last chunk
    overlaps the previous one, recomputed)."""
    outer, n, inner = a.outer, a.n, a.inner
    W = min(inner, 16 * a.lanes)
    NCH = -(-inner // W)
    units = outer * NCH
    loop = T.parallel if a.tasks > 1 else T.serial

    def at(u: Any, k: Any, ll: Any) -> Any:
        return (u // NCH) * (n * inner) + k * inner + tirx.min((u % NCH) * W, inner - W) + ll

    def oat(u: Any, ll: Any) -> Any:
        return (u // NCH) * inner + tirx.min((u % NCH) * W, inner - W) + ll

    def better(v: Any, best: Any) -> Any:
        if a.is_max:
            return v >= best if a.last else v > best
        return v <= best if a.last else v < best

    @T.prim_func
    def main_fn(
        x: T.Buffer((outer * n * inner,), "float32"), out: T.Buffer((outer * inner,), "int64")
    ) -> None:
        T.func_attr({"global_symbol": "main", "tirx.noalias": True})
        for u in loop(units):
            best = T.decl_buffer((W,), "float32", scope="local")
            idx = T.decl_buffer((W,), "int64", scope="local")
            for ll in T.vectorized(W):
                best[ll] = x[at(u, 0, ll)]
                idx[ll] = T.int64(0)
            for k in range(1, n):
                for ll in T.vectorized(W):
                    idx[ll] = T.Select(better(x[at(u, k, ll)], best[ll]), T.int64(k), idx[ll])
                    best[ll] = T.Select(better(x[at(u, k, ll)], best[ll]), x[at(u, k, ll)],
                                        best[ll])  # fmt: skip
            for ll in T.vectorized(W):
                out[oat(u, ll)] = idx[ll]

    return main_fn
