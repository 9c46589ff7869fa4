"""Arithmetic, comparison, logic and matrix-product ops.

MatMul and Gemm use BLAS through numpy; element-wise ops keep ONNX's reference kernels and
are tagged by fusion category.
"""

from __future__ import annotations

from . import kernels
from ._kernel_adapter import adapt
from .registry import override

override("MatMul", category="complex", reference=adapt(kernels.matmul))
override("Erf", category="elementwise", reference=adapt(kernels.erf))
override("Gemm", category="complex", reference=adapt(kernels.gemm))
for _op in ("MatMulInteger", "Einsum", "Det"):
    override(_op, category="complex")

for _op in ("Add", "Mul", "Max", "Min", "Sum", "Mean", "And", "Or", "Xor", "Equal",
            "BitwiseAnd", "BitwiseOr", "BitwiseXor"):  # fmt: skip
    override(_op, category="broadcast", commutative=True)
for _op in ("Sub", "Div", "Pow", "Mod", "Greater", "Less", "GreaterOrEqual", "LessOrEqual",
            "BitShift", "Where", "Clip"):  # fmt: skip
    override(_op, category="broadcast")
for _op in ("Abs", "Neg", "Exp", "Log", "Sqrt", "Reciprocal", "Floor", "Ceil", "Round", "Sign",
            "Tanh", "Sin", "Cos", "Tan", "Asin", "Acos", "Atan", "Sinh", "Cosh", "Asinh",
            "Acosh", "Atanh", "Not", "BitwiseNot", "IsNaN", "IsInf", "Cast", "CastLike",
            "Identity"):  # fmt: skip
    override(_op, category="elementwise")
