"""Types and element types: TensorType dims, merge_types, QuantParams and DType mappings."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import onnx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from onnx import helper

from lepton_compiler.ir import (
    DType,
    OptionalType,
    QuantParams,
    SequenceType,
    TensorType,
    merge_types,
    tensor_type_of,
)

F32 = DType.FLOAT32


# -- TensorType --------------------------------------------------------------------------------
def test_dims_are_normalized() -> None:
    t = TensorType(F32, [np.int64(2), "batch", None])
    assert t.shape == (2, "batch", None)
    assert type(t.shape[0]) is int
    assert t == TensorType(F32, (2, "batch", None))
    assert hash(t) == hash(TensorType(F32, (2, "batch", None)))


@pytest.mark.parametrize("bad", [True, 2.0, [1]])
def test_bad_dims_are_refused(bad: object) -> None:
    with pytest.raises(TypeError, match="a dim must be int, str or None"):
        TensorType(F32, (1, bad))


def test_rank_static_numel_nbytes() -> None:
    t = TensorType(F32, (2, 3, 4))
    assert (t.rank, t.is_static, t.numel, t.nbytes) == (3, True, 24, 96)
    sym = TensorType(F32, ("n", 3))
    assert (sym.rank, sym.is_static, sym.numel, sym.nbytes) == (2, False, None, None)
    unknown = TensorType(F32, None)
    assert (unknown.rank, unknown.is_static, unknown.numel) == (None, False, None)
    scalar = TensorType(DType.INT64, ())
    assert (scalar.rank, scalar.is_static, scalar.numel, scalar.nbytes) == (0, True, 1, 8)
    # Sub-byte types pack: three int4 values need two bytes.
    assert TensorType(DType.INT4, (3,)).nbytes == 2
    assert TensorType(DType.UINT2, (5,)).nbytes == 2


def test_with_shape_keeps_dtype_and_layout() -> None:
    t = TensorType(DType.INT8, (1, 2), layout="NHWC")
    u = t.with_shape(("n", 2))
    assert u == TensorType(DType.INT8, ("n", 2), layout="NHWC")
    assert t.shape == (1, 2), "types are immutable"


def test_tensor_type_of_arrays() -> None:
    assert tensor_type_of(np.zeros((2, 3), np.float16)) == TensorType(DType.FLOAT16, (2, 3))
    assert tensor_type_of(np.array(["a"], dtype=object)) == TensorType(DType.STRING, (1,))
    assert tensor_type_of(np.array(1, ml_dtypes.bfloat16)) == TensorType(DType.BFLOAT16, ())


def test_type_strings() -> None:
    assert str(TensorType(F32, ("b", None, 3))) == "float32[b,?,3]"
    assert str(TensorType(DType.INT64, ())) == "int64[]"
    assert str(TensorType(F32, None)) == "float32?"
    assert str(TensorType(F32, (1, 2), layout="NHWC")) == "float32[1,2]@NHWC"
    assert str(SequenceType(TensorType(DType.INT8, (2,)))) == "seq<int8[2]>"
    assert str(OptionalType(None)) == "opt<?>"


# -- merge_types -------------------------------------------------------------------------------
def test_merge_keeps_the_more_specific_dims() -> None:
    stored = TensorType(F32, ("batch", None, 3))
    inferred = TensorType(F32, (None, 4, 3))
    assert merge_types(stored, inferred) == TensorType(F32, ("batch", 4, 3))
    assert merge_types(TensorType(F32, ("n",)), TensorType(F32, (5,))) == TensorType(F32, (5,))
    assert merge_types(TensorType(F32, (5,)), TensorType(F32, ("n",))) == TensorType(F32, (5,))


def test_merge_with_unknowns() -> None:
    t = TensorType(F32, (2,))
    assert merge_types(None, t) == t and merge_types(t, None) == t
    assert merge_types(TensorType(F32, None), t) == t
    assert merge_types(t, TensorType(F32, None)) == t
    laid = TensorType(F32, None, layout="NHWC")
    assert merge_types(laid, t) == TensorType(F32, (2,), layout="NHWC")


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (TensorType(F32, (2,)), TensorType(DType.INT32, (2,))),
        (TensorType(F32, (2,)), TensorType(F32, (3,))),
        (TensorType(F32, (2,)), TensorType(F32, (2, 1))),
        (TensorType(F32, (2,)), SequenceType(TensorType(F32, (2,)))),
        (SequenceType(TensorType(F32, (2,))), SequenceType(TensorType(DType.INT8, (2,)))),
        (OptionalType(TensorType(F32, ())), OptionalType(TensorType(F32, (1,)))),
    ],
)
def test_merge_conflicts_give_none(a: object, b: object) -> None:
    assert merge_types(a, b) is None  # type: ignore[arg-type]
    assert merge_types(b, a) is None  # type: ignore[arg-type]


def test_merge_sequences_and_optionals() -> None:
    inner = TensorType(F32, ("n",))
    assert merge_types(SequenceType(None), SequenceType(inner)) == SequenceType(inner)
    assert merge_types(OptionalType(inner), OptionalType(None)) == OptionalType(inner)
    assert merge_types(
        SequenceType(TensorType(F32, (None,))), SequenceType(TensorType(F32, (3,)))
    ) == SequenceType(TensorType(F32, (3,)))


_dims = st.one_of(st.integers(0, 4), st.sampled_from(["a", "b"]), st.none())
_shapes = st.one_of(st.none(), st.lists(_dims, max_size=3).map(tuple))
_types = st.builds(TensorType, st.sampled_from([F32, DType.INT8]), _shapes)


@given(_types, _types)
def test_merge_properties(a: TensorType, b: TensorType) -> None:
    assert merge_types(a, a) == a
    ab, ba = merge_types(a, b), merge_types(b, a)
    assert (ab is None) == (ba is None), "conflicts are symmetric"
    if ab is not None:
        assert ab.dtype == a.dtype
        # The merge agrees with both: merging it with either input changes nothing more.
        assert merge_types(ab, a) == ab and merge_types(ab, b) == ab
        if a.shape is not None and b.shape is not None:
            for x, y, m in zip(a.shape, b.shape, ab.shape, strict=True):
                if isinstance(x, int) or isinstance(y, int):
                    assert m == (x if isinstance(x, int) else y)


# -- QuantParams -------------------------------------------------------------------------------
def test_quant_params_compare_by_content() -> None:
    a = QuantParams(np.float32(0.5), np.int8(3))
    b = QuantParams(np.array(0.5, np.float32), np.array(3, np.int8), extra={"note": 1})
    assert a == b
    assert a != QuantParams(np.float32(0.5), np.int8(4))
    per_ch = QuantParams(np.array([0.1, 0.2], np.float32), np.zeros(2, np.int8), axis=0)
    assert per_ch != QuantParams(np.array([0.1, 0.2], np.float32), np.zeros(2, np.int8), axis=1)
    with pytest.raises(TypeError):
        hash(a)


# -- DType -------------------------------------------------------------------------------------
@pytest.mark.parametrize("dt", list(DType), ids=str)
def test_dtype_onnx_code_round_trip(dt: DType) -> None:
    code = dt.onnx_code
    assert DType.from_onnx(code) is dt
    # The code is the one ONNX itself uses for this type.
    onnx_name = onnx.TensorProto.DataType.Name(code)
    assert {"FLOAT": "float32", "DOUBLE": "float64"}.get(onnx_name, onnx_name.lower()) == dt.value


def test_every_onnx_element_type_has_a_dtype() -> None:
    codes = [c for c in onnx.TensorProto.DataType.values() if c != onnx.TensorProto.UNDEFINED]
    assert sorted(DType.from_onnx(c).onnx_code for c in codes) == sorted(codes)
    assert len(codes) == len(DType)


@pytest.mark.parametrize("dt", [d for d in DType if d is not DType.STRING], ids=str)
def test_dtype_numpy_round_trip_matches_onnx(dt: DType) -> None:
    np_dtype = dt.numpy
    assert DType.from_numpy(np_dtype) is dt
    assert np_dtype == helper.tensor_dtype_to_np_dtype(dt.onnx_code)
    assert np.zeros(1, np_dtype).dtype.itemsize * 8 >= dt.bits


def test_exotic_numpy_dtypes() -> None:
    assert DType.BFLOAT16.numpy == np.dtype(ml_dtypes.bfloat16)
    assert DType.FLOAT8E4M3FN.numpy == np.dtype(ml_dtypes.float8_e4m3fn)
    assert DType.FLOAT8E5M2FNUZ.numpy == np.dtype(ml_dtypes.float8_e5m2fnuz)
    assert DType.INT4.numpy == np.dtype(ml_dtypes.int4)
    assert DType.UINT4.numpy == np.dtype(ml_dtypes.uint4)
    assert DType.from_numpy(ml_dtypes.float8_e5m2) is DType.FLOAT8E5M2
    assert DType.from_numpy(ml_dtypes.int4) is DType.INT4
    assert DType.from_numpy(np.float32) is DType.FLOAT32
    assert DType.from_numpy(np.bool_) is DType.BOOL


def test_string_dtype() -> None:
    assert DType.STRING.numpy == np.dtype(object)
    assert DType.from_numpy(np.dtype("<U3")) is DType.STRING
    assert DType.from_numpy(object) is DType.STRING
    assert DType.STRING.bits == 0


def test_unknown_codes_and_dtypes_are_errors() -> None:
    with pytest.raises(ValueError, match="unknown ONNX tensor element type code 0"):
        DType.from_onnx(0)
    with pytest.raises(ValueError, match="unknown ONNX tensor element type code 999"):
        DType.from_onnx(999)
    with pytest.raises(ValueError, match="has no tensor element type"):
        DType.from_numpy(np.dtype("datetime64[s]"))


def test_dtype_classification() -> None:
    floats = {d for d in DType if d.is_float}
    ints = {d for d in DType if d.is_integer}
    assert {DType.FLOAT32, DType.FLOAT16, DType.BFLOAT16, DType.FLOAT8E4M3FN} <= floats
    assert {DType.INT4, DType.UINT2, DType.INT64, DType.UINT8} <= ints
    assert not floats & ints
    assert DType.BOOL not in floats | ints and DType.COMPLEX64 not in floats | ints
    assert str(DType.FLOAT32) == repr(DType.FLOAT32) == "float32"
    assert [DType.INT4.bits, DType.BFLOAT16.bits, DType.COMPLEX128.bits] == [4, 16, 128]
