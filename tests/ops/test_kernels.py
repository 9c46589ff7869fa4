"""The fast numpy kernels against ONNX Runtime over grids of attributes (ONNX's own node tests
for these ops run in tests/conformance)."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from lepton_compiler.ops import kernels

RNG = np.random.default_rng(0)


def _ort(op: str, inputs: list[np.ndarray], attrs: dict[str, Any], n_out: int = 1) -> list:
    names = [f"i{k}" for k in range(len(inputs))]
    outs = [f"o{k}" for k in range(n_out)]
    node = helper.make_node(op, names, outs, **attrs)
    dtype = helper.np_dtype_to_tensor_dtype(inputs[0].dtype)
    graph = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
         for n, a in zip(names, inputs, strict=True)],
        [helper.make_tensor_value_info(o, dtype if k == 0 else TensorProto.INT64, None)
         for k, o in enumerate(outs)],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    model.ir_version = 9
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, dict(zip(names, inputs, strict=True)))


def _rand(*shape: int, dtype: Any = np.float32) -> np.ndarray:
    return RNG.standard_normal(shape).astype(dtype)


CONV_CASES = [
    # (input shape, weight shape, attrs)
    ((1, 4, 9, 9), (8, 4, 3, 3), {}),
    ((2, 4, 9, 9), (8, 4, 3, 3), {"pads": [1, 1, 1, 1], "strides": [2, 2]}),
    ((1, 4, 10, 9), (8, 2, 3, 3), {"group": 2, "dilations": [2, 1], "pads": [2, 1, 0, 1]}),
    ((1, 6, 8, 8), (6, 1, 3, 3), {"group": 6, "pads": [1, 1, 1, 1]}),
    ((1, 6, 8, 8), (6, 1, 3, 3), {"group": 6, "strides": [2, 2], "auto_pad": "SAME_UPPER"}),
    ((1, 4, 7, 8), (5, 4, 2, 3), {"auto_pad": "SAME_LOWER", "strides": [2, 3]}),
    ((1, 4, 7, 8), (5, 4, 2, 2), {"auto_pad": "VALID", "strides": [2, 2]}),
    ((1, 4, 6, 6), (5, 4, 1, 1), {}),
    ((1, 3, 11), (4, 3, 3), {"pads": [1, 2], "strides": [2], "dilations": [2]}),
    ((1, 2, 5, 6, 7), (4, 2, 3, 2, 3), {"pads": [1, 0, 1, 1, 1, 0]}),
]


@pytest.mark.parametrize("xs,ws,attrs", CONV_CASES)
@pytest.mark.parametrize("bias", [False, True])
def test_conv(xs: tuple, ws: tuple, attrs: dict, bias: bool) -> None:
    inputs = [_rand(*xs), _rand(*ws)] + ([_rand(ws[0])] if bias else [])
    (ours,) = kernels.conv(inputs, attrs, 18)
    (ref,) = _ort("Conv", inputs, attrs)
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4)


def test_conv_float16_accumulates_in_float32() -> None:
    x, w = _rand(1, 8, 6, 6, dtype=np.float16), _rand(4, 8, 3, 3, dtype=np.float16)
    (ours,) = kernels.conv([x, w], {}, 18)
    assert ours.dtype == np.float16
    ref = kernels.conv([x.astype(np.float32), w.astype(np.float32)], {}, 18)[0]
    np.testing.assert_allclose(ours.astype(np.float32), ref, rtol=2e-3, atol=2e-3)


CONVT_CASES = [
    ((1, 4, 5, 5), (4, 3, 3, 3), {}),
    ((1, 4, 5, 5), (4, 3, 3, 3), {"strides": [2, 2], "pads": [1, 1, 1, 1],
                                  "output_padding": [1, 1]}),
    ((1, 4, 5, 6), (4, 2, 3, 2), {"group": 2, "strides": [2, 3], "dilations": [2, 1]}),
    ((1, 4, 5, 5), (4, 3, 3, 3), {"strides": [2, 2], "output_shape": [10, 10]}),
    ((1, 4, 5, 5), (4, 3, 3, 3), {"strides": [2, 2], "auto_pad": "SAME_UPPER"}),
    ((1, 2, 7), (2, 3, 4), {"strides": [3], "pads": [1, 2]}),
]  # fmt: skip


@pytest.mark.parametrize("xs,ws,attrs", CONVT_CASES)
def test_conv_transpose(xs: tuple, ws: tuple, attrs: dict) -> None:
    inputs = [_rand(*xs), _rand(*ws), _rand(ws[1] * attrs.get("group", 1))]
    (ours,) = kernels.conv_transpose(inputs, attrs, 18)
    (ref,) = _ort("ConvTranspose", inputs, attrs)
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4)


POOL_CASES = [
    {"kernel_shape": [3, 3]},
    {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]},
    {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1},
    {"kernel_shape": [2, 3], "strides": [2, 2], "auto_pad": "SAME_UPPER"},
    {"kernel_shape": [3, 2], "strides": [1, 2], "auto_pad": "SAME_LOWER"},
    {"kernel_shape": [2, 2], "dilations": [2, 2], "strides": [1, 1]},
    {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 0, 0, 1], "ceil_mode": 1},
]


@pytest.mark.parametrize("attrs", POOL_CASES)
def test_max_pool_values_and_indices(attrs: dict) -> None:
    x = _rand(2, 3, 9, 8)
    ours = kernels.max_pool([x], attrs, 18)
    ref = _ort("MaxPool", [x], attrs, n_out=2)
    np.testing.assert_array_equal(ours[0], ref[0])
    np.testing.assert_array_equal(ours[1], ref[1])


def test_max_pool_column_major_indices_and_int8() -> None:
    x = _rand(1, 2, 5, 4)
    attrs = {"kernel_shape": [2, 2], "storage_order": 1}
    ours = kernels.max_pool([x], attrs, 18)
    ref = _ort("MaxPool", [x], attrs, n_out=2)
    np.testing.assert_array_equal(ours[1], ref[1])
    xi = RNG.integers(-128, 127, (1, 2, 5, 5)).astype(np.int8)
    np.testing.assert_array_equal(kernels.max_pool([xi], {"kernel_shape": [3, 3]}, 18)[0],
                                  _ort("MaxPool", [xi], {"kernel_shape": [3, 3]})[0])


@pytest.mark.parametrize("attrs", POOL_CASES)
@pytest.mark.parametrize("include_pad", [0, 1])
def test_average_pool(attrs: dict, include_pad: int) -> None:
    x = _rand(2, 3, 9, 8)
    full = {**attrs, "count_include_pad": include_pad}
    (ours,) = kernels.average_pool([x], full, 19)
    (ref,) = _ort("AveragePool", [x], full)
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape", [(2, 3, 7), (1, 4, 5, 6), (1, 2, 3, 4, 5)])
def test_global_pools_any_rank(shape: tuple) -> None:
    x = _rand(*shape)
    for op, fn in (("GlobalAveragePool", kernels.global_average_pool),
                   ("GlobalMaxPool", kernels.global_max_pool)):  # fmt: skip
        np.testing.assert_allclose(fn([x], {}, 18)[0], _ort(op, [x], {})[0], rtol=1e-5,
                                   atol=1e-6)


@pytest.mark.parametrize("ta,tb,alpha,beta,cshape", list(itertools.product(
    [0, 1], [0, 1], [1.0, 0.5], [1.0, 2.0], [None, (4,), (3, 1), (3, 4)])))
def test_gemm(ta: int, tb: int, alpha: float, beta: float, cshape: tuple | None) -> None:
    a = _rand(5, 3) if ta else _rand(3, 5)
    b = _rand(4, 5) if tb else _rand(5, 4)
    inputs = [a, b] + ([_rand(*cshape)] if cshape else [])
    attrs = {"transA": ta, "transB": tb, "alpha": alpha, "beta": beta}
    np.testing.assert_allclose(kernels.gemm(inputs, attrs, 18)[0],
                               _ort("Gemm", inputs, attrs)[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("sa,sb", [((3, 4), (4, 5)), ((2, 3, 4), (4, 5)), ((4,), (4, 5)),
                                   ((2, 1, 3, 4), (5, 4, 2)), ((3, 4), (4,))])
def test_matmul_broadcasting(sa: tuple, sb: tuple) -> None:
    a, b = _rand(*sa), _rand(*sb)
    np.testing.assert_allclose(kernels.matmul([a, b], {}, 18)[0],
                               _ort("MatMul", [a, b], {})[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (2, 3), (1, 3, 2, 2, 2)])
def test_batch_normalization_inference(shape: tuple) -> None:
    c = shape[1]
    x = _rand(*shape)
    scale, bias, mean = _rand(c), _rand(c), _rand(c)
    var = RNG.uniform(0.5, 2, c).astype(np.float32)
    inputs = [x, scale, bias, mean, var]
    np.testing.assert_allclose(kernels.batch_normalization(inputs, {"epsilon": 1e-3}, 18)[0],
                               _ort("BatchNormalization", inputs, {"epsilon": 1e-3})[0],
                               rtol=1e-5, atol=1e-5)


def test_batch_normalization_training_mode_matches_the_onnx_formula() -> None:
    x = _rand(4, 3, 5)
    scale, bias, mean = _rand(3), _rand(3), _rand(3)
    var = RNG.uniform(0.5, 2, 3).astype(np.float32)
    y, rm, rv = kernels.batch_normalization([x, scale, bias, mean, var],
                                            {"training_mode": 1, "momentum": 0.8}, 15)
    cur_mean, cur_var = x.mean(axis=(0, 2)), x.var(axis=(0, 2))
    np.testing.assert_allclose(rm, mean * 0.8 + cur_mean * 0.2, rtol=1e-5)
    np.testing.assert_allclose(rv, var * 0.8 + cur_var * 0.2, rtol=1e-5)
    expect = (x - cur_mean[:, None]) / np.sqrt(cur_var[:, None] + 1e-5) * scale[:, None]
    np.testing.assert_allclose(y, expect + bias[:, None], rtol=1e-4, atol=1e-5)


def test_kernels_import_only_numpy() -> None:
    import ast
    from pathlib import Path

    folder = Path(kernels.__file__).parent
    for path in folder.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level > 0:
                continue  # sibling kernel modules
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [
                    node.module or ""]
                for name in names:
                    assert name.split(".")[0] in {"numpy", "__future__", "collections",
                                                  "typing", "math", ""}, (path, name)
    assert onnx  # the tests themselves may use onnx
