"""Conv and ConvTranspose kernels against onnx.reference / ONNX Runtime, plus ONNX's own backend
node tests for every op that has a fast kernel (Conv, ConvTranspose, MaxPool, AveragePool,
GlobalAveragePool, GlobalMaxPool, MatMul, Gemm, BatchNormalization).

Each grid case builds a single-node ONNX model and runs it through the oracle. onnx.reference
is the oracle for Conv (it is right everywhere; ONNX Runtime refuses SAME padding with
dilations). For ConvTranspose, onnx.reference 1.23 is wrong or fails with ``group > 1`` (it
reshapes the per-group results wrongly and adds the first group's bias to every group), for
``output_shape`` with NOTSET/VALID padding (it crops only at the end instead of splitting the
total padding as the spec says) and fails for VALID with output_shape; those cases go to ONNX
Runtime.
"""

from __future__ import annotations

import glob
import importlib
import itertools
import warnings
from collections.abc import Sequence
from functools import cache
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from lepton_compiler.ops import kernels

# --------------------------------------------------------------------------------------------
# single-node models and the two oracles


def _model(
    op: str,
    inputs: Sequence[np.ndarray | None],
    attrs: dict[str, Any],
    n_out: int = 1,
    opset: int = 22,
    out_dtypes: Sequence[Any] | None = None,
) -> onnx.ModelProto:
    names = [f"i{k}" if v is not None else "" for k, v in enumerate(inputs)]
    outs = [f"o{k}" for k in range(n_out)]
    node = helper.make_node(op, names, outs, **attrs)
    graph_inputs = [
        helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
        for n, v in zip(names, inputs, strict=True)
        if v is not None
    ]
    dtypes = out_dtypes or [inputs[0].dtype] * n_out  # type: ignore[union-attr]
    graph_outputs = [
        helper.make_tensor_value_info(o, helper.np_dtype_to_tensor_dtype(np.dtype(t)), None)
        for o, t in zip(outs, dtypes, strict=True)
    ]
    graph = helper.make_graph([node], "g", graph_inputs, graph_outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def _feeds(inputs: Sequence[np.ndarray | None]) -> dict[str, np.ndarray]:
    return {f"i{k}": v for k, v in enumerate(inputs) if v is not None}


def _reference(model: onnx.ModelProto, inputs: Sequence[np.ndarray | None]) -> list[np.ndarray]:
    return [np.asarray(v) for v in ReferenceEvaluator(model).run(None, _feeds(inputs))]


def _ort(model: onnx.ModelProto, inputs: Sequence[np.ndarray | None]) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    return session.run(None, _feeds(inputs))


def _inferred_shape(model: onnx.ModelProto) -> tuple[int, ...]:
    """The first output's shape by ONNX shape inference (where the compiler's types come from)."""
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    return tuple(d.dim_value for d in inferred.graph.output[0].type.tensor_type.shape.dim)


def _rand(rng: np.random.Generator, *shape: int, dtype: Any = np.float32) -> np.ndarray:
    return rng.standard_normal(shape).astype(dtype)


def _close(ours: np.ndarray, expected: np.ndarray, rtol: float = 1e-4, atol: float = 1e-4) -> None:
    assert ours.dtype == expected.dtype, (ours.dtype, expected.dtype)
    assert ours.shape == expected.shape, (ours.shape, expected.shape)
    np.testing.assert_allclose(ours, expected, rtol=rtol, atol=atol)


# --------------------------------------------------------------------------------------------
# Conv

_SPATIAL = {1: (9,), 2: (8, 7), 3: (6, 5, 4)}

# (kernel extent, attributes): every padding mode, strides, dilations, 1x1 fast paths.
_CONV_GEOMETRIES: list[tuple[int, dict[str, Any]]] = [
    (3, {}),
    (3, {"strides": 2, "pads": "sym"}),
    (3, {"dilations": 2, "pads": "asym"}),
    (2, {"strides": 2, "dilations": 2, "pads": "asym"}),
    (3, {"auto_pad": "SAME_UPPER", "strides": 2}),
    (3, {"auto_pad": "SAME_LOWER", "strides": 2, "dilations": 2}),
    (2, {"auto_pad": "SAME_UPPER"}),
    (2, {"auto_pad": "SAME_LOWER", "strides": 3}),
    (3, {"auto_pad": "VALID", "strides": 3}),
    (1, {}),
    (1, {"strides": 2}),
    (1, {"pads": "sym"}),
]

# name: (C, M, group)
_CONV_GROUPS = {
    "dense": (3, 4, 1),
    "grouped": (4, 6, 2),
    "depthwise": (4, 4, 4),
    "depthwise_x2": (3, 6, 3),
    "one_channel": (1, 4, 1),
}


def _spatial_attrs(attrs: dict[str, Any], nsp: int) -> dict[str, Any]:
    """Expand the compact grid notation into ONNX attributes for ``nsp`` spatial axes."""
    out: dict[str, Any] = {}
    for name, value in attrs.items():
        if name in ("strides", "dilations", "output_padding"):
            out[name] = [value] * nsp
        elif name == "pads":
            out[name] = [1] * (2 * nsp) if value == "sym" else [1] * nsp + [0] * nsp
            if value == "asym" and nsp == 1:
                out[name] = [0, 1]
        else:
            out[name] = value
    return out


def _conv_cases() -> list[Any]:
    cases = []
    for nsp, (geo_id, (k, geo)), group in itertools.product(
        (1, 2, 3), enumerate(_CONV_GEOMETRIES), _CONV_GROUPS
    ):
        # Bias and an explicit kernel_shape alternate so both forms are covered everywhere.
        bias = (geo_id + nsp) % 2 == 0
        with_kernel_shape = geo_id % 3 == 0
        cases.append(
            pytest.param(nsp, k, geo, group, bias, with_kernel_shape,
                         id=f"{nsp}d-g{geo_id}-{group}-{'bias' if bias else 'nobias'}")
        )  # fmt: skip
    return cases


@pytest.mark.parametrize("nsp,k,geo,group,bias,with_kernel_shape", _conv_cases())
def test_conv_matches_reference(
    nsp: int, k: int, geo: dict[str, Any], group: str, bias: bool, with_kernel_shape: bool
) -> None:
    rng = np.random.default_rng(nsp * 100 + k)
    c, m, g = _CONV_GROUPS[group]
    x = _rand(rng, 2, c, *_SPATIAL[nsp])
    w = _rand(rng, m, c // g, *([k] * nsp))
    b = _rand(rng, m) if bias else None
    attrs = _spatial_attrs(geo, nsp)
    if g != 1:
        attrs["group"] = g
    if with_kernel_shape:
        attrs["kernel_shape"] = [k] * nsp
    inputs = [x, w, b]
    (ours,) = kernels.conv(inputs if bias else [x, w], attrs, 22)
    model = _model("Conv", inputs, attrs)
    (expected,) = _reference(model, inputs)
    _close(ours, expected)
    assert ours.shape == _inferred_shape(model)


@pytest.mark.parametrize(
    "attrs",
    [{}, {"pads": [1, 1, 1, 1], "strides": [2, 2]}, {"group": 4, "auto_pad": "SAME_UPPER"}],
    ids=["plain", "strided", "depthwise"],
)
def test_conv_float16_keeps_dtype_and_accumulates_in_float32(attrs: dict[str, Any]) -> None:
    rng = np.random.default_rng(1)
    x = _rand(rng, 1, 4, 9, 9, dtype=np.float16)
    w = _rand(rng, 8, 4 // attrs.get("group", 1), 3, 3, dtype=np.float16)
    b = _rand(rng, 8, dtype=np.float16)
    (ours,) = kernels.conv([x, w, b], attrs, 22)
    assert ours.dtype == np.float16
    wide = [x.astype(np.float32), w.astype(np.float32), b.astype(np.float32)]
    (expected,) = _reference(_model("Conv", wide, attrs), wide)
    np.testing.assert_allclose(ours.astype(np.float32), expected, rtol=1e-2, atol=1e-2)


def test_conv_float64_keeps_precision() -> None:
    rng = np.random.default_rng(2)
    x, w = _rand(rng, 1, 3, 7, 7, dtype=np.float64), _rand(rng, 5, 3, 3, 3, dtype=np.float64)
    attrs = {"pads": [1, 1, 1, 1]}
    (ours,) = kernels.conv([x, w], attrs, 22)
    (expected,) = _reference(_model("Conv", [x, w], attrs), [x, w])
    _close(ours, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("group", [1, 2])
def test_conv_builds_columns_a_few_images_at_a_time(
    monkeypatch: pytest.MonkeyPatch, group: int
) -> None:
    # (the package re-exports the function `conv`, which shadows the module of that name)
    conv_module = importlib.import_module("lepton_compiler.ops.kernels.conv")
    monkeypatch.setattr(conv_module, "_COLS_BUDGET_BYTES", 1)  # one image per chunk
    rng = np.random.default_rng(11)
    x, w, b = _rand(rng, 3, 4, 7, 6), _rand(rng, 6, 4 // group, 3, 3), _rand(rng, 6)
    attrs = {"pads": [1, 0, 1, 2], "strides": [2, 1], "group": group}
    (ours,) = kernels.conv([x, w, b], attrs, 22)
    (expected,) = _reference(_model("Conv", [x, w, b], attrs), [x, w, b])
    _close(ours, expected)


def test_conv_accepts_bytes_auto_pad_and_missing_optional_bias() -> None:
    rng = np.random.default_rng(3)
    x, w = _rand(rng, 1, 2, 6, 6), _rand(rng, 3, 2, 3, 3)
    (as_bytes,) = kernels.conv([x, w, None], {"auto_pad": b"SAME_LOWER", "strides": [2, 2]}, 11)
    (as_str,) = kernels.conv([x, w], {"auto_pad": "SAME_LOWER", "strides": [2, 2]}, 11)
    np.testing.assert_array_equal(as_bytes, as_str)


# --------------------------------------------------------------------------------------------
# ConvTranspose

_CT_SPATIAL = {1: (5,), 2: (4, 3), 3: (3, 3, 2)}

_CT_GEOMETRIES: list[tuple[int, dict[str, Any]]] = [
    (3, {}),
    (3, {"strides": 2}),
    (3, {"strides": 2, "pads": "sym", "output_padding": 1}),
    (2, {"strides": 3, "pads": "asym", "output_padding": 2}),
    (3, {"dilations": 2, "pads": "asym"}),
    (2, {"strides": 2, "dilations": 2, "output_padding": 1}),
    (3, {"auto_pad": "SAME_UPPER", "strides": 2}),
    (2, {"auto_pad": "SAME_LOWER", "strides": 2}),
    (3, {"auto_pad": "SAME_UPPER", "strides": 3, "dilations": 2}),
    (3, {"auto_pad": "SAME_LOWER", "strides": 2, "output_padding": 1}),
    (3, {"auto_pad": "VALID", "strides": 2}),
    (1, {"strides": 2}),
]


def _ct_inputs(
    rng: np.random.Generator, nsp: int, k: int, group: int, bias: bool
) -> list[np.ndarray | None]:
    c, mg = (3, 4) if group == 1 else (4, 3)
    x = _rand(rng, 2, c, *_CT_SPATIAL[nsp])
    w = _rand(rng, c, mg, *([k] * nsp))
    return [x, w, _rand(rng, mg * group) if bias else None]


@pytest.mark.parametrize(
    "nsp,k,geo,group,bias",
    [
        pytest.param(nsp, k, geo, group, (i + nsp) % 2 == 0, id=f"{nsp}d-g{i}-group{group}")
        for nsp, (i, (k, geo)), group in itertools.product(
            (1, 2, 3), enumerate(_CT_GEOMETRIES), (1, 2)
        )
    ],
)
def test_conv_transpose_matches_oracle(
    nsp: int, k: int, geo: dict[str, Any], group: int, bias: bool
) -> None:
    rng = np.random.default_rng(nsp * 10 + k)
    inputs = _ct_inputs(rng, nsp, k, group, bias)
    attrs = _spatial_attrs(geo, nsp)
    if group != 1:
        attrs["group"] = group
    (ours,) = kernels.conv_transpose(inputs, attrs, 22)
    model = _model("ConvTranspose", inputs, attrs)
    # onnx.reference 1.23 mishandles group > 1 (see the module docstring): ONNX Runtime there.
    (expected,) = (_reference if group == 1 else _ort)(model, inputs)
    _close(ours, expected)
    if not (attrs.get("auto_pad", "NOTSET").startswith("SAME") and "output_padding" in attrs):
        # ONNX shape inference adds output_padding on top of SAME's in * stride, against the
        # spec text, onnx.reference and ONNX Runtime (all three give in * stride).
        assert ours.shape == _inferred_shape(model)


def _spec_transpose_pads(
    auto_pad: str, full: Sequence[int], output_shape: Sequence[int]
) -> list[int]:
    """ConvTranspose's pads for an explicit output_shape, restated from the spec text."""
    begin, end = [], []
    for f, o in zip(full, output_shape, strict=True):
        total = f - o
        if auto_pad == "SAME_UPPER":
            begin.append(total // 2)
            end.append(total - total // 2)
        else:
            begin.append(total - total // 2)
            end.append(total // 2)
    return begin + end


@pytest.mark.parametrize("auto_pad", ["NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"])
@pytest.mark.parametrize("shrink", [1, 2, 3])
@pytest.mark.parametrize("group", [1, 2])
def test_conv_transpose_output_shape_splits_the_padding_as_the_spec_says(
    auto_pad: str, shrink: int, group: int
) -> None:
    rng = np.random.default_rng(shrink)
    inputs = _ct_inputs(rng, 2, 3, group, bias=True)
    attrs: dict[str, Any] = {"strides": [2, 3], "output_padding": [1, 0], "auto_pad": auto_pad}
    if group != 1:
        attrs["group"] = group
    full = [2 * (4 - 1) + 3 + 1, 3 * (3 - 1) + 3]
    target = [f - shrink for f in full]
    (ours,) = kernels.conv_transpose(inputs, {**attrs, "output_shape": target}, 22)
    assert list(ours.shape[2:]) == target
    # The same node with the pads the spec derives from output_shape. ONNX Runtime: the
    # reference ignores the split for NOTSET/VALID (it crops the end only) and mishandles groups.
    explicit = {**attrs, "auto_pad": "NOTSET", "pads": _spec_transpose_pads(auto_pad, full, target)}
    (expected,) = _ort(_model("ConvTranspose", inputs, explicit), inputs)
    _close(ours, expected)


@pytest.mark.parametrize("auto_pad", ["NOTSET", "SAME_UPPER", "SAME_LOWER"])
def test_conv_transpose_output_beyond_the_full_output_adds_zeros(auto_pad: str) -> None:
    # kernel 2 < stride 3: SAME asks for in * stride = 12 pixels where the full output has 11.
    # ONNX Runtime and ONNX shape inference clamp SAME to 11 (against the spec's
    # "output_shape = in * stride"); onnx.reference follows the spec's formula.
    rng = np.random.default_rng(4)
    x, w, b = _rand(rng, 1, 2, 4), _rand(rng, 2, 3, 2), _rand(rng, 3)
    attrs: dict[str, Any] = {"strides": [3], "auto_pad": auto_pad}
    if auto_pad == "NOTSET":
        attrs["output_shape"] = [12]
    (ours,) = kernels.conv_transpose([x, w, b], attrs, 22)
    assert ours.shape == (1, 3, 12)
    model = _model("ConvTranspose", [x, w, b], attrs)
    if auto_pad == "NOTSET":
        assert _inferred_shape(model) == (1, 3, 12)
    (expected,) = _reference(model, [x, w, b])
    _close(ours, expected)


@pytest.mark.parametrize("opset", [1, 10, 11, 22])
def test_conv_transpose_same_rule_is_the_same_in_every_opset(opset: int) -> None:
    # Odd total padding (3): SAME_UPPER crops 1 at the beginning, 2 at the end (ONNX Runtime
    # and onnx.reference, every opset; see the kernel's docstring about the opset-1 text).
    rng = np.random.default_rng(5)
    x, w = _rand(rng, 1, 2, 4, 4), _rand(rng, 2, 3, 5, 5)
    attrs = {"strides": [2, 2], "auto_pad": "SAME_UPPER"}
    (ours,) = kernels.conv_transpose([x, w], attrs, opset)
    (full,) = kernels.conv_transpose([x, w], {"strides": [2, 2]}, opset)
    np.testing.assert_array_equal(ours, full[:, :, 1:-2, 1:-2])
    model_opset = max(opset, 7)  # ONNX Runtime runs ai.onnx 7 and later
    (expected,) = _ort(_model("ConvTranspose", [x, w], attrs, opset=model_opset), [x, w])
    _close(ours, expected)


def test_conv_transpose_float16_and_output_shape_with_batch_and_channels() -> None:
    rng = np.random.default_rng(6)
    x, w = _rand(rng, 1, 2, 3, 3, dtype=np.float16), _rand(rng, 2, 2, 3, 3, dtype=np.float16)
    (ours,) = kernels.conv_transpose([x, w], {"strides": [2, 2], "output_shape": [1, 2, 6, 6]}, 9)
    assert ours.dtype == np.float16 and ours.shape == (1, 2, 6, 6)
    wide = [x.astype(np.float32), w.astype(np.float32)]
    attrs = {"strides": [2, 2], "output_shape": [6, 6]}
    (expected,) = _ort(_model("ConvTranspose", wide, attrs), wide)
    np.testing.assert_allclose(ours.astype(np.float32), expected, rtol=1e-2, atol=1e-2)


# --------------------------------------------------------------------------------------------
# ONNX's backend node tests for every op with a kernel here

_KERNELS = {
    "Conv": kernels.conv,
    "ConvTranspose": kernels.conv_transpose,
    "MaxPool": kernels.max_pool,
    "AveragePool": kernels.average_pool,
    "GlobalAveragePool": kernels.global_average_pool,
    "GlobalMaxPool": kernels.global_max_pool,
    "MatMul": kernels.matmul,
    "Gemm": kernels.gemm,
    "BatchNormalization": kernels.batch_normalization,
}

# Node tests that cannot pass, with the reason. None at the moment.
_NODE_XFAIL: dict[str, str] = {}


@cache
def _node_cases() -> dict[str, Any]:
    from onnx.backend.test.loader import load_model_tests

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # some case generators warn about overflowing casts
        cases = load_model_tests(kind="node")
    selected = {}
    for case in cases:
        if case.name.endswith("_expanded"):
            continue
        model = case.model
        if model is None and case.model_dir is not None:
            model = onnx.load(f"{case.model_dir}/model.onnx")
        if model is None or len(model.graph.node) != 1:
            continue
        if model.graph.node[0].op_type in _KERNELS:
            selected[case.name] = case
    return selected


def _data_sets(case: Any) -> list[tuple[list[np.ndarray], list[np.ndarray]]]:
    if case.data_sets is not None:
        return [([np.asarray(v) for v in i], [np.asarray(v) for v in o]) for i, o in case.data_sets]
    sets = []
    for folder in sorted(glob.glob(f"{case.model_dir}/test_data_set_*")):
        load = [numpy_helper.to_array(onnx.load_tensor(p)) for p in sorted(
            glob.glob(f"{folder}/input_*.pb"))]  # fmt: skip
        want = [numpy_helper.to_array(onnx.load_tensor(p)) for p in sorted(
            glob.glob(f"{folder}/output_*.pb"))]  # fmt: skip
        sets.append((load, want))
    return sets


def _node_params() -> list[Any]:
    params = []
    for name in sorted(_node_cases()):
        marks = [pytest.mark.xfail(reason=_NODE_XFAIL[name], strict=True)] if (
            name in _NODE_XFAIL) else []  # fmt: skip
        params.append(pytest.param(name, marks=marks, id=name))
    return params


def test_node_suite_covers_every_kernel() -> None:
    ops = {case.model.graph.node[0].op_type for case in _node_cases().values()}
    assert ops == set(_KERNELS)


@pytest.mark.parametrize("name", _node_params())
def test_onnx_backend_node_case(name: str) -> None:
    case = _node_cases()[name]
    model = case.model if case.model is not None else onnx.load(f"{case.model_dir}/model.onnx")
    node = model.graph.node[0]
    attrs = {}
    for attr in node.attribute:
        value = helper.get_attribute_value(attr)
        attrs[attr.name] = value.decode() if isinstance(value, bytes) else value
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    kernel = _KERNELS[node.op_type]
    for inputs, expected in _data_sets(case):
        feeds: list[np.ndarray | None] = []
        it = iter(inputs)
        for input_name in node.input:
            feeds.append(next(it) if input_name else None)
        extra = {"num_outputs": len(node.output)} if node.op_type == "BatchNormalization" else {}
        ours = kernel(feeds, attrs, opset, **extra)
        assert len(ours) >= len(expected)
        for got, want in zip(ours, expected, strict=False):
            assert got.dtype == want.dtype and got.shape == want.shape, (got.dtype, want.dtype)
            # The suite's own tolerances (rtol 1e-3), with atol at least 1e-6: BLAS sums in
            # another order than the generators' numpy code.
            np.testing.assert_allclose(got, want, rtol=case.rtol, atol=max(case.atol, 1e-6))
