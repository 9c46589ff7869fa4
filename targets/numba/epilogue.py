"""The element-wise chain of a fused group, as statements in a template's innermost loop.

A ``lepton.Fused`` group is an anchor (Conv, Gemm, a pool...) followed by element-wise ops on
its result (bias, activation, residual add, clip), or, without an anchor, only element-wise
ops. `Chain.plan` checks that every op of the chain is one this table can write (`OPS`) and
that every array it reads broadcasts onto the output in a way the template's loop nest can
index; `Chain.lines` then writes one statement per op, ending in the value the template
stores. The anchor's result never goes back to memory before the epilogue has run.

Index groups: a template iterates over its output in *merged* dimensions (a conv over
``(n, channel, pixel)`` with the pixel standing for height x width). Each extra operand is
passed to the kernel reshaped to those merged dimensions, size 1 where it is broadcast, and
indexed with the template's loop variables, or ``0`` where it is broadcast: a conv bias of
shape ``[C, 1, 1]`` becomes ``b[0, oc, 0]``. An operand whose broadcast pattern splits a
merged dimension (``[1, 1, H, 1]`` over a conv's pixels) is refused with `LoweringError`.

Scalars (size-1 constants) become named float32 constants of the module (`emit.Constants`).
All values are float32; only ``Cast`` and ``DequantizeLinear`` may read another numeric dtype
(they convert). ``QuantizeLinear`` (constant scalar scale and zero point: round half to even,
add the zero point, saturate to uint8/int8) yields an integer that the template's store
converts; a group whose output is uint8/int8 is taken only by templates that store
integers (``Chain.plan(..., int_output=True)``, the integer templates).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from lepton_compiler.errors import LoweringError
from lepton_compiler.ir import DType, Graph, Node, TensorType, Value

from .emit import Constants, Lines

__all__ = ["OPS", "Chain", "Operand", "merge_groups", "merged_shape", "static_shape"]

F32 = DType.FLOAT32


def static_shape(v: Value | None) -> tuple[int, ...]:
    """The value's static shape.

    Raises:
        LoweringError: the value is not a tensor with a fully static shape.
    """
    if v is None or not isinstance(v.type, TensorType) or v.type.shape is None:
        raise LoweringError(f"%{getattr(v, 'name', None)}: not a tensor with a known shape")
    if not all(isinstance(d, int) for d in v.type.shape):
        raise LoweringError(f"%{v.name}: needs a static shape, has {v.type.shape}")
    return tuple(int(d) for d in v.type.shape)  # type: ignore[arg-type]


def _dtype(v: Value) -> DType | None:
    return v.type.dtype if isinstance(v.type, TensorType) else None


# -- the op table ----------------------------------------------------------------------------

#: An op writer: (node, argument expressions (None for an absent input), constants,
#: constant value of each input or None) -> expression.
Writer = Callable[[Node, list[str | None], Constants, list[np.ndarray | None]], str]


def _binary(symbol: str) -> Writer:
    return lambda n, a, c, k: f"{a[0]} {symbol} {a[1]}"


def _call(fn: str) -> Writer:
    return lambda n, a, c, k: f"{fn}({a[0]})"


def _clip(n: Node, a: list[str | None], c: Constants, k: list[np.ndarray | None]) -> str:
    x = a[0]
    if len(a) > 1 and a[1] is not None:
        x = f"max({x}, {a[1]})"
    if len(a) > 2 and a[2] is not None:
        x = f"min({x}, {a[2]})"
    return x


def _pow(n: Node, a: list[str | None], c: Constants, k: list[np.ndarray | None]) -> str:
    e = k[1]
    if e is not None and e.size == 1:
        p = float(e.reshape(()))
        if p == 1.0:
            return f"{a[0]}"
        if p == 2.0:
            return f"{a[0]} * {a[0]}"
        if p == 3.0:
            return f"{a[0]} * {a[0]} * {a[0]}"
        if p == 0.5:
            return f"math.sqrt({a[0]})"
    return f"{a[0]} ** {a[1]}"


def _gelu(n: Node, a: list[str | None], c: Constants, k: list[np.ndarray | None]) -> str:
    x = a[0]
    if str(n.attrs.get("approximate", "none")) == "tanh":
        inner = f"{c(math.sqrt(2 / math.pi))} * ({x} + {c(0.044715)} * {x} * {x} * {x})"
        return f"{c(0.5)} * {x} * ({c(1.0)} + math.tanh({inner}))"
    return f"{c(0.5)} * {x} * ({c(1.0)} + math.erf({x} * {c(1 / math.sqrt(2))}))"


def _leaky(n: Node, a: list[str | None], c: Constants, k: list[np.ndarray | None]) -> str:
    alpha = c(float(n.attrs.get("alpha", 0.01)))
    return f"{a[0]} if {a[0]} >= {c(0.0)} else {a[0]} * {alpha}"


def _hard_sigmoid(n: Node, a: list[str | None], c: Constants, k: list[np.ndarray | None]) -> str:
    alpha, beta = float(n.attrs.get("alpha", 0.2)), float(n.attrs.get("beta", 0.5))
    return f"max({c(0.0)}, min({c(1.0)}, {c(alpha)} * {a[0]} + {c(beta)}))"


def _variadic(fn: str) -> Writer:
    def write(n: Node, a: list[str | None], c: Constants, k: list[np.ndarray | None]) -> str:
        args = [x for x in a if x is not None]
        out = args[0]
        for x in args[1:]:
            out = f"{fn}({out}, {x})"
        return out

    return write


#: Saturation bounds of QuantizeLinear outputs.
_Q_RANGE = {DType.UINT8: (0.0, 255.0), DType.INT8: (-128.0, 127.0)}


def _quantize(n: Node, a: list[str | None], c: Constants, k: list[np.ndarray | None]) -> str:
    """``saturate(rint(x / scale) + zero_point)`` as ONNX's reference computes it (a float32
    division, round half to even), written as ``round(clamp(x / scale)) + zero_point``: the
    bounds are integers, so clamping before rounding saturates the same, and ``round`` of a
    float is ``llvm.rint`` on CPUs and ``llrint`` on CUDA (NumPy's ``rint`` has no CUDA
    lowering). The value is an int64 the template stores into uint8/int8."""
    lo, hi = _Q_RANGE[_dtype(n.outputs[0])]  # type: ignore[index]
    zp_value = k[2] if len(k) > 2 else None
    zp = int(np.asarray(zp_value).reshape(())) if zp_value is not None else 0
    q = f"round(min(max({a[0]} / {a[1]}, {c(lo - zp)}), {c(hi - zp)}))"
    return f"{q} + {zp}" if zp else q


def _dequantize(n: Node, a: list[str | None], c: Constants, k: list[np.ndarray | None]) -> str:
    """``(float32(x) - zero_point) * scale``, in float32 as ONNX's reference computes it."""
    x = f"np.float32({a[0]})"
    if len(a) > 2 and a[2] is not None:
        x = f"({x} - {a[2]})"
    return f"{x} * {a[1]}"


