"""Quantization ops: QuantizeLinear/DequantizeLinear and the QOperator family.

ONNX's reference kernels are exact for these (integer arithmetic, round-half-to-even); the
quantization passes canonicalize QOperator graphs into QDQ form later.
"""

from __future__ import annotations

from .registry import override

for _op in ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"):
    override(_op, category="elementwise")
for _op in ("QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger"):
    override(_op, category="complex")
