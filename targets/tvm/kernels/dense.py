"""Dense family: ``Gemm`` and ``MatMul`` (constant-shaped 2-D weights) with the element-wise
epilogue fused into the output tile.

What it takes:

- ``Gemm`` in every attribute form: ``transA``/``transB``, ``alpha``, ``beta``, and C
  broadcast from ``[N]``, ``[1, N]``, ``[M, 1]``, ``[M, N]`` or a scalar;
- ``MatMul`` with A of rank >= 2 and a 2-D B: A's leading dims are flattened into M (the
  kernel declares A as ``[M, K]`` and the output as ``[M, N]``: the same memory);
- an epilogue of ops from `te_elementwise` (Add/Sub/Mul/Div/Max/Min/PRelu/Pow with
  broadcasting operands, every unary op of its table: Relu, Clip, ``lepton.Gelu``, Tanh,
  Sigmoid, Erf...), each producing the product's shape. Scalar constant operands are baked
  in; other operands are kernel parameters (full-shaped ones declared ``[M, N']`` so they are
  read without index arithmetic).

B is pre-packed (`KernelPlan.packs`) as ``Bp[Npad / nb, K, nb]`` (``nb`` = the tile's
columns, N zero-padded to whole tiles), with ``transB`` and ``alpha`` folded in. A constant B
is packed once at compile time; a non-constant 2-D B is accepted but packed by NumPy on every
call. A batched B (rank >= 3) goes to `bmm` (a product per batch). Refused (`LoweringError`):
1-D A, non-float32 tensors, dynamic shapes, a prologue before the anchor, an epilogue op
outside the table or one that changes the shape.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from tvm import te, tirx

from lepton_compiler.ir import DType, Graph, Node, Value

from ..schedules.x86_conv import vector_lanes
from ..schedules.x86_dense import (
    A_PAD,
    DENSE,
    DenseConfig,
    choose_dense_config,
    schedule_dense,
)
from ..te_elementwise import binary_builder, unary_builder
from ..te_ops import LoweringError
from . import KernelPlan

NAME = "dense"
ANCHORS = ("Gemm", "MatMul")

Expr = Any  # tirx.PrimExpr
#: An expression of the output domain: ``(m, n) -> PrimExpr``.
DomainFn = Callable[[Expr, Expr], Expr]


@dataclass(frozen=True)
class DenseWorkload:
    """Everything that determines the product part of a dense kernel.

    Attributes:
        m: rows of the flattened product (A's leading dims times its row count).
        n: output columns.
        k: reduction length.
        trans_a: A is stored ``[K, M]`` (Gemm ``transA``).
        out_shape: the product's logical shape (``[M, N]`` for Gemm, ``[..., M0, N]`` for
            MatMul).
    """

    m: int
    n: int
    k: int
    trans_a: bool
    out_shape: tuple[int, ...]

    @property
    def flops(self) -> int:
        """Multiply-adds times two."""
        return 2 * self.m * self.n * self.k


def plan(fused: Node, target: Any) -> KernelPlan:
    """Lower a dense group and pick its tile (see the module docstring)."""
    from . import bmm

    if bmm.batched(fused):  # a product per batch of two activations
        return bmm.plan(fused, target)
    lanes = vector_lanes(target)
    try:
        threads = int(target.attrs["num-cores"])
    except (AttributeError, KeyError, TypeError, ValueError):
        threads = 2
    return plan_dense(fused, lanes, threads)


def plan_dense(
    fused: Node, lanes: int, threads: int = 2, cfg: DenseConfig | None = None
) -> KernelPlan:
    """`plan` with the vector width given (and optionally the tile, for experiments)."""
    body: Graph = fused.attrs["body"]
    anchor = _anchor(body)
    wl = dense_workload(anchor)
    if cfg is None:
        cfg = choose_dense_config(wl.m, wl.n, wl.k, lanes, threads)
    lowered = lower_dense(fused, wl, cfg)
    vector_store = wl.n % lanes == 0
    func_args = [*lowered.params, *lowered.outputs]
    names = [t.op.name for t in lowered.outputs]

    def make() -> Any:
        return schedule_dense(
            te.create_prim_func(func_args), cfg, names, vector_store, cfg.padded_m(wl.m) != wl.m
        )

    return KernelPlan(
        key=("dense", wl, cfg, lowered.key),
        make=make,
        input_indices=lowered.input_indices,
        param_shapes=[tuple(int(d) for d in t.shape) for t in lowered.params],
        output_shapes=lowered.output_shapes,
        kernel_output_shapes=[(wl.m, wl.n)] * len(lowered.outputs),
        packs=lowered.packs,
        config=cfg,
    )


# -- workload -----------------------------------------------------------------------------------


def _anchor(body: Graph) -> Node:
    nodes = list(body)
    if not nodes or nodes[0].op not in ANCHORS:
        raise LoweringError("a dense group must start with its Gemm/MatMul (no prologue)")
    if any(n.op in ANCHORS for n in nodes[1:]):
        raise LoweringError("a dense group with two products is not supported")
    return nodes[0]


def _shape(v: Value | None) -> tuple[int, ...]:
    if v is None:
        raise LoweringError("missing input")
    shape = v.shape
    if shape is None or not all(isinstance(d, (int, np.integer)) for d in shape):
        raise LoweringError(f"%{v.name}: needs a static shape, has {shape}")
    if v.dtype is not DType.FLOAT32:
        raise LoweringError(f"%{v.name}: only float32 is supported, got {v.dtype}")
    return tuple(int(d) for d in shape)


def dense_workload(node: Node) -> DenseWorkload:
    """Read a Gemm/MatMul node's shapes into a `DenseWorkload`.

    Raises:
        LoweringError: shapes unknown or not float32, A of rank < 2 (MatMul) or != 2 (Gemm),
            B not 2-D, or inner dimensions that disagree.
    """
    a_shape, b_shape = _shape(node.inputs[0]), _shape(node.inputs[1])
    if len(b_shape) != 2:
        raise LoweringError(f"{node!r}: only a 2-D B is supported, B is {b_shape}")
    if node.op == "Gemm":
        if len(a_shape) != 2:
            raise LoweringError(f"{node!r}: Gemm needs a 2-D A, A is {a_shape}")
        trans_a, trans_b = bool(node.attr("transA", 0)), bool(node.attr("transB", 0))
        m, k = (a_shape[1], a_shape[0]) if trans_a else a_shape
        kb, n = (b_shape[1], b_shape[0]) if trans_b else b_shape
        out_shape: tuple[int, ...] = (m, n)
    else:
        if len(a_shape) < 2:
            raise LoweringError(f"{node!r}: MatMul with a {len(a_shape)}-D A is not supported")
        trans_a = False
        m, k = math.prod(a_shape[:-1]), a_shape[-1]
        kb, n = b_shape
        out_shape = (*a_shape[:-1], n)
    if k != kb:
        raise LoweringError(f"{node!r}: inner dimensions differ ({k} vs {kb})")
    if min(m, n, k) < 1:
        raise LoweringError(f"{node!r}: empty product")
    return DenseWorkload(m=m, n=n, k=k, trans_a=trans_a, out_shape=out_shape)


# -- lowering -----------------------------------------------------------------------------------


@dataclass
class LoweredDense:
    """A dense group as TE (see `lower_dense`)."""

    params: list[te.Tensor]
    outputs: list[te.Tensor]
    output_shapes: list[tuple[int, ...]]
    input_indices: list[int]
    packs: dict[int, Callable[[np.ndarray], np.ndarray]]
    key: tuple[Any, ...]


def pack_weights(b: np.ndarray, n: int, k: int, nb: int, trans_b: bool, alpha: float) -> np.ndarray:
    """B (``[K, N]``, or ``[N, K]`` with ``trans_b``) as ``[Npad / nb, K, nb]``, times alpha,
    N zero-padded to a multiple of ``nb``."""
    w = np.asarray(b, dtype=np.float32).reshape((n, k) if trans_b else (k, n))
    if trans_b:
        w = w.T
    if alpha != 1.0:
        w = w * np.float32(alpha)
    npad = -(-n // nb) * nb
    if npad != n:
        w = np.concatenate([w, np.zeros((k, npad - n), np.float32)], axis=1)
    return np.ascontiguousarray(w.reshape(k, npad // nb, nb).transpose(1, 0, 2))


def lower_dense(fused: Node, wl: DenseWorkload, cfg: DenseConfig) -> LoweredDense:
    """Lower the group to TE: ``dense[M, Npad]`` then one ``[M, N]`` output stage per group
    output, each holding its whole epilogue as one expression.

    Kernel parameters are the body inputs the computation reads, in body-input order; B is
    declared packed (`pack_weights`), A as ``[M, K]`` (``[K, M]`` with transA), and an
    epilogue operand whose leading dims match the output's as ``[M, N']``.
    """
    body: Graph = fused.attrs["body"]
    outer = {b: o for b, o in zip(body.inputs, fused.inputs, strict=True) if o is not None}
    position = {b: i for i, b in enumerate(body.inputs)}
    nodes = list(body)
    anchor = nodes[0]
    out_shape = wl.out_shape
    lead = out_shape[:-1]  # the output's dims folded into M
    nb = cfg.nb
    npad = -(-wl.n // nb) * nb
    placeholders: dict[Value, te.Tensor] = {}
    packs_by_value: dict[Value, Callable[[np.ndarray], np.ndarray]] = {}
    key: list[Any] = []

    def const(v: Value | None) -> np.ndarray | None:
        if v is None:
            return None
        src = outer.get(v, v)
        return None if src.const is None else np.asarray(src.const)

    def body_input(v: Value | None) -> Value:
        if v is None or v not in position:
            raise LoweringError("a dense group operand must be a group input")
        return v

    def placeholder(v: Value, shape: tuple[int, ...]) -> te.Tensor:
        if v in placeholders:
            if tuple(int(d) for d in placeholders[v].shape) != shape:
                raise LoweringError(f"%{v.name} is read in two layouts")
            return placeholders[v]
        t = te.placeholder(shape, "float32", name=f"arg{position[v]}")
        placeholders[v] = t
        return t

    # The product.
    a_v, b_v = body_input(anchor.inputs[0]), body_input(anchor.inputs[1])
    if a_v is b_v:
        raise LoweringError("A and B are the same tensor")
    trans_b = anchor.op == "Gemm" and bool(anchor.attr("transB", 0))
    alpha = float(anchor.attr("alpha", 1.0)) if anchor.op == "Gemm" else 1.0
    a = placeholder(a_v, (wl.k, wl.m) if wl.trans_a else (wl.m, wl.k))
    bp = placeholder(b_v, (npad // nb, wl.k, nb))
    packs_by_value[b_v] = lambda arr: pack_weights(arr, wl.n, wl.k, nb, trans_b, alpha)
    rk = te.reduce_axis((0, wl.k), name="rk")
    mpad = cfg.padded_m(wl.m)
    if mpad != wl.m:
        # No good tile divides M: copy A into zero-padded rows (an M x K pass, next to
        # M x N x K FMAs) so the register tile never needs a predicate.
        zero = tirx.const(0.0, "float32")
        if wl.trans_a:
            src = a
            a = te.compute(
                (wl.k, mpad),
                lambda kk, i: tirx.if_then_else(i < wl.m, src[kk, i], zero),
                name=A_PAD,
            )
        else:
            src = a
            a = te.compute(
                (mpad, wl.k),
                lambda i, kk: tirx.if_then_else(i < wl.m, src[i, kk], zero),
                name=A_PAD,
            )
    if wl.trans_a:
        dense = te.compute(
            (mpad, npad),
            lambda i, j: te.sum(a[rk, i] * bp[j // nb, rk, j % nb], axis=rk),
            name=DENSE,
        )
    else:
        dense = te.compute(
            (mpad, npad),
            lambda i, j: te.sum(a[i, rk] * bp[j // nb, rk, j % nb], axis=rk),
            name=DENSE,
        )
    key.append((anchor.op, trans_b, alpha))

    def operand(v: Value | None) -> DomainFn:
        """A broadcasting operand of the epilogue, indexed in the ``(m, n)`` domain."""
        v = body_input(v)
        if v in packs_by_value:
            raise LoweringError(f"%{v.name} is both the weights and an epilogue operand")
        c = const(v)
        if c is not None and c.size == 1:
            val = float(c.reshape(()))
            key.append(("scalar", val))
            return lambda i, j: tirx.const(val, "float32")
        shape = _shape(v)
        if len(shape) > len(out_shape) or any(
            s not in (1, o) for s, o in zip(shape[::-1], out_shape[::-1], strict=False)
        ):
            raise LoweringError(f"%{v.name} {shape} does not broadcast to {out_shape}")
        s_full = (1,) * (len(out_shape) - len(shape)) + shape
        last = s_full[-1]
        key.append(("operand", position[v], shape))
        if all(d == 1 for d in s_full[:-1]):  # a row vector (or a scalar)
            t = placeholder(v, (last,))
            return (lambda i, j: t[j]) if last != 1 else (lambda i, j: t[0])
        if s_full[:-1] == lead:  # full leading dims: [M, N] or [M, 1]
            t = placeholder(v, (wl.m, last))
            return (lambda i, j: t[i, j]) if last != 1 else (lambda i, j: t[i, 0])
        # Partly broadcast leading dims: unravel m over the output's leading dims.
        t = placeholder(v, shape)
        off = len(out_shape) - len(shape)

        def general(i: Expr, j: Expr) -> Expr:
            idx: list[Expr] = []
            rem = i
            for d in reversed(lead):
                idx.append(rem % d)
                rem = rem // d
            idx.reverse()
            full = [*idx, j]
            return t[tuple(0 if shape[p] == 1 else full[p + off] for p in range(len(shape)))]

        return general

    values: dict[Value, DomainFn] = {}
    ref: dict[Value, tuple[str, int]] = {v: ("in", i) for i, v in enumerate(body.inputs)}

    def refs(vs: list[Value | None]) -> tuple[Any, ...]:
        return tuple(None if v is None else ref.get(v) for v in vs)

    product: DomainFn = lambda i, j: dense[i, j]  # noqa: E731
    if anchor.op == "Gemm" and len(anchor.inputs) > 2 and anchor.inputs[2] is not None:
        beta = float(anchor.attr("beta", 1.0))
        key.append(("C", beta, refs([anchor.inputs[2]])))
        if beta != 0.0:
            cfn = operand(anchor.inputs[2])
            scale = tirx.const(beta, "float32")
            if beta == 1.0:
                product = lambda i, j, f=cfn: dense[i, j] + f(i, j)  # noqa: E731
            else:
                product = lambda i, j, f=cfn: dense[i, j] + scale * f(i, j)  # noqa: E731
    values[anchor.outputs[0]] = product
    ref[anchor.outputs[0]] = ("node", 0)

    # The epilogue, one expression per value.
    for idx, node in enumerate(nodes[1:], start=1):
        if len(node.outputs) != 1:
            raise LoweringError(f"{node!r}: multi-output nodes are not supported")
        out = node.outputs[0]
        if _shape(out) != out_shape:
            raise LoweringError(f"{node!r}: output {out.shape} is not the product's {out_shape}")
        ins = list(node.inputs)
        key.append((node.op, _attrs_key(node), refs(ins)))
        ref[out] = ("node", idx)
        un = None
        if ins and ins[0] in values and not any(v in values for v in ins[1:]):
            un = unary_builder(node, const)
        if un is not None:
            src = values[ins[0]]  # type: ignore[index]
            values[out] = lambda i, j, f=src, g=un: g(f(i, j))
            key.append(tuple(_scalar_key(const(v)) for v in ins[1:]))
            continue
        bin_fn = binary_builder(node.op)
        if bin_fn is None or len(ins) != 2 or ins[0] is None or ins[1] is None:
            raise LoweringError(f"op {node.op} is not supported in a dense epilogue")
        if ins[0] not in values and ins[1] not in values:
            raise LoweringError(f"{node!r}: neither operand comes from the product")
        fa = values[ins[0]] if ins[0] in values else operand(ins[0])
        fb = values[ins[1]] if ins[1] in values else operand(ins[1])
        values[out] = lambda i, j, f=fa, g=fb, h=bin_fn: h(f(i, j), g(i, j))

    outputs = []
    for idx, o in enumerate(body.outputs):
        if o not in values:
            raise LoweringError(f"group output %{o.name} is not computed in the body")
        outputs.append(te.compute((wl.m, wl.n), _fcompute(values[o]), name=f"out{idx}"))
    params_v = sorted(placeholders, key=lambda v: position[v])
    params = [placeholders[v] for v in params_v]
    packs = {pos: packs_by_value[v] for pos, v in enumerate(params_v) if v in packs_by_value}
    out_ids = refs(list(body.outputs))
    return LoweredDense(
        params=params,
        outputs=outputs,
        output_shapes=[out_shape] * len(outputs),
        input_indices=[position[v] for v in params_v],
        packs=packs,
        key=(
            tuple((position[v], tuple(int(d) for d in placeholders[v].shape)) for v in params_v),
            tuple(key),
            out_ids,
        ),
    )


def _fcompute(fn: DomainFn) -> DomainFn:
    """`fn` without default arguments (`te.compute` rejects them)."""

    def compute(i: Expr, j: Expr) -> Expr:
        return fn(i, j)

    return compute


def _scalar_key(c: np.ndarray | None) -> Any:
    return None if c is None else tuple(np.asarray(c).reshape(-1).tolist()[:4])


def _attrs_key(node: Node) -> tuple[Any, ...]:
    return tuple(sorted((k, repr(v)) for k, v in node.attrs.items()))
