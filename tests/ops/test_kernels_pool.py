"""MaxPool, AveragePool, GlobalAveragePool and GlobalMaxPool kernels against onnx.reference /
ONNX Runtime over grids of attributes (ONNX's own node tests for them run in
test_kernels_conv.py).

onnx.reference 1.23 is the first choice of oracle, but it is wrong in several corners, where
ONNX Runtime takes over (each predicate below names them):

* MaxPool with unit strides and dilations takes a generic path that has no Indices output and
  mishandles asymmetric/1-D/3-D padding and ceil_mode; its strided path gets SAME_LOWER wrong
  (floor output size, SAME_UPPER's split) and VALID with ceil_mode (it applies the doc's
  ceil-mode formula, whereas ONNX's shape inference and ONNX Runtime keep the NOTSET rule).
* AveragePool refuses ceil_mode with auto_pad and ignores dilations for VALID and SAME.
* GlobalMaxPool of any input but 4-D ones (it reduces the last two axes, so a 3-D input
  [N, C, L] loses its channel axis).

ONNX Runtime in turn pads SAME for the undilated kernel (MaxPool/AveragePool with dilations),
against the spec's ``(kernel - 1) * dilation + 1``. Where both are wrong, the oracle runs the
same node with the explicit pads the spec prescribes for SAME (restated in this file).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper
from onnx.reference import ReferenceEvaluator

from lepton_compiler.ops import kernels


def _model(
    op: str,
    inputs: Sequence[np.ndarray],
    attrs: dict[str, Any],
    out_dtypes: Sequence[Any],
    opset: int = 22,
) -> onnx.ModelProto:
    names = [f"i{k}" for k in range(len(inputs))]
    outs = [f"o{k}" for k in range(len(out_dtypes))]
    node = helper.make_node(op, names, outs, **attrs)
    graph_inputs = [
        helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
        for n, v in zip(names, inputs, strict=True)
    ]
    graph_outputs = [
        helper.make_tensor_value_info(o, helper.np_dtype_to_tensor_dtype(np.dtype(t)), None)
        for o, t in zip(outs, out_dtypes, strict=True)
    ]
    graph = helper.make_graph([node], "g", graph_inputs, graph_outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def _reference(model: onnx.ModelProto, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    feeds = {f"i{k}": v for k, v in enumerate(inputs)}
    return [np.asarray(v) for v in ReferenceEvaluator(model).run(None, feeds)]


def _ort(model: onnx.ModelProto, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    return session.run(None, {f"i{k}": v for k, v in enumerate(inputs)})


def _close(ours: np.ndarray, expected: np.ndarray, rtol: float = 1e-4, atol: float = 1e-5) -> None:
    assert ours.dtype == expected.dtype, (ours.dtype, expected.dtype)
    assert ours.shape == expected.shape, (ours.shape, expected.shape)
    np.testing.assert_allclose(ours, expected, rtol=rtol, atol=atol)


def _spec_same_pads(attrs: dict[str, Any], spatial: Sequence[int]) -> list[int]:
    """The explicit pads of SAME_UPPER/SAME_LOWER, restated from the spec: ceil(in / stride)
    outputs, ``(out - 1) * stride + (kernel - 1) * dilation + 1 - in`` padding, odd pixel at
    the end (UPPER) or the beginning (LOWER)."""
    n = len(spatial)
    strides = attrs.get("strides", [1] * n)
    dilations = attrs.get("dilations", [1] * n)
    begin, end = [], []
    for size, k, s, d in zip(spatial, attrs["kernel_shape"], strides, dilations, strict=True):
        out = -(-size // s)
        total = max(0, (out - 1) * s + (k - 1) * d + 1 - size)
        small, big = total // 2, total - total // 2
        begin.append(small if attrs["auto_pad"] == "SAME_UPPER" else big)
        end.append(big if attrs["auto_pad"] == "SAME_UPPER" else small)
    return begin + end


def _explicit(attrs: dict[str, Any], spatial: Sequence[int]) -> dict[str, Any]:
    """The same SAME_* pooling with explicit pads (SAME gives ceil(in / stride) outputs
    whatever ceil_mode says, so ceil_mode goes too)."""
    out = {k: v for k, v in attrs.items() if k not in ("auto_pad", "ceil_mode")}
    return {**out, "pads": _spec_same_pads(attrs, spatial)}


_SPATIAL = {1: (9,), 2: (7, 6), 3: (5, 6, 5)}

# (kernel extent, attributes in compact form: one value for every spatial axis)
_GEOMETRIES: list[tuple[int, dict[str, Any]]] = [
    (2, {}),
    (3, {"pads": "sym"}),
    (3, {"pads": "asym", "ceil_mode": 1}),
    (3, {"strides": 2}),
    (3, {"strides": 2, "pads": "sym", "ceil_mode": 1}),
    (2, {"strides": 3, "ceil_mode": 1}),
    (2, {"strides": 2, "dilations": 2, "pads": "asym"}),
    (3, {"dilations": 2, "ceil_mode": 1}),
    (3, {"auto_pad": "SAME_UPPER", "strides": 2}),
    (2, {"auto_pad": "SAME_LOWER", "strides": 2}),
    (2, {"auto_pad": "SAME_UPPER"}),
    (3, {"auto_pad": "SAME_LOWER", "dilations": 2}),
    (3, {"auto_pad": "SAME_UPPER", "strides": 2, "dilations": 2, "ceil_mode": 1}),
    (3, {"auto_pad": "VALID", "strides": 2}),
    (2, {"auto_pad": "VALID", "strides": 2, "ceil_mode": 1}),
    (2, {"auto_pad": "VALID", "dilations": 2}),
]


def _attrs(k: int, geo: dict[str, Any], nsp: int) -> dict[str, Any]:
    attrs: dict[str, Any] = {"kernel_shape": [k] * nsp}
    for name, value in geo.items():
        if name in ("strides", "dilations"):
            attrs[name] = [value] * nsp
        elif name == "pads":
            attrs[name] = [1] * (2 * nsp) if value == "sym" else [1] * nsp + [0] * nsp
            if value == "asym" and nsp == 1:
                attrs[name] = [0, 1]
        else:
            attrs[name] = value
    return attrs


def _grid() -> list[Any]:
    return [
        pytest.param(nsp, k, geo, id=f"{nsp}d-g{i}")
        for nsp, (i, (k, geo)) in itertools.product((1, 2, 3), enumerate(_GEOMETRIES))
    ]


def _unit(attrs: dict[str, Any], name: str) -> bool:
    return all(v == 1 for v in attrs.get(name, [1]))


def _same_with_dilation(attrs: dict[str, Any]) -> bool:
    return attrs.get("auto_pad", "NOTSET").startswith("SAME") and not _unit(attrs, "dilations")


def _pool_oracle(
    op: str,
    x: np.ndarray,
    attrs: dict[str, Any],
    reference_ok: bool,
    out_dtypes: Sequence[Any],
    explicit_runner: Callable[[onnx.ModelProto, Sequence[np.ndarray]], list[np.ndarray]],
) -> list[np.ndarray]:
    """Runs the oracle chosen for ``attrs`` (see the module docstring): onnx.reference where it
    is right, else ONNX Runtime, else (SAME with dilations, both wrong) ``explicit_runner`` on
    the node with the spec's explicit pads."""
    if reference_ok:
        return _reference(_model(op, [x], attrs, out_dtypes), [x])
    if not _same_with_dilation(attrs):
        return _ort(_model(op, [x], attrs, out_dtypes), [x])
    return explicit_runner(_model(op, [x], _explicit(attrs, x.shape[2:]), out_dtypes), [x])


