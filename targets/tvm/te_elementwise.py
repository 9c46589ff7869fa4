"""TE builders for element-wise ops: one table that every kernel family can consult.

`unary_builder(node, const)` returns a function ``PrimExpr -> PrimExpr`` for a one-tensor
element-wise node (constant operands such as Clip's bounds or Pow's exponent are read through
`const` and baked in), or None when the op is not in the table. `binary_builder(op)` does the
same for two-tensor ops (``(a, b) -> PrimExpr``). Families apply them inside their own loop
nests (the dense family fuses them into its output tile), so nothing here creates a stage.

Transcendentals: on LLVM x86, ``tirx.exp``/``erf``/``log`` lower to scalar libm calls
(``expf@PLT``, ``erff@PLT``...), one call per lane, which defeats vectorization (a GELU
epilogue would cost as much as the GEMM it follows). `fast_exp`, `fast_erf`, `fast_tanh`
and `fast_sigmoid` are polynomial forms built from FMAs, compares and bit casts that LLVM
vectorizes to zmm code; their max errors over float32 (measured against float64 on 1M points
in [-12, 12], and checked in the tests): exp 8.5e-8 relative, erf 3.3e-7 absolute, tanh 2.7e-7
absolute, sigmoid 1.2e-7 relative.
Log, powers with a non-trivial constant exponent and Softplus keep the (scalar, exact) libm
calls: they are rare in GEMM epilogues.

Quantization: ``QuantizeLinear`` and ``DequantizeLinear`` with a constant scalar scale and
zero point are in the unary table, so an integer kernel's epilogue can requantize in its
store. They change the dtype (float32 -> uint8/int8 and back) and compute exactly what
ONNX's reference does: ``saturate(rint(x / scale) + zp)`` (true division, round half to
even) and ``(float(x) - float(zp)) * scale``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from tvm import tirx

from lepton_compiler.ir import Node, Value

__all__ = [
    "BINARY_OPS",
    "QUANT_RANGES",
    "UNARY_OPS",
    "ConstFn",
    "binary_builder",
    "fast_erf",
    "fast_exp",
    "fast_sigmoid",
    "fast_tanh",
    "gelu",
    "unary_builder",
]

Expr = Any  # a tirx.PrimExpr (TVM's Python types are not precise enough to annotate with)
Unary = Callable[[Expr], Expr]
Binary = Callable[[Expr, Expr], Expr]
#: Looks up the constant value of a node input (None when it is not a constant).
ConstFn = Callable[[Value | None], np.ndarray | None]

F32 = "float32"


def _c(x: float) -> Expr:
    return tirx.const(float(x), F32)


def _poly(x: Expr, coeffs: tuple[float, ...]) -> Expr:
    """Horner's rule, highest degree first."""
    acc = _c(coeffs[0])
    for c in coeffs[1:]:
        acc = acc * x + _c(c)
    return acc


# -- vectorizable transcendentals ---------------------------------------------------------------

_EXP_POLY = (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2,
             1.6666665459e-1, 5.0000001201e-1)  # fmt: skip


def fast_exp(x: Expr) -> Expr:
    """``exp(x)`` for float32: ``2^n * p(r)`` with ``x = n ln2 + r``, ``|r| <= ln2 / 2``
    (Cephes' expf polynomial); the power of two is built by shifting ``n + 127`` into the
    exponent bits. Inputs are clamped to [-87.3, 88.7] (the normal range): below it the
    result is ~1e-38 instead of 0."""
    x = tirx.min(tirx.max(x, _c(-87.33654)), _c(88.72283))
    n = tirx.floor(x * _c(1.44269504088896341) + _c(0.5))
    r = x - n * _c(0.693359375) - n * _c(-2.12194440e-4)
    p = _poly(r, _EXP_POLY)
    y = p * r * r + r + _c(1.0)
    ni = tirx.Cast("int32", n) + tirx.const(127, "int32")
    two_n = tirx.reinterpret(F32, ni << tirx.const(23, "int32"))
    return y * two_n


_ERF_P = (-2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06,
          -5.69250639462346e-05, -7.34990630326855e-04, -2.95459980854025e-03,
          -1.60960333262415e-02)  # fmt: skip
_ERF_Q = (-1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03,
          -7.37332916720468e-03, -1.42647390514189e-02)  # fmt: skip


def fast_erf(x: Expr) -> Expr:
    """``erf(x)`` for float32: an odd rational approximation ``x P(x²) / Q(x²)`` on
    [-4, 4] (erf is ±1 to float32 precision beyond)."""
    x = tirx.min(tirx.max(x, _c(-4.0)), _c(4.0))
    x2 = x * x
    return x * _poly(x2, _ERF_P) / _poly(x2, _ERF_Q)


_TANH_P = (-2.76076847742355e-16, 2.00018790482477e-13, -8.60467152213735e-11,
           5.12229709037114e-08, 1.48572235717979e-05, 6.37261928875436e-04,
           4.89352455891786e-03)  # fmt: skip
