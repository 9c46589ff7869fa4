"""Attention family: ``lepton.Attention`` (one kernel per attention node: scores, scale, mask,
softmax and the product with ``v``) and a lone ``Softmax`` or ``LogSoftmax`` (any axis).

Both kernels are hand-written TIR (`schedules.x86_attention`) on flat buffers: every
parameter and output is declared as one dimension (the same row-major memory as the IR's
shape), and broadcasting of the leading dims is resolved into index arithmetic when the
kernel is generated. An element-wise epilogue fused after the anchor (`anchor_group`) is
applied as each output element is stored.

``lepton.Attention`` takes every form its reference does: q/k/v of any rank >= 2 whose
leading dims broadcast, ``v``'s head dim different from ``q``'s, no mask or a mask of any
rank whose last two dims are 1 or the query/key lengths; refused: non-float32 tensors
(a boolean or integer mask included), symbolic shapes, a missing ``scale``.

Also holds the small helpers the other TIR-based families (norm, pool, layout) share:
`anchor_group` (anchor plus element-wise epilogue), `static_shape`, `flat_plan`,
`parallel_tasks`, `num_cores`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tvm import tirx

from lepton_compiler.ir import DType, Node, Value

from ..schedules.x86_attention import (
    MAX_OPERANDS,
    AttentionShape,
    Epilogue,
    attention_func,
    softmax_func,
)
from ..schedules.x86_conv import vector_lanes
from ..te_elementwise import binary_builder, unary_builder
from ..te_ops import LoweringError
from . import KernelPlan

NAME = "attention"
ANCHORS = ("lepton.Attention", "Softmax", "LogSoftmax")


# -- helpers shared by the TIR-based families ----------------------------------------------------


@dataclass
class AnchorGroup:
    """A group as the TIR-based families take it: an anchor, then an element-wise chain.

    Attributes:
        anchor: the anchor node (the group's first node).
        position: the position of each body input among the fused node's inputs.
        epilogue: the chain after the anchor as an `Epilogue`, or None when there is none.
        operands: (fused-node input index, IR shape) of each tensor the epilogue reads: the
            kernel's parameters ``e0, e1`` after its own.
    """

    anchor: Node
    position: dict[Value, int]
    epilogue: Epilogue | None = None
    operands: list[tuple[int, tuple[int, ...]]] = field(default_factory=list)

    @property
    def epilogue_key(self) -> Any:
        """The epilogue's part of a cache key."""
        return None if self.epilogue is None else self.epilogue.key


def anchor_group(fused: Node, ops: Sequence[str], int_output: bool = False) -> AnchorGroup:
    """Split a group into its anchor (one of ``ops``) and an element-wise epilogue.

    The epilogue must be a chain: each node reads the previous node's output (once, or
    twice as in ``x * x``) and otherwise only constants or group inputs that broadcast to the
    anchor's output shape (at most `MAX_OPERANDS` distinct tensors); every node keeps that
    shape, and the last node's output is the group's only output. Ops come from the shared
    element-wise table (`te_elementwise`: unary ops with constant operands baked in, and
    Add/Sub/Mul/Div/Max/Min/Pow/PRelu); scalar constant operands are baked in.

    With `int_output` (kernels that can store uint8/int8), the chain may end in a
    QuantizeLinear whose output is 8-bit.

    Raises:
        LoweringError: another anchor, a multi-output or branching group, an op outside the
            table, or an operand that is neither constant nor a group input.
    """
    body = fused.attrs["body"]
    nodes = list(body)
    if not nodes or nodes[0].op not in ops:
        raise LoweringError(f"the {'/'.join(ops)} kernel needs that op first, got "
                            f"{[n.op for n in nodes]}")  # fmt: skip
    anchor = nodes[0]
    position = {v: i for i, v in enumerate(body.inputs)}
    if len(anchor.outputs) != 1:
        raise LoweringError(f"{anchor!r}: only the single-output form is supported")
    running = anchor.outputs[0]
    if len(nodes) == 1:
        if list(body.outputs) != [running]:
            raise LoweringError(f"{anchor!r}: the group's output is not the anchor's")
        return AnchorGroup(anchor, position)
    out_shape = static_shape(running, "anchor output")
    outer = {b: o for b, o in zip(body.inputs, fused.inputs, strict=True) if o is not None}

    def const(v: Value | None) -> np.ndarray | None:
        if v is None:
            return None
        src = outer.get(v, v)
        return None if src.const is None else np.asarray(src.const)

    steps: list[Callable[[Any, Sequence[Callable[[], Any]]], Any]] = []
    operands: list[Value] = []
    key: list[Any] = []
    for node in nodes[1:]:
        ins = list(node.inputs)
        requantizes = int_output and node.op == "QuantizeLinear" and node is nodes[-1]
        shape_of = _any_dtype_shape if requantizes else static_shape
        if len(node.outputs) != 1 or shape_of(node.outputs[0], "output") != out_shape:
            raise LoweringError(f"{node!r}: an epilogue node must keep the shape {out_shape}")
        if running not in ins:
            raise LoweringError(f"{node!r}: the epilogue is not a chain")
        if any(v is not None and v is not running and v not in position for v in ins):
            raise LoweringError(f"{node!r}: reads a value computed elsewhere in the group")
        un = None
        if ins[0] is running and running not in ins[1:]:
            un = unary_builder(node, const)
        if un is not None:
            steps.append(lambda v, loads, g=un: g(v))
            consts = tuple(_scalar_key(const(x)) for x in ins[1:])
            key.append((node.op, _attrs_key(node), consts))
            running = node.outputs[0]
            continue
        fn = binary_builder(node.op)
        if fn is None or len(ins) != 2 or ins[0] is None or ins[1] is None:
            raise LoweringError(f"op {node.op} is not supported in this epilogue")
        sides: list[tuple[str, Any]] = []
        for v in ins:
            c = None if v is running else const(v)
            if v is running:
                sides.append(("value", None))
            elif c is not None and c.size == 1:
                sides.append(("const", float(c.reshape(()))))
            else:
                shape = static_shape(v, "epilogue operand")
                pairs = zip(reversed(shape), reversed(out_shape), strict=False)
                if len(shape) > len(out_shape) or any(d not in (1, o) for d, o in pairs):
                    raise LoweringError(f"{node!r}: operand {shape} vs output {out_shape}")
                if v not in operands:
                    if len(operands) == MAX_OPERANDS:
                        raise LoweringError(f"more than {MAX_OPERANDS} epilogue operands")
                    operands.append(v)
                sides.append(("tensor", operands.index(v)))
        steps.append(lambda v, loads, f=fn, sd=tuple(sides): f(*(_side(s, v, loads) for s in sd)))
        key.append((node.op, tuple(sides)))
        running = node.outputs[0]
    if list(body.outputs) != [running]:
        raise LoweringError("the group's only output must be the end of the epilogue")

    def chain(v: Any, loads: Sequence[Callable[[], Any]]) -> Any:
        # each step's input is bound to a fresh variable: a step may read it twice (x * x),
        # and an expression holding a Let (fast_exp...) must not be duplicated
        return _bind_steps(v, steps, loads)

    shapes = [static_shape(v) for v in operands]
    epi = Epilogue(tuple(key), out_shape, tuple(shapes), chain)
    params = [(position[v], s) for v, s in zip(operands, shapes, strict=True)]
    return AnchorGroup(anchor, position, epi, params)


def _bind_steps(
    v: Any,
    steps: Sequence[Callable[[Any, Sequence[Callable[[], Any]]], Any]],
    loads: Sequence[Callable[[], Any]],
) -> Any:
    """Apply `steps` in order, each to a fresh variable bound (Let) to the previous value."""
    if not steps:
        return v
    var = tirx.Var("epi", "float32")
    return tirx.Let(var, v, _bind_steps(steps[0](var, loads), steps[1:], loads))


def _side(side: tuple[str, Any], value: Any, loads: Sequence[Callable[[], Any]]) -> Any:
    """One operand of a binary epilogue op: the running value, a constant or a load."""
    kind, arg = side
    if kind == "value":
        return value
    if kind == "const":
        return tirx.const(arg, "float32")
    return loads[arg]()


def _scalar_key(c: np.ndarray | None) -> Any:
    return None if c is None else tuple(np.asarray(c).reshape(-1).tolist()[:8])


def _attrs_key(node: Node) -> tuple[Any, ...]:
    return tuple(sorted((k, repr(v)) for k, v in node.attrs.items()))


def _any_dtype_shape(v: Value | None, what: str = "input") -> tuple[int, ...]:
    """`v`'s static shape, whatever its dtype."""
    if v is None or v.shape is None or not all(isinstance(d, int) for d in v.shape):
        raise LoweringError(f"{what} needs a static shape")
    return tuple(int(d) for d in v.shape)


def static_shape(v: Value | None, what: str = "input") -> tuple[int, ...]:
    """`v`'s shape, which must be static; float32 is checked too.

    Raises:
        LoweringError: missing value, unknown or symbolic shape, or not float32.
    """
    if v is None:
        raise LoweringError(f"missing {what}")
    shape = v.shape
    if shape is None or not all(isinstance(d, int) for d in shape):
        raise LoweringError(f"%{v.name}: needs a static shape, has {shape}")
    if v.dtype is not DType.FLOAT32:
        raise LoweringError(f"%{v.name}: only float32 is supported, got {v.dtype}")
    return tuple(int(d) for d in shape)


def num_cores(target: Any) -> int:
    """The target's ``num-cores`` (the thread count kernels are split for)."""
    try:
        return max(1, int(target.attrs["num-cores"]))
    except (KeyError, TypeError, AttributeError):
        return os.cpu_count() or 1


#: Element count below which a memory-bound kernel runs on the calling thread only. Measured
#: on the 2-core machine: a SkipLayerNorm of 128 x 768 took 26 us on one thread and 37 us
#: split over two (fork/join costs more than it saves), and after the caller had run other
#: work for a few milliseconds (as between kernels in a model) the parallel launch waited
#: 0.1 - 2 ms for a sleeping worker under load, the single-threaded call did not.
SERIAL_ELEMENTS = 1 << 19


def parallel_tasks(elements: int, units: int, most: int = 64) -> int:
    """How many parallel tasks a memory-bound kernel over `elements` values, divisible into
    `units` independent pieces (rows, planes), should use: 1 below `SERIAL_ELEMENTS`."""
    if elements < SERIAL_ELEMENTS:
        return 1
    return max(1, min(units, most))


def flat_plan(
    key: tuple[Any, ...],
    make: Callable[[], Any],
    inputs: Sequence[tuple[int, tuple[int, ...]]],
    output_shape: tuple[int, ...],
    config: Any = None,
) -> KernelPlan:
    """A `KernelPlan` for a kernel that declares every tensor flat (one dimension).

    The plan's key is `key` plus the parameters' input positions and IR shapes and the output
    shape: `build.build_group` caches the whole `GroupKernel` (input positions and the shapes
    its outputs are viewed in included) by key, and kernels with the same flat code can serve
    tensors of different shapes (a transpose of ``[2, 3, 4, 6]`` and of ``[2, 3, 6, 4]``
    keeping both last axes) or read their inputs at other positions.

    Args:
        key: what the generated code depends on.
        make: returns the PrimFunc.
        inputs: (fused-node input index, IR shape) per kernel parameter, in order.
        output_shape: the output's IR shape.
        config: reported as the plan's config.
    """
    return KernelPlan(
        key=(key, tuple(inputs), output_shape),
        make=make,
        input_indices=[i for i, _ in inputs],
        param_shapes=[(math.prod(s),) for _, s in inputs],
        output_shapes=[output_shape],
        kernel_output_shapes=[(math.prod(output_shape),)],
        config=config,
    )


def broadcast_lead(*leads: tuple[int, ...]) -> tuple[int, ...]:
    """NumPy broadcasting of leading-dim tuples.

    Raises:
        LoweringError: they do not broadcast.
    """
    rank = max((len(s) for s in leads), default=0)
    out = [1] * rank
    for s in leads:
        for i, d in enumerate(s, start=rank - len(s)):
            if d != 1 and out[i] not in (1, d):
                raise LoweringError(f"leading dims {leads} do not broadcast")
            if d != 1:
                out[i] = d
    return tuple(out)


# -- plans ---------------------------------------------------------------------------------------


def plan(fused: Node, target: Any) -> KernelPlan:
    """Plan a ``lepton.Attention`` or ``Softmax`` group (a lone node)."""
    group = anchor_group(fused, ANCHORS)
    if group.anchor.op in ("Softmax", "LogSoftmax"):
        return _plan_softmax(group, target)
    return _plan_attention(group, target)


def _plan_attention(group: AnchorGroup, target: Any) -> KernelPlan:
    """``softmax(q kᵀ · scale + mask) v`` as one kernel (see `schedules.x86_attention`)."""
    node, position, epi = group.anchor, group.position, group.epilogue
    ins = list(node.inputs) + [None] * (4 - len(node.inputs))
    if len(node.inputs) > 4:
        raise LoweringError(f"{node!r}: lepton.Attention takes at most 4 inputs")
    q, k, v, mask = (static_shape(x, n) if x is not None else None
                     for x, n in zip(ins, ("q", "k", "v", "mask"), strict=True))  # fmt: skip
    if q is None or k is None or v is None:
        raise LoweringError(f"{node!r}: q, k and v are required")
    if min(len(q), len(k), len(v)) < 2:
        raise LoweringError(f"{node!r}: q, k, v need rank >= 2")
    sq, d = q[-2:]
    sk, dk = k[-2:]
    sv, dv = v[-2:]
    if dk != d or sv != sk:
        raise LoweringError(f"{node!r}: q {q}, k {k}, v {v} do not chain")
    if "scale" not in node.attrs:
        raise LoweringError(f"{node!r}: no scale attribute")
    scale = float(node.attrs["scale"])
    mlead: tuple[int, ...] | None = None
    mrows = mcols = 1
    if mask is not None:
        m2 = (1,) * max(0, 2 - len(mask)) + mask
        mlead, (mrows, mcols) = m2[:-2], m2[-2:]
        if mrows not in (1, sq) or mcols not in (1, sk):
            raise LoweringError(f"{node!r}: mask {mask} does not broadcast to [{sq}, {sk}]")
    lead = broadcast_lead(q[:-2], k[:-2], v[:-2], *(() if mlead is None else (mlead,)))
    out = static_shape(node.outputs[0], "output")
    if out != (*lead, sq, dv):
        raise LoweringError(f"{node!r}: output {out}, expected {(*lead, sq, dv)}")
    lanes = vector_lanes(target)
    nb = math.prod(lead)
    cores = num_cores(target)
    rb = 4
    # split query rows across tasks only when batch x heads cannot keep the cores busy
    tasks = 1 if nb >= 2 * cores else max(1, min(-(-sq // rb), -(-2 * cores // nb)))
    shape = AttentionShape(
        lead=lead, q_lead=q[:-2], k_lead=k[:-2], v_lead=v[:-2], sq=sq, sk=sk, d=d, dv=dv,
        mask_lead=mlead, mask_rows=mrows, mask_cols=mcols, scale=scale,
        tasks_per_batch=tasks, lanes=lanes, rb=rb,
    )  # fmt: skip
    params = [(position[x], s) for x, s in zip(ins, (q, k, v, mask), strict=True)
              if x is not None and s is not None]  # fmt: skip
    return flat_plan(("attention", shape, group.epilogue_key),
                     lambda: attention_func(shape, epi), params + group.operands, out,
                     shape)  # fmt: skip


def _plan_softmax(group: AnchorGroup, target: Any) -> KernelPlan:
    """Softmax or LogSoftmax over one axis (opset >= 13 semantics)."""
    node, position, epi = group.anchor, group.position, group.epilogue
    opset = node.graph.opset("") if node.graph is not None else None
    if opset is not None and opset < 13:
        raise LoweringError(f"{node!r}: {node.op} before opset 13 (2-D coercion) not supported")
    x = static_shape(node.inputs[0] if node.inputs else None, "input")
    if len(x) == 0:
        raise LoweringError(f"{node!r}: Softmax of a scalar")
    axis = int(node.attrs.get("axis", -1))
    if not -len(x) <= axis < len(x):
        raise LoweringError(f"{node!r}: axis {axis} out of range for rank {len(x)}")
    axis %= len(x)
    outer, n, inner = math.prod(x[:axis]), x[axis], math.prod(x[axis + 1 :])
    lanes = vector_lanes(target)
    # an exp and three passes per element: weighs like ~4 copies in the serial threshold
    tasks = parallel_tasks(4 * outer * n * inner, outer)
    log = node.op == "LogSoftmax"
    key = ("logsoftmax" if log else "softmax", outer, n, inner, lanes, tasks)
    return flat_plan(
        (*key, group.epilogue_key),
        lambda: softmax_func(outer, n, inner, lanes, tasks, epi, log),
        [(position[node.inputs[0]], x), *group.operands],  # type: ignore[index]
        x,
        key,
    )