def _cast(n: Node, a: list[str | None], c: Constants, k: list[np.ndarray | None]) -> str:
    if int(n.attrs.get("to", 0)) != 1:  # TensorProto.FLOAT
        raise LoweringError(f"{n.name}: Cast to a type other than float32")
    return f"np.float32({a[0]})"


#: Element-wise ops the chain can write, by ONNX (or lepton.*) op name.
OPS: dict[str, Writer] = {
    "Add": _binary("+"),
    "Sub": _binary("-"),
    "Mul": _binary("*"),
    "Div": _binary("/"),
    "Relu": lambda n, a, c, k: f"max({a[0]}, {c(0.0)})",
    "Clip": _clip,
    "Sigmoid": lambda n, a, c, k: f"{c(1.0)} / ({c(1.0)} + math.exp(-{a[0]}))",
    "Tanh": _call("math.tanh"),
    "Erf": _call("math.erf"),
    "Exp": _call("math.exp"),
    "Log": _call("math.log"),
    "Sqrt": _call("math.sqrt"),
    "Abs": _call("abs"),
    "Neg": lambda n, a, c, k: f"-{a[0]}",
    "Reciprocal": lambda n, a, c, k: f"{c(1.0)} / {a[0]}",
    "Pow": _pow,
    "Max": _variadic("max"),
    "Min": _variadic("min"),
    "Identity": lambda n, a, c, k: f"{a[0]}",
    "LeakyRelu": _leaky,
    "HardSigmoid": _hard_sigmoid,
    "HardSwish": lambda n, a, c, k: (
        f"{a[0]} * max({c(0.0)}, min({c(1.0)}, {a[0]} * {c(1 / 6)} + {c(0.5)}))"
    ),
    "lepton.Gelu": _gelu,
    "lepton.SiLU": lambda n, a, c, k: f"{a[0]} / ({c(1.0)} + math.exp(-{a[0]}))",
    "Cast": _cast,
    "QuantizeLinear": _quantize,
    "DequantizeLinear": _dequantize,
}

