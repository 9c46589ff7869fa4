"""Element types of tensors in the IR.

One `DType` per ONNX tensor element type, with the ONNX enum code kept as data so that the
IR needs no `onnx` import. NumPy dtypes for the exotic types (bfloat16, float8, int4, ...)
come from `ml_dtypes`, the package ONNX itself uses for them.
"""

from __future__ import annotations

import enum
from functools import cache

import numpy as np


class DType(enum.Enum):
    """A tensor element type. The value is the canonical lower-case name."""

    FLOAT32 = "float32"
    UINT8 = "uint8"
    INT8 = "int8"
    UINT16 = "uint16"
    INT16 = "int16"
    INT32 = "int32"
    INT64 = "int64"
    STRING = "string"
    BOOL = "bool"
    FLOAT16 = "float16"
    FLOAT64 = "float64"
    UINT32 = "uint32"
    UINT64 = "uint64"
    COMPLEX64 = "complex64"
    COMPLEX128 = "complex128"
    BFLOAT16 = "bfloat16"
    FLOAT8E4M3FN = "float8e4m3fn"
    FLOAT8E4M3FNUZ = "float8e4m3fnuz"
    FLOAT8E5M2 = "float8e5m2"
    FLOAT8E5M2FNUZ = "float8e5m2fnuz"
    UINT4 = "uint4"
    INT4 = "int4"
    FLOAT4E2M1 = "float4e2m1"
    FLOAT8E8M0 = "float8e8m0"
    UINT2 = "uint2"
    INT2 = "int2"
    FLOAT6E2M3 = "float6e2m3"
    FLOAT6E3M2 = "float6e3m2"

    def __repr__(self) -> str:
        return self.value

    __str__ = __repr__

    @property
    def onnx_code(self) -> int:
        """The `TensorProto.DataType` code of this type."""
        return _ONNX_CODES[self]

    @classmethod
    def from_onnx(cls, code: int) -> DType:
        """The DType for an ONNX `TensorProto.DataType` code.

        Raises:
            ValueError: the code is unknown (UNDEFINED or newer than this table).
        """
        try:
            return _FROM_CODE[code]
        except KeyError:
            raise ValueError(f"unknown ONNX tensor element type code {code}") from None

    @classmethod
    def from_numpy(cls, dtype: np.dtype | type) -> DType:
        """The DType of a NumPy dtype (object and str arrays map to STRING)."""
        dt = np.dtype(dtype)
        if dt.kind in "OUS":
            return cls.STRING
        name = dt.name
        for member in cls:
            if member is not cls.STRING and _np_name(member) == name:
                return member
        raise ValueError(f"NumPy dtype {dt} has no tensor element type")

    @property
    def numpy(self) -> np.dtype:
        """The NumPy dtype that holds this type (object for strings)."""
        return _numpy_dtype(self)

    @property
    def is_float(self) -> bool:
        """True for real floating-point types of every width."""
        return self.value.startswith(("float", "bfloat"))

    @property
    def is_integer(self) -> bool:
        """True for signed and unsigned integer types."""
        return self.value.startswith(("int", "uint"))

    @property
    def bits(self) -> int:
        """Storage bits per element (0 for strings)."""
        return _BITS[self]


_ONNX_CODES: dict[DType, int] = {
    DType.FLOAT32: 1, DType.UINT8: 2, DType.INT8: 3, DType.UINT16: 4, DType.INT16: 5,
    DType.INT32: 6, DType.INT64: 7, DType.STRING: 8, DType.BOOL: 9, DType.FLOAT16: 10,
    DType.FLOAT64: 11, DType.UINT32: 12, DType.UINT64: 13, DType.COMPLEX64: 14,
    DType.COMPLEX128: 15, DType.BFLOAT16: 16, DType.FLOAT8E4M3FN: 17, DType.FLOAT8E4M3FNUZ: 18,
    DType.FLOAT8E5M2: 19, DType.FLOAT8E5M2FNUZ: 20, DType.UINT4: 21, DType.INT4: 22,
    DType.FLOAT4E2M1: 23, DType.FLOAT8E8M0: 24, DType.UINT2: 25, DType.INT2: 26,
    DType.FLOAT6E2M3: 27, DType.FLOAT6E3M2: 28,
}  # fmt: skip
_FROM_CODE = {code: dt for dt, code in _ONNX_CODES.items()}

_BITS: dict[DType, int] = {
    DType.FLOAT32: 32, DType.UINT8: 8, DType.INT8: 8, DType.UINT16: 16, DType.INT16: 16,
    DType.INT32: 32, DType.INT64: 64, DType.STRING: 0, DType.BOOL: 8, DType.FLOAT16: 16,
    DType.FLOAT64: 64, DType.UINT32: 32, DType.UINT64: 64, DType.COMPLEX64: 64,
    DType.COMPLEX128: 128, DType.BFLOAT16: 16, DType.FLOAT8E4M3FN: 8, DType.FLOAT8E4M3FNUZ: 8,
    DType.FLOAT8E5M2: 8, DType.FLOAT8E5M2FNUZ: 8, DType.UINT4: 4, DType.INT4: 4,
    DType.FLOAT4E2M1: 4, DType.FLOAT8E8M0: 8, DType.UINT2: 2, DType.INT2: 2,
    DType.FLOAT6E2M3: 6, DType.FLOAT6E3M2: 6,
}  # fmt: skip

_ML_DTYPES = {
    DType.BFLOAT16: "bfloat16", DType.FLOAT8E4M3FN: "float8_e4m3fn",
    DType.FLOAT8E4M3FNUZ: "float8_e4m3fnuz", DType.FLOAT8E5M2: "float8_e5m2",
    DType.FLOAT8E5M2FNUZ: "float8_e5m2fnuz", DType.UINT4: "uint4", DType.INT4: "int4",
    DType.FLOAT4E2M1: "float4_e2m1fn", DType.FLOAT8E8M0: "float8_e8m0fnu", DType.UINT2: "uint2",
    DType.INT2: "int2", DType.FLOAT6E2M3: "float6_e2m3fn", DType.FLOAT6E3M2: "float6_e3m2fn",
}  # fmt: skip


def _np_name(dt: DType) -> str:
    if dt in _ML_DTYPES:
        return _ML_DTYPES[dt]
    return {DType.STRING: "object"}.get(dt, dt.value)


@cache
def _numpy_dtype(dt: DType) -> np.dtype:
    if dt is DType.STRING:
        return np.dtype(object)
    if dt in _ML_DTYPES:
        import ml_dtypes

        return np.dtype(getattr(ml_dtypes, _ML_DTYPES[dt]))
    return np.dtype(dt.value)