@pytest.mark.parametrize("nsp,k,geo", _grid())
@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
def test_output_shape_matches_onnx_shape_inference(
    nsp: int, k: int, geo: dict[str, Any], op: str
) -> None:
    # The compiler's types come from ONNX shape inference; the kernels must agree with it,
    # including the corners where the two oracles above disagree with each other.
    x = np.zeros((1, 2, *_SPATIAL[nsp]), dtype=np.float32)
    attrs = _attrs(k, geo, nsp)
    model = onnx.shape_inference.infer_shapes(_model(op, [x], attrs, [x.dtype]), strict_mode=True)
    dims = model.graph.output[0].type.tensor_type.shape.dim
    kernel = kernels.max_pool if op == "MaxPool" else kernels.average_pool
    assert kernel([x], attrs, 22)[0].shape == tuple(d.dim_value for d in dims)


# --------------------------------------------------------------------------------------------
# MaxPool


def _max_pool_reference_ok(attrs: dict[str, Any]) -> bool:
    auto_pad = attrs.get("auto_pad", "NOTSET")
    strided_path = not (_unit(attrs, "strides") and _unit(attrs, "dilations"))
    valid_ceil = auto_pad == "VALID" and attrs.get("ceil_mode", 0)
    return strided_path and auto_pad != "SAME_LOWER" and not valid_ceil