#: Ops whose inputs after the first must be constant scalars (per-tensor quantization).
_SCALAR_PARAMS = ("QuantizeLinear", "DequantizeLinear")

#: Ops that may read an operand of another numeric dtype (they convert it to float32).
_CONVERTING = ("Cast", "DequantizeLinear")

#: Dtypes a Cast in a chain may read (those Numba has).
_CAST_FROM = frozenset(
    {
        DType.FLOAT32,
        DType.FLOAT64,
        DType.INT8,
        DType.INT16,
        DType.INT32,
        DType.INT64,
        DType.UINT8,
        DType.UINT16,
        DType.UINT32,
        DType.UINT64,
        DType.BOOL,
    }
)

#: Ops whose result Numba computes in float64 for a float32 argument: wrapped in np.float32.
_WIDENING = ("Erf", "Pow")


# -- operands --------------------------------------------------------------------------------


@dataclass
class Operand:
    """An array the chain reads, passed to the kernel as a parameter.

    Attributes:
        index: the fused node's input it is.
        name: the parameter's name in the generated function.
        shape: the shape the kernel declares: the template's merged dimensions, 1 where the
            operand is broadcast.
        dtype: its dtype name (``"float32"`` except for Cast inputs).
    """

    index: int
    name: str
    shape: tuple[int, ...]
    dtype: str

    def load(self, coords: Sequence[str]) -> str:
        """The expression reading this operand at the template's loop coordinates."""
        idx = [c if s > 1 else "0" for c, s in zip(coords, self.shape, strict=True)]
        return f"{self.name}[{', '.join(idx)}]"


def merge_groups(out_shape: Sequence[int], shapes: Sequence[Sequence[int]]) -> list[list[int]]:
    """Adjacent output dims merged where every operand is broadcast the same way along them
    (the fewest loop dims an element-wise nest needs); size-1 output dims join a neighbour."""
    r = len(out_shape)
    pats = []
    for s in shapes:
        full = (1,) * (r - len(s)) + tuple(s)
        pats.append([full[d] != 1 for d in range(r)])
    groups: list[list[int]] = []
    sigs: list[tuple[bool, ...] | None] = []  # per group: the pattern of its non-1 dims
    for d in range(r):
        sig = tuple(p[d] for p in pats)
        if groups and out_shape[d] == 1:
            groups[-1].append(d)
        elif groups and sigs[-1] in (None, sig):
            groups[-1].append(d)
            sigs[-1] = sig
        else:
            groups.append([d])
            sigs.append(sig if out_shape[d] != 1 else None)
    return groups


def merged_shape(
    name: str, shape: Sequence[int], out_shape: Sequence[int], groups: Sequence[Sequence[int]]
) -> tuple[int, ...]:
    """`shape` as the operand of an output of `out_shape` indexed in the merged `groups`
    (size 1 where broadcast).

    Raises:
        LoweringError: it does not broadcast, or is broadcast along part of a group.
    """
    r = len(out_shape)
    if len(shape) > r:
        raise LoweringError(f"operand %{name} has a higher rank than the output")
    full = (1,) * (r - len(shape)) + tuple(shape)
    merged = []
    for g in groups:
        live = [d for d in g if out_shape[d] != 1]
        varies = [full[d] != 1 for d in live]
        if any(full[d] not in (1, out_shape[d]) for d in g):
            raise LoweringError(
                f"operand %{name} {list(shape)} does not broadcast to {list(out_shape)}"
            )
        if any(varies) and not all(varies):
            raise LoweringError(
                f"operand %{name} {list(shape)} is broadcast along part of a merged loop dimension"
            )
        merged.append(math.prod(out_shape[d] for d in g) if any(varies) else 1)
    return tuple(merged)


