"""MatMul, Gemm and BatchNormalization kernels against onnx.reference / ONNX Runtime (ONNX's
own node tests for them run in test_kernels_conv.py).

onnx.reference is the oracle for MatMul, Gemm and BatchNormalization from opset 14. Before
opset 14 it is wrong for BatchNormalization: at opsets 9-13 it normalizes with statistics
blended by ``momentum`` even in inference mode; at opsets 6-8 without ``is_test`` (or with
``is_test=0``) it returns a nested tuple and fails; it cannot do ``spatial=0`` nor the five
training-mode outputs. It also casts opset-15 training statistics to X's dtype instead of the
statistics' own. Those cases compare against ONNX Runtime, which runs ai.onnx 7 and later (the
opset-6 cases run as the same node stamped opset 7, whose semantics are identical).
"""

from __future__ import annotations

from collections.abc import Sequence
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
    inputs: Sequence[np.ndarray | None],
    attrs: dict[str, Any],
    out_dtypes: Sequence[Any],
    opset: int = 22,
) -> onnx.ModelProto:
    names = [f"i{k}" if v is not None else "" for k, v in enumerate(inputs)]
    while names and not names[-1]:
        names.pop()
    outs = [f"o{k}" for k in range(len(out_dtypes))]
    node = helper.make_node(op, names, outs, **attrs)
    graph_inputs = [
        helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
        for n, v in zip(names, inputs, strict=False)
        if v is not None
    ]
    graph_outputs = [
        helper.make_tensor_value_info(o, helper.np_dtype_to_tensor_dtype(np.dtype(t)), None)
        for o, t in zip(outs, out_dtypes, strict=True)
    ]
    graph = helper.make_graph([node], "g", graph_inputs, graph_outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8 if opset >= 7 else 3
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


def _close(ours: np.ndarray, expected: np.ndarray, rtol: float = 1e-4, atol: float = 1e-5) -> None:
    assert ours.dtype == expected.dtype, (ours.dtype, expected.dtype)
    assert ours.shape == expected.shape, (ours.shape, expected.shape)
    np.testing.assert_allclose(ours, expected, rtol=rtol, atol=atol)


def _rand(rng: np.random.Generator, shape: Sequence[int], dtype: Any = np.float32) -> np.ndarray:
    if np.dtype(dtype).kind in "iu":
        return rng.integers(-5 if np.dtype(dtype).kind == "i" else 0, 6, size=shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


# --------------------------------------------------------------------------------------------
# MatMul

_MATMUL_SHAPES = [
    ((3, 4), (4, 5)),
    ((4,), (4,)),
    ((4,), (4, 5)),
    ((3, 4), (4,)),
    ((4,), (2, 4, 5)),
    ((2, 3, 4), (4,)),
    ((2, 3, 4), (4, 5)),
    ((3, 4), (2, 4, 5)),
    ((2, 1, 3, 4), (1, 5, 4, 2)),
    ((1, 3, 4), (6, 4, 2)),
    ((2, 3, 0), (0, 4)),
]


@pytest.mark.parametrize("a_shape,b_shape", _MATMUL_SHAPES, ids=str)
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32, np.int64, np.uint64])
def test_matmul(a_shape: tuple[int, ...], b_shape: tuple[int, ...], dtype: Any) -> None:
    rng = np.random.default_rng(len(a_shape) * 10 + len(b_shape))
    a, b = _rand(rng, a_shape, dtype), _rand(rng, b_shape, dtype)
    (ours,) = kernels.matmul([a, b], {}, 13)
    (expected,) = _reference(_model("MatMul", [a, b], {}, [dtype], opset=13), [a, b])
    _close(ours, expected)


def test_matmul_float16_accumulates_in_float32() -> None:
    rng = np.random.default_rng(1)
    a, b = _rand(rng, (2, 8, 64), np.float16), _rand(rng, (64, 8), np.float16)
    (ours,) = kernels.matmul([a, b], {}, 13)
    assert ours.dtype == np.float16
    wide = [a.astype(np.float32), b.astype(np.float32)]
    (expected,) = _reference(_model("MatMul", wide, {}, [np.float32], opset=13), wide)
    np.testing.assert_allclose(ours.astype(np.float32), expected, rtol=2e-3, atol=2e-2)


# --------------------------------------------------------------------------------------------
# Gemm

_C_SHAPES = [None, (), (1,), (5,), (1, 5), (3, 1), (3, 5)]