_TANH_Q = (1.19825839466702e-06, 1.18534705686654e-04, 2.26843463243900e-03,
           4.89352518554385e-03)  # fmt: skip


def fast_tanh(x: Expr) -> Expr:
    """``tanh(x)`` for float32: a rational approximation on [-7.9, 7.9] (±1 beyond)."""
    x = tirx.min(tirx.max(x, _c(-7.90531110763549805)), _c(7.90531110763549805))
    x2 = x * x
    return x * _poly(x2, _TANH_P) / _poly(x2, _TANH_Q)


def fast_sigmoid(x: Expr) -> Expr:
    """``1 / (1 + exp(-x))`` with `fast_exp` (saturates cleanly: exp is clamped)."""
    return _c(1.0) / (_c(1.0) + fast_exp(-x))


def gelu(x: Expr, approximate: str = "none") -> Expr:
    """GELU as ``lepton.Gelu`` defines it: ``0.5 x (1 + erf(x / √2))``, or the tanh form."""
    if approximate == "tanh":
        inner = _c(math.sqrt(2.0 / math.pi)) * (x + _c(0.044715) * x * x * x)
        return _c(0.5) * x * (_c(1.0) + fast_tanh(inner))
    return _c(0.5) * x * (_c(1.0) + fast_erf(x * _c(1.0 / math.sqrt(2.0))))


# -- the tables ---------------------------------------------------------------------------------


def _scalar(value: np.ndarray | None) -> float | None:
    if value is None or np.asarray(value).size != 1:
        return None
    return float(np.asarray(value).reshape(()))


def _clip(node: Node, const: ConstFn) -> Unary | None:
    if len(node.inputs) > 1 or "min" not in node.attrs:  # opset >= 11: bounds are inputs
        bounds = []
        for i in (1, 2):
            v = node.inputs[i] if len(node.inputs) > i else None
            if v is None:
                bounds.append(None)
                continue
            b = _scalar(const(v))
            if b is None:
                return None  # a non-constant bound
            bounds.append(b)
        lo, hi = bounds
    else:
        lo, hi = node.attr("min"), node.attr("max")

    def clip(v: Expr) -> Expr:
        if lo is not None and lo != -math.inf:
            v = tirx.max(v, _c(lo))
        if hi is not None and hi != math.inf:
            v = tirx.min(v, _c(hi))
        return v

    return clip


def _pow(node: Node, const: ConstFn) -> Unary | None:
    e = _scalar(const(node.inputs[1] if len(node.inputs) > 1 else None))
    if e is None:
        return None
    if e == 1.0:
        return lambda v: v
    if e == 2.0:
        return lambda v: v * v
    if e == 3.0:
        return lambda v: v * v * v
    if e == 0.5:
        return tirx.sqrt
    if e == -1.0:
        return lambda v: _c(1.0) / v
    if e == 0.0:
        return lambda v: _c(1.0)
    return lambda v: tirx.pow(v, _c(e))


def _attr(node: Node, name: str, default: float) -> float:
    return float(node.attr(name, default))


def _leaky_relu(node: Node, const: ConstFn) -> Unary:
    alpha = _attr(node, "alpha", 0.01)
    return lambda v: tirx.Select(v >= _c(0.0), v, v * _c(alpha))


def _elu(node: Node, const: ConstFn) -> Unary:
    alpha = _attr(node, "alpha", 1.0)
    return lambda v: tirx.Select(v > _c(0.0), v, _c(alpha) * (fast_exp(v) - _c(1.0)))


def _selu(node: Node, const: ConstFn) -> Unary:
    alpha = _attr(node, "alpha", 1.67326319217681884765625)
    gamma = _attr(node, "gamma", 1.05070102214813232421875)
    return lambda v: _c(gamma) * tirx.Select(v > _c(0.0), v, _c(alpha) * (fast_exp(v) - _c(1.0)))


def _hard_sigmoid(node: Node, const: ConstFn) -> Unary:
    alpha, beta = _attr(node, "alpha", 0.2), _attr(node, "beta", 0.5)
    return lambda v: tirx.min(tirx.max(_c(alpha) * v + _c(beta), _c(0.0)), _c(1.0))


def _hard_swish(node: Node, const: ConstFn) -> Unary:
    return lambda v: v * tirx.min(tirx.max(v * _c(1.0 / 6.0) + _c(0.5), _c(0.0)), _c(1.0))


def _softplus(node: Node, const: ConstFn) -> Unary:
    # max(v, 0) + log(1 + exp(-|v|)): never overflows
    return lambda v: tirx.max(v, _c(0.0)) + tirx.log(_c(1.0) + fast_exp(-tirx.abs(v)))


def _gelu(node: Node, const: ConstFn) -> Unary:
    approximate = node.attr("approximate", "none")
    if isinstance(approximate, bytes):
        approximate = approximate.decode()
    return lambda v: gelu(v, str(approximate))


#: The integer range of each quantized dtype.
QUANT_RANGES: dict[str, tuple[int, int]] = {"uint8": (0, 255), "int8": (-128, 127)}