@pytest.mark.parametrize("nsp,k,geo", _grid())
@pytest.mark.parametrize("storage_order", [0, 1])
def test_max_pool_values_and_indices(
    nsp: int, k: int, geo: dict[str, Any], storage_order: int
) -> None:
    rng = np.random.default_rng(nsp * 7 + k)
    x = rng.standard_normal((2, 3, *_SPATIAL[nsp])).astype(np.float32)
    attrs = _attrs(k, geo, nsp)
    if storage_order:
        attrs["storage_order"] = 1
    y, indices = kernels.max_pool([x], attrs, 22)
    if not storage_order:
        assert x.reshape(-1)[indices].tolist() == y.tolist()  # the indices point at the maxima
    # Both oracles wrong: ONNX Runtime with explicit pads (onnx.reference's unit-stride path
    # has no Indices).
    ok = _max_pool_reference_ok(attrs)
    expected = _pool_oracle("MaxPool", x, attrs, ok, [x.dtype, np.int64], _ort)
    _close(y, expected[0])
    np.testing.assert_array_equal(indices, expected[1])


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.float16, np.float64])
@pytest.mark.parametrize(
    "attrs",
    [
        {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "strides": [2, 2]},
        {"kernel_shape": [2, 3], "strides": [1, 2], "ceil_mode": 1, "storage_order": 1},
        {"kernel_shape": [3, 3], "auto_pad": "SAME_UPPER", "strides": [2, 2]},
    ],
    ids=["pads", "ceil-column-major", "same"],
)
def test_max_pool_other_dtypes(dtype: Any, attrs: dict[str, Any]) -> None:
    rng = np.random.default_rng(8)
    if np.dtype(dtype).kind == "f":
        x = rng.standard_normal((1, 2, 7, 8)).astype(dtype)
    else:
        info = np.iinfo(dtype)
        x = rng.integers(info.min, info.max, size=(1, 2, 7, 8), endpoint=True).astype(dtype)
    y, indices = kernels.max_pool([x], attrs, 22)
    assert y.dtype == dtype and indices.dtype == np.int64
    # onnx.reference's strided path handles every dtype exactly (no ONNX Runtime kernel for
    # float16 MaxPool on the CPU).
    expected = _reference(_model("MaxPool", [x], attrs, [dtype, np.int64]), [x])
    _close(y, expected[0], rtol=0, atol=0)
    np.testing.assert_array_equal(indices, expected[1])


def test_max_pool_lowest_values_never_pick_the_padding() -> None:
    # Real maxima equal to the padding value (int8 -128, float -inf) must still index a real
    # element; ONNX Runtime returns garbage indices here, onnx.reference is right.
    x8 = np.full((1, 1, 5, 5), -128, dtype=np.int8)
    xf = np.full((1, 1, 5, 5), -np.inf, dtype=np.float32)
    attrs = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "strides": [2, 2]}
    for x in (x8, xf):
        y, indices = kernels.max_pool([x], attrs, 22)
        expected = _reference(_model("MaxPool", [x], attrs, [x.dtype, np.int64]), [x])
        np.testing.assert_array_equal(y, expected[0])
        np.testing.assert_array_equal(indices, expected[1])


def test_max_pool_nan_follows_the_reference() -> None:
    # A NaN that comes first in its window is kept; a later NaN is skipped (strictly-greater
    # updates, as in onnx.reference).
    rng = np.random.default_rng(9)
    x = rng.standard_normal((1, 2, 6, 6)).astype(np.float32)
    x[0, 0, 0, 0] = x[0, 1, 3, 4] = np.nan
    attrs = {"kernel_shape": [2, 2], "strides": [2, 2], "pads": [1, 1, 0, 0]}
    y, indices = kernels.max_pool([x], attrs, 22)
    expected = _reference(_model("MaxPool", [x], attrs, [x.dtype, np.int64]), [x])
    np.testing.assert_array_equal(y, expected[0])
    np.testing.assert_array_equal(indices, expected[1])


def test_max_pool_ties_take_the_first_tap() -> None:
    x = np.zeros((1, 1, 4, 4), dtype=np.float32)
    y, indices = kernels.max_pool([x], {"kernel_shape": [2, 2], "strides": [2, 2]}, 22)
    assert y.shape == (1, 1, 2, 2)
    assert indices.ravel().tolist() == [0, 2, 8, 10]


# --------------------------------------------------------------------------------------------
# AveragePool


def _average_pool_reference_ok(attrs: dict[str, Any]) -> bool:
    if attrs.get("auto_pad", "NOTSET") == "NOTSET":
        return True
    return not attrs.get("ceil_mode", 0) and _unit(attrs, "dilations")