def _constant_scalars(
    fused: Node, inputs: dict[Value, int], values: Sequence[Value | None]
) -> bool:
    """Every present value is a group input whose outer value is a size-1 constant."""
    for v in values:
        if v is None:
            continue
        outer = fused.inputs[inputs[v]] if v in inputs else None
        if outer is None or outer.const is None or np.size(outer.const) != 1:
            return False
    return True


# -- the chain -------------------------------------------------------------------------------


@dataclass
class Chain:
    """A fused group's element-wise ops after its anchor (or all of them, without one).

    Attributes:
        fused: the ``lepton.Fused`` node.
        anchor: the anchor node in the body, or None for an anchor-less chain.
        nodes: the element-wise nodes, in order.
        operands: the arrays the chain reads (kernel parameters after the anchor's).
        out_shape: the group output's shape.
        groups: the template's merged output dims.
    """

    fused: Node
    anchor: Node | None
    nodes: list[Node]
    operands: list[Operand]
    out_shape: tuple[int, ...]
    groups: list[list[int]]
    _scalars: dict[Value, float]
    _inputs: dict[Value, int]

    @classmethod
    def plan(
        cls,
        fused: Node,
        anchor_ops: Sequence[str] | None,
        groups: Callable[[tuple[int, ...], list[tuple[int, ...]]], list[list[int]]] | None = None,
        skip_inputs: Sequence[int] = (),
        int_output: bool = False,
    ) -> Chain:
        """Check the group and decide how its operands are indexed.

        Args:
            fused: a ``lepton.Fused`` node (one output).
            anchor_ops: the anchor ops the template takes (the body's first node must be
                one of them), or None for an anchor-less chain.
            groups: the template's merged output dims, from the output shape and the
                operand shapes (default: one group per output dim).
            skip_inputs: fused-node inputs the anchor reads that the chain must not take as
                operands (they are the anchor's parameters).
            int_output: the template stores the chain's value into a uint8/int8 output (the
                group ends in a QuantizeLinear); otherwise such a group is refused.

        Raises:
            LoweringError: an op is not in `OPS`, a value is not float32 (but a
                QuantizeLinear's uint8/int8), a Quantize/DequantizeLinear with a scale or zero
                point that is not a constant scalar, the group has several outputs, or an
                operand's broadcast cannot be indexed.
        """
        body: Graph = fused.attrs["body"]
        nodes = list(body)
        if len(body.outputs) != 1 or len(fused.outputs) != 1 or not nodes:
            raise LoweringError(f"{fused.name}: a group with one output is needed")
        anchor = None
        if anchor_ops is not None:
            anchor = nodes[0]
            if anchor.op not in anchor_ops:
                raise LoweringError(f"{fused.name}: the body does not start with {anchor_ops}")
            nodes = nodes[1:]
        last = nodes[-1] if nodes else anchor
        assert last is not None
        if len(last.outputs) != 1 or body.outputs[0] is not last.outputs[0]:
            raise LoweringError(f"{fused.name}: the group's output is not its last op's")
        inputs = {bv: i for i, bv in enumerate(body.inputs)}
        out_shape = static_shape(last.outputs[0])
        scalars: dict[Value, float] = {}
        arrays: list[tuple[int, Value]] = []
        for n in nodes:
            if n.op not in OPS or n.subgraphs() or len(n.outputs) != 1:
                raise LoweringError(f"{fused.name}: no Numba template for {n.op} in an epilogue")
            out_dt = _dtype(n.outputs[0])
            if out_dt != F32 and not (n.op == "QuantizeLinear" and out_dt in _Q_RANGE):
                raise LoweringError(f"{fused.name}: {n.op} does not produce float32")
            if n.op in _SCALAR_PARAMS and not _constant_scalars(fused, inputs, n.inputs[1:]):
                raise LoweringError(
                    f"{fused.name}: {n.op} needs a constant scalar scale and zero point"
                )
            if static_shape(n.outputs[0]) != out_shape:
                raise LoweringError(f"{fused.name}: {n.op} changes the shape inside the chain")
            for v in n.inputs:
                if v is None or v not in inputs or v in scalars:
                    continue
                idx = inputs[v]
                outer = fused.inputs[idx]
                const = outer.const if outer is not None else None
                if const is not None and np.size(const) == 1 and n.op != "Cast":
                    scalars[v] = float(np.asarray(const).reshape(()))
                    continue
                if _dtype(v) != F32 and (n.op not in _CONVERTING or _dtype(v) not in _CAST_FROM):
                    raise LoweringError(f"{fused.name}: {n.op} reads a {_dtype(v)} value")
                if idx in skip_inputs:
                    raise LoweringError(f"{fused.name}: the epilogue reads an anchor input")
                if all(i != idx for i, _ in arrays):
                    arrays.append((idx, v))
        if _dtype(last.outputs[0]) != F32 and not int_output:
            raise LoweringError(
                f"{fused.name}: the group's output is {_dtype(last.outputs[0])}; this template "
                "stores float32 only"
            )
        shapes = [static_shape(v) for _, v in arrays]
        merged = groups(out_shape, shapes) if groups else [[d] for d in range(len(out_shape))]
        operands = []
        for k, ((idx, v), shape) in enumerate(zip(arrays, shapes, strict=True)):
            dt = _dtype(v)
            operands.append(
                Operand(
                    idx,
                    f"e{k}",
                    merged_shape(v.name, shape, out_shape, merged),
                    np.dtype(dt.numpy).name if dt is not None else "float32",
                )
            )
        return cls(fused, anchor, nodes, operands, out_shape, merged, scalars, inputs)

    @property
    def ops(self) -> list[str]:
        return [n.op for n in self.nodes]

    @property
    def out_dtype(self) -> str:
        """The NumPy dtype name of the group's output (``"uint8"``/``"int8"`` after a final
        QuantizeLinear, else ``"float32"``)."""
        last = self.nodes[-1] if self.nodes else self.anchor
        dt = _dtype(last.outputs[0]) if last is not None else None
        return np.dtype(dt.numpy).name if dt is not None else "float32"

    def lines(
        self,
        code: Lines,
        consts: Constants,
        acc: str | None,
        coords: Sequence[str],
        prefix: str = "v",
    ) -> str:
        """Write the chain's statements into `code`; return the name of the final value.

        Args:
            code: where the statements go (at its current indentation).
            consts: the module's constants.
            acc: the variable holding the anchor's result at this position (None without
                an anchor).
            coords: the loop variables, one per merged output dim.
            prefix: prefix of the statement variables.
        """
        by_operand = {op.index: op for op in self.operands}
        names: dict[Value, str] = {}
        if self.anchor is not None:
            assert acc is not None
            names[self.anchor.outputs[0]] = acc
        result = acc or ""
        for k, n in enumerate(self.nodes):
            args: list[str | None] = []
            consts_in: list[np.ndarray | None] = []
            for v in n.inputs:
                if v is None:
                    args.append(None)
                    consts_in.append(None)
                    continue
                outer = self.fused.inputs[self._inputs[v]] if v in self._inputs else None
                consts_in.append(outer.const if outer is not None else None)
                if v in names:
                    args.append(names[v])
                elif v in self._scalars:
                    args.append(consts(self._scalars[v]))
                else:
                    args.append(by_operand[self._inputs[v]].load(coords))
            expr = OPS[n.op](n, args, consts, consts_in)
            if n.op in _WIDENING:
                expr = f"np.float32({expr})"
            result = f"{prefix}{k}"
            code(f"{result} = {expr}")
            names[n.outputs[0]] = result
        return result