def _scale_and_zero_point(node: Node, const: ConstFn) -> tuple[float, int] | None:
    """A Quantize/DequantizeLinear node's scalar scale and zero point (0 when absent), or None
    when either is not a constant scalar or the node is blocked."""
    if int(node.attr("block_size", 0) or 0) != 0:
        return None
    scale = _scalar(const(node.inputs[1] if len(node.inputs) > 1 else None))
    zp_v = node.inputs[2] if len(node.inputs) > 2 else None
    zp = 0.0 if zp_v is None else _scalar(const(zp_v))
    if scale is None or zp is None:
        return None
    return scale, int(zp)


def _quantize(node: Node, const: ConstFn) -> Unary | None:
    sz = _scale_and_zero_point(node, const)
    dtype = node.outputs[0].dtype.value if node.outputs and node.outputs[0].dtype else ""
    if sz is None or dtype not in QUANT_RANGES:
        return None
    scale, zp = sz
    lo, hi = QUANT_RANGES[dtype]

    def quantize(v: Expr) -> Expr:
        # Clamped before rounding (the same, the bounds being integers) so that the int32
        # conversion cannot overflow; ``llvm.lrint`` rounds half to even, as np.rint, and
        # vectorizes (one vcvtps2dq), where TVM scalarizes ``nearbyint`` and LLVM then
        # gathers: a lone QuantizeLinear of ResNet-50's input took 7x as long.
        t = tirx.min(tirx.max(v / _c(scale), _c(lo - zp)), _c(hi - zp))
        q = tirx.call_llvm_pure_intrin("int32", "llvm.lrint", t) + tirx.const(zp, "int32")
        return tirx.Cast(dtype, q)

    return quantize


def _dequantize(node: Node, const: ConstFn) -> Unary | None:
    sz = _scale_and_zero_point(node, const)
    out = node.outputs[0].dtype.value if node.outputs and node.outputs[0].dtype else ""
    if sz is None or out != F32:
        return None
    scale, zp = sz
    return lambda v: (tirx.Cast(F32, v) - _c(zp)) * _c(scale)


def _simple(fn: Unary) -> Callable[[Node, ConstFn], Unary]:
    return lambda node, const: fn


#: Unary ops: op -> (node, const) -> builder, or None when a constant it needs is missing.
UNARY_OPS: dict[str, Callable[[Node, ConstFn], Unary | None]] = {
    "Identity": _simple(lambda v: v),
    "Relu": _simple(lambda v: tirx.max(v, _c(0.0))),
    "Neg": _simple(lambda v: -v),
    "Abs": _simple(tirx.abs),
    "Sqrt": _simple(tirx.sqrt),
    "Reciprocal": _simple(lambda v: _c(1.0) / v),
    "Exp": _simple(fast_exp),
    "Log": _simple(tirx.log),
    "Floor": _simple(tirx.floor),
    "Ceil": _simple(tirx.ceil),
    "Tanh": _simple(fast_tanh),
    "Sigmoid": _simple(fast_sigmoid),
    "Erf": _simple(fast_erf),
    "Softsign": _simple(lambda v: v / (_c(1.0) + tirx.abs(v))),
    "lepton.SiLU": _simple(lambda v: v * fast_sigmoid(v)),
    "lepton.Gelu": _gelu,
    "Gelu": _gelu,  # ONNX Gelu-20: the same definition
    "Clip": _clip,
    "Pow": _pow,
    "LeakyRelu": _leaky_relu,
    "Elu": _elu,
    "Selu": _selu,
    "HardSigmoid": _hard_sigmoid,
    "HardSwish": _hard_swish,
    "Softplus": _softplus,
    "QuantizeLinear": _quantize,
    "DequantizeLinear": _dequantize,
}

#: Binary ops with numpy broadcasting: op -> ``(a, b) -> expr``.
BINARY_OPS: dict[str, Binary] = {
    "Add": lambda a, b: a + b,
    "Sub": lambda a, b: a - b,
    "Mul": lambda a, b: a * b,
    "Div": lambda a, b: a / b,
    "Max": tirx.max,
    "Min": tirx.min,
    "Pow": tirx.pow,
    "PRelu": lambda a, b: tirx.Select(a >= _c(0.0), a, a * b),
}


def _no_const(v: Value | None) -> np.ndarray | None:
    return None


def unary_builder(node: Node, const: ConstFn = _no_const) -> Unary | None:
    """The element-wise function of a one-tensor node, or None.

    Args:
        node: the node; its first input is the tensor operand.
        const: the constant value of an input, or None (for Clip bounds, Pow's exponent).

    Returns:
        ``PrimExpr -> PrimExpr`` (float32), or None: the op is not in `UNARY_OPS`, or a
        constant operand it needs (a Clip bound, a scalar Pow exponent) is not constant.
    """
    make = UNARY_OPS.get(node.op)
    if make is None or len(node.outputs) != 1:
        return None
    return make(node, const)


def binary_builder(op: str) -> Binary | None:
    """The element-wise function of a two-tensor op (numpy broadcasting), or None."""
    return BINARY_OPS.get(op)