@pytest.mark.parametrize("c_shape", _C_SHAPES, ids=str)
@pytest.mark.parametrize("trans_a,trans_b", [(0, 0), (1, 0), (0, 1), (1, 1)])
@pytest.mark.parametrize("alpha,beta", [(1.0, 1.0), (0.5, 1.0), (1.0, -2.0), (0.25, 0.0)])
def test_gemm(
    c_shape: tuple[int, ...] | None, trans_a: int, trans_b: int, alpha: float, beta: float
) -> None:
    rng = np.random.default_rng(trans_a * 2 + trans_b)
    a = _rand(rng, (4, 3) if trans_a else (3, 4))
    b = _rand(rng, (5, 4) if trans_b else (4, 5))
    c = None if c_shape is None else _rand(rng, c_shape)
    attrs: dict[str, Any] = {"transA": trans_a, "transB": trans_b}
    if alpha != 1.0:
        attrs["alpha"] = alpha
    if beta != 1.0:
        attrs["beta"] = beta
    inputs = [a, b, c]
    (ours,) = kernels.gemm(inputs if c is not None else [a, b], attrs, 13)
    (expected,) = _reference(_model("Gemm", inputs, attrs, [np.float32], opset=13), inputs)
    _close(ours, expected)


def test_gemm_beta_zero_ignores_c() -> None:
    a, b = np.ones((2, 3), np.float32), np.ones((3, 2), np.float32)
    c = np.full((2, 2), np.inf, np.float32)
    (ours,) = kernels.gemm([a, b, c], {"beta": 0.0}, 13)
    np.testing.assert_array_equal(ours, np.full((2, 2), 3.0, np.float32))


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint32, np.uint64, np.float64])
@pytest.mark.parametrize("alpha,beta", [(1.0, 1.0), (2.5, 0.5)])
def test_gemm_other_dtypes(dtype: Any, alpha: float, beta: float) -> None:
    rng = np.random.default_rng(3)
    a, b, c = _rand(rng, (3, 4), dtype), _rand(rng, (4, 2), dtype), _rand(rng, (2,), dtype)
    attrs = {"alpha": alpha, "beta": beta}
    (ours,) = kernels.gemm([a, b, c], attrs, 13)
    (expected,) = _reference(_model("Gemm", [a, b, c], attrs, [dtype], opset=13), [a, b, c])
    _close(ours, expected, rtol=1e-12, atol=0)


def test_gemm_float16_and_old_opset_broadcast_attribute() -> None:
    rng = np.random.default_rng(4)
    a, b, c = (_rand(rng, s, np.float16) for s in ((3, 16), (16, 4), (4,)))
    (ours,) = kernels.gemm([a, b, c], {"broadcast": 1, "alpha": 0.5}, 6)
    assert ours.dtype == np.float16
    wide = [v.astype(np.float32) for v in (a, b, c)]
    attrs = {"broadcast": 1, "alpha": 0.5}
    (expected,) = _reference(_model("Gemm", wide, attrs, [np.float32], opset=6), wide)
    np.testing.assert_allclose(ours.astype(np.float32), expected, rtol=2e-3, atol=1e-2)


# --------------------------------------------------------------------------------------------
# BatchNormalization


def _bn_inputs(
    rng: np.random.Generator,
    x_shape: Sequence[int],
    param_shape: Sequence[int],
    x_dtype: Any = np.float32,
    param_dtype: Any = None,
    stat_dtype: Any = None,
) -> list[np.ndarray]:
    param_dtype = param_dtype or x_dtype
    stat_dtype = stat_dtype or param_dtype
    return [
        rng.standard_normal(x_shape).astype(x_dtype),
        rng.standard_normal(param_shape).astype(param_dtype),
        rng.standard_normal(param_shape).astype(param_dtype),
        rng.standard_normal(param_shape).astype(stat_dtype),
        (rng.random(param_shape) + 0.5).astype(stat_dtype),
    ]


@pytest.mark.parametrize("x_shape", [(2, 3), (2, 3, 5), (2, 3, 4, 5), (1, 3, 2, 3, 4)], ids=str)
@pytest.mark.parametrize("opset", [14, 15])
@pytest.mark.parametrize("training", [0, 1])
def test_batch_normalization_from_opset_14(
    x_shape: tuple[int, ...], opset: int, training: int
) -> None:
    rng = np.random.default_rng(len(x_shape))
    inputs = _bn_inputs(rng, x_shape, (3,))
    attrs = {"epsilon": 1e-3, "momentum": 0.8, "training_mode": training}
    n_out = 3 if training else 1
    ours = kernels.batch_normalization(inputs, attrs, opset, num_outputs=n_out)
    assert len(ours) == n_out
    model = _model("BatchNormalization", inputs, attrs, [np.float32] * n_out, opset=opset)
    for got, want in zip(ours, _reference(model, inputs), strict=True):
        _close(got, want)