@pytest.mark.parametrize("nsp,k,geo", _grid())
@pytest.mark.parametrize("count_include_pad", [0, 1])
def test_average_pool(nsp: int, k: int, geo: dict[str, Any], count_include_pad: int) -> None:
    rng = np.random.default_rng(nsp * 5 + k)
    x = rng.standard_normal((2, 3, *_SPATIAL[nsp])).astype(np.float32)
    attrs = _attrs(k, geo, nsp)
    if count_include_pad:
        attrs["count_include_pad"] = 1
    (y,) = kernels.average_pool([x], attrs, 22)
    # Both oracles wrong: onnx.reference with explicit pads (right for NOTSET; SAME's pads count
    # as pads for count_include_pad).
    ok = _average_pool_reference_ok(attrs)
    (expected,) = _pool_oracle("AveragePool", x, attrs, ok, [x.dtype], _reference)
    _close(y, expected)


def test_average_pool_ceil_overhang_is_never_counted() -> None:
    # 1-D, 5 inputs, kernel 3, stride 2, pads [1, 1], ceil: windows [-1, 2), [1, 4), [3, 6);
    # the last one reaches 1 past the end padding (never counted even with count_include_pad).
    x = np.arange(1, 6, dtype=np.float32).reshape(1, 1, 5)
    attrs = {"kernel_shape": [3], "strides": [2], "pads": [1, 1], "ceil_mode": 1}
    (excl,) = kernels.average_pool([x], attrs, 22)
    (incl,) = kernels.average_pool([x], {**attrs, "count_include_pad": 1}, 22)
    np.testing.assert_allclose(excl.ravel(), [(1 + 2) / 2, (2 + 3 + 4) / 3, (4 + 5) / 2])
    np.testing.assert_allclose(incl.ravel(), [(1 + 2) / 3, (2 + 3 + 4) / 3, (4 + 5) / 3])


def test_average_pool_float16_accumulates_in_float32() -> None:
    rng = np.random.default_rng(10)
    x = (rng.standard_normal((1, 2, 9, 9)) * 100).astype(np.float16)
    attrs = {"kernel_shape": [5, 5], "pads": [2, 2, 2, 2], "count_include_pad": 1}
    (y,) = kernels.average_pool([x], attrs, 22)
    assert y.dtype == np.float16
    wide = x.astype(np.float32)
    (expected,) = _reference(_model("AveragePool", [wide], attrs, [np.float32]), [wide])
    np.testing.assert_allclose(y.astype(np.float32), expected, rtol=2e-3, atol=2e-2)


# --------------------------------------------------------------------------------------------
# Global pooling


@pytest.mark.parametrize("rank", [3, 4, 5, 6])
@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.float64])
def test_global_average_pool(rank: int, dtype: Any) -> None:
    rng = np.random.default_rng(rank)
    x = rng.standard_normal((2, 3, 5, 4, 3, 2)[:rank]).astype(dtype)
    (y,) = kernels.global_average_pool([x], {}, 22)
    assert y.dtype == dtype and y.shape == (2, 3) + (1,) * (rank - 2)
    wide = x.astype(np.float64)
    (expected,) = _reference(_model("GlobalAveragePool", [wide], {}, [np.float64]), [wide])
    tol = 1e-3 if dtype == np.float16 else 1e-6
    np.testing.assert_allclose(y.astype(np.float64), expected, rtol=tol, atol=tol)


@pytest.mark.parametrize("rank", [3, 4, 5])
@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.float64])
def test_global_max_pool(rank: int, dtype: Any) -> None:
    rng = np.random.default_rng(rank)
    x = rng.standard_normal((2, 3, 5, 4, 3)[:rank]).astype(dtype)
    (y,) = kernels.global_max_pool([x], {}, 22)
    assert y.dtype == dtype and y.shape == (2, 3) + (1,) * (rank - 2)
    # onnx.reference 1.23 reduces axes (rank - 2, rank - 1), right for 4-D input only: ONNX
    # Runtime for the other ranks. ONNX Runtime has no float16 or float64 GlobalMaxPool:
    # float16 goes through float32 (the maximum is exact there); float64 through onnx.reference
    # on the input with its spatial axes folded into a 4-D [N, C, prod(spatial), 1].
    if rank == 4:
        (expected,) = _reference(_model("GlobalMaxPool", [x], {}, [dtype]), [x])
    elif dtype == np.float64:
        folded = x.reshape(*x.shape[:2], -1, 1)
        (expected,) = _reference(_model("GlobalMaxPool", [folded], {}, [dtype]), [folded])
        expected = expected.reshape(y.shape)
    else:
        wide = x.astype(np.float32)
        (expected,) = _ort(_model("GlobalMaxPool", [wide], {}, [np.float32]), [wide])
        expected = expected.astype(dtype)
    _close(y, expected, rtol=0, atol=0)


def test_global_max_pool_int8() -> None:
    x = np.arange(-60, 60, dtype=np.int8).reshape(2, 3, 20)
    (y,) = kernels.global_max_pool([x], {}, 22)
    assert y.dtype == np.int8
    np.testing.assert_array_equal(y.ravel(), x.max(axis=2).ravel())
