"""Data-movement ops: reshapes, transposes, slicing, gathering, concatenation, shape queries.

All keep ONNX's reference kernels; this module records their fusion category (injective:
each output element reads one input element).
"""

from __future__ import annotations

from .registry import override

for _op in ("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Expand", "Slice",
            "Gather", "GatherElements", "GatherND", "Concat", "Split", "Tile", "Pad",
            "DepthToSpace", "SpaceToDepth", "Resize", "Upsample", "ReverseSequence", "Trilu",
            "Shape", "Size", "ConstantOfShape", "Range", "EyeLike", "OneHot"):  # fmt: skip
    override(_op, category="injective")
for _op in ("ScatterElements", "ScatterND", "NonZero", "Compress", "Unique", "TopK",
            "NonMaxSuppression"):  # fmt: skip
    override(_op, category="opaque")