@pytest.mark.parametrize("training", [0, 1])
@pytest.mark.parametrize("param_dtype", [np.float16, np.float32])
def test_batch_normalization_float16(training: int, param_dtype: Any) -> None:
    rng = np.random.default_rng(5)
    inputs = _bn_inputs(rng, (2, 3, 4, 5), (3,), np.float16, param_dtype)
    attrs = {"training_mode": training}
    n_out = 3 if training else 1
    ours = kernels.batch_normalization(inputs, attrs, 15, num_outputs=n_out)
    dtypes = [np.float16] + [param_dtype] * (n_out - 1)
    assert [v.dtype for v in ours] == dtypes
    # onnx.reference casts the running statistics to X's dtype: ONNX Runtime.
    model = _model("BatchNormalization", inputs, attrs, dtypes, opset=15)
    for got, want in zip(ours, _ort(model, inputs), strict=True):
        _close(got, want, rtol=1e-2, atol=1e-2)


# (opset, attributes, number of outputs, per-activation parameters)
_OLD_BN = [
    (7, {}, 1, False),
    (7, {"epsilon": 1e-2}, 1, False),
    (7, {"spatial": 0}, 1, True),
    (7, {"spatial": 1, "momentum": 0.7}, 5, False),
    (9, {}, 1, False),
    (9, {"momentum": 0.6, "epsilon": 1e-3}, 1, False),
    (9, {"momentum": 0.6, "epsilon": 1e-3}, 5, False),
    (13, {}, 1, False),
    (13, {"momentum": 0.5}, 5, False),
    (6, {"is_test": 1}, 1, False),
    (6, {"is_test": 1, "spatial": 0}, 1, True),
    (6, {"is_test": 0, "momentum": 0.7}, 5, False),
    (1, {"is_test": 1, "consumed_inputs": [0, 0, 0, 1, 1]}, 1, False),
]


@pytest.mark.parametrize("opset,attrs,n_out,per_activation", _OLD_BN, ids=str)
@pytest.mark.parametrize("x_shape", [(2, 3, 4, 5), (4, 3)], ids=str)
def test_batch_normalization_before_opset_14_matches_onnxruntime(
    opset: int,
    attrs: dict[str, Any],
    n_out: int,
    per_activation: bool,
    x_shape: tuple[int, ...],
) -> None:
    rng = np.random.default_rng(opset)
    inputs = _bn_inputs(rng, x_shape, x_shape[1:] if per_activation else (3,))
    ours = kernels.batch_normalization(inputs, attrs, opset, num_outputs=n_out)
    assert len(ours) == n_out
    # onnx.reference is wrong before opset 14 (module docstring); ONNX Runtime runs ai.onnx >= 7
    # and has the same semantics at 7 for is_test=1 (one output) / is_test=0 (five outputs).
    ort_attrs = {k: v for k, v in attrs.items() if k not in ("is_test", "consumed_inputs")}
    model = _model("BatchNormalization", inputs, ort_attrs, [np.float32] * n_out, max(opset, 7))
    for got, want in zip(ours, _ort(model, inputs), strict=True):
        _close(got, want)


def test_batch_normalization_old_opsets_default_to_inference_without_num_outputs() -> None:
    rng = np.random.default_rng(6)
    inputs = _bn_inputs(rng, (2, 3, 4), (3,))
    for opset in (6, 7, 9):
        (y,) = kernels.batch_normalization(inputs, {}, opset)
        (want,) = kernels.batch_normalization(inputs, {}, 15)
        np.testing.assert_array_equal(y, want)


def test_batch_normalization_per_activation_training_follows_the_spec_formula() -> None:
    # ONNX Runtime only trains spatial BatchNormalization, so the opset-7 spatial=0 training
    # outputs are checked against the formula: statistics over the batch axis only.
    rng = np.random.default_rng(7)
    x, scale, bias, mean, var = _bn_inputs(rng, (4, 3, 2), (3, 2))
    momentum, eps = 0.7, 1e-3
    attrs = {"spatial": 0, "momentum": momentum, "epsilon": eps}
    y, run_mean, run_var, saved_mean, saved_inv_std = kernels.batch_normalization(
        [x, scale, bias, mean, var], attrs, 7, num_outputs=5
    )
    cur_mean, cur_var = x.mean(axis=0), x.var(axis=0)
    np.testing.assert_allclose(y, (x - cur_mean) / np.sqrt(cur_var + eps) * scale + bias,
                               rtol=1e-5, atol=1e-5)  # fmt: skip
    np.testing.assert_allclose(run_mean, mean * momentum + cur_mean * (1 - momentum), rtol=1e-5)
    np.testing.assert_allclose(run_var, var * momentum + cur_var * (1 - momentum), rtol=1e-5)
    np.testing.assert_allclose(saved_mean, cur_mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(saved_inv_std, 1 / np.sqrt(cur_var + eps), rtol=1e-5)
