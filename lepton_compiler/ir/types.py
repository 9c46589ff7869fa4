"""Types of IR values: tensors (with symbolic dims), sequences and optionals.

Types are frozen and compared by value. A dimension is an `int`, a symbolic name such as
``"batch"`` (equal names mean equal sizes), or ``None`` when nothing is known about it. A shape
of ``None`` means even the rank is unknown.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeAlias

import numpy as np

from .dtypes import DType

Dim: TypeAlias = int | str | None
Shape: TypeAlias = tuple[Dim, ...]


@dataclass(frozen=True)
class TensorType:
    """A tensor: element type, shape (or None for unknown rank) and an optional layout tag.

    Attributes:
        dtype: element type.
        shape: one entry per axis: an int, a symbolic name, or None for an unknown size.
        layout: a layout tag such as ``"NCHW"`` or ``"NCHW16c"`` set by layout passes; None
            means the plain ONNX layout.
    """

    dtype: DType
    shape: Shape | None = None
    layout: str | None = None

    def __post_init__(self) -> None:
        if self.shape is not None:
            dims = tuple(_norm_dim(d) for d in self.shape)
            object.__setattr__(self, "shape", dims)

    @property
    def rank(self) -> int | None:
        """Number of axes, or None when unknown."""
        return None if self.shape is None else len(self.shape)

    @property
    def is_static(self) -> bool:
        """True when every dim is a known integer."""
        return self.shape is not None and all(isinstance(d, int) for d in self.shape)

    @property
    def numel(self) -> int | None:
        """Number of elements when the shape is static, else None."""
        if not self.is_static:
            return None
        return int(np.prod(self.shape, dtype=np.int64))  # type: ignore[arg-type]

    @property
    def nbytes(self) -> int | None:
        """Storage size in bytes when the shape is static, else None."""
        n = self.numel
        return None if n is None else (n * self.dtype.bits + 7) // 8

    def with_shape(self, shape: Shape | None) -> TensorType:
        """A copy with another shape."""
        return TensorType(self.dtype, shape, self.layout)

    def __str__(self) -> str:
        if self.shape is None:
            dims = "?"
        else:
            dims = "[" + ",".join("?" if d is None else str(d) for d in self.shape) + "]"
        lay = f"@{self.layout}" if self.layout else ""
        return f"{self.dtype}{dims}{lay}"


@dataclass(frozen=True)
class SequenceType:
    """An ONNX sequence of values of one type."""

    elem: ValueType | None

    def __str__(self) -> str:
        return f"seq<{self.elem if self.elem is not None else '?'}>"


@dataclass(frozen=True)
class OptionalType:
    """An ONNX optional: a value of `elem` type, or nothing."""

    elem: ValueType | None

    def __str__(self) -> str:
        return f"opt<{self.elem if self.elem is not None else '?'}>"


ValueType: TypeAlias = TensorType | SequenceType | OptionalType


@dataclass(frozen=True, eq=False)
class QuantParams:
    """Affine quantization of a value: ``real = (q - zero_point) * scale``.

    Attributes:
        scale: scalar or 1-D per-channel scales (float32).
        zero_point: scalar or 1-D per-channel zero points, in the quantized dtype.
        axis: the channel axis for per-channel parameters, None for per-tensor.
    """

    scale: np.ndarray
    zero_point: np.ndarray
    axis: int | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, QuantParams):
            return NotImplemented
        return (
            self.axis == other.axis
            and np.array_equal(self.scale, other.scale)
            and np.array_equal(self.zero_point, other.zero_point)
        )

    __hash__ = None  # type: ignore[assignment]


def tensor_type_of(array: np.ndarray) -> TensorType:
    """The exact type of a NumPy array."""
    return TensorType(DType.from_numpy(array.dtype), tuple(int(d) for d in array.shape))


def _norm_dim(d: Any) -> Dim:
    if d is None or isinstance(d, str):
        return d
    if isinstance(d, (int, np.integer)) and not isinstance(d, bool):
        return int(d)
    raise TypeError(f"a dim must be int, str or None, got {d!r}")


def merge_types(stored: ValueType | None, inferred: ValueType | None) -> ValueType | None:
    """Combine two types of the same value, keeping the more specific information.

    Returns None when the two conflict (different dtype, rank or known sizes).
    """
    if stored is None:
        return inferred
    if inferred is None:
        return stored
    if type(stored) is not type(inferred):
        return None
    if isinstance(stored, TensorType):
        assert isinstance(inferred, TensorType)
        if stored.dtype != inferred.dtype:
            return None
        if stored.shape is None:
            if inferred.layout == stored.layout:
                return inferred
            return stored.with_shape(inferred.shape)
        if inferred.shape is None:
            return stored
        if len(stored.shape) != len(inferred.shape):
            return None
        dims: list[Dim] = []
        for a, b in zip(stored.shape, inferred.shape, strict=True):
            if isinstance(a, int) and isinstance(b, int) and a != b:
                return None
            if isinstance(a, int) or b is None:
                dims.append(a)
            elif isinstance(b, int) or a is None:
                dims.append(b)
            else:
                dims.append(a)
        return stored.with_shape(tuple(dims))
    elem = merge_types(stored.elem, inferred.elem)  # type: ignore[union-attr]
    if elem is None and (stored.elem is not None or inferred.elem is not None):  # type: ignore[union-attr]
        return None
    return type(stored)(elem)
