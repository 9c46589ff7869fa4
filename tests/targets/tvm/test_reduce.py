"""TVM reduce family: ReduceMean/Sum/Max/Min/Prod/SumSquare/L1/L2/LogSum/LogSumExp over any
constant axes, with and without keepdims, both kernel forms (innermost axis reduced or kept,
odd sizes, chunked rows), with a fused epilogue, match ONNX Runtime; computed axes stay with
the reference kernel."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

pytest.importorskip("tvm")
os.environ.setdefault("TVM_NUM_THREADS", "2")

import lepton_compiler
from lepton_compiler.testing import run_onnxruntime


def _reduce_model(op: str, shape: tuple[int, ...], axes: list[int] | None, keepdims: int,
                  axes_input: bool) -> onnx.ModelProto:  # fmt: skip
    inits = []
    inputs = ["x"]
    attrs: dict[str, object] = {"keepdims": keepdims}
    if axes is not None and axes_input:
        inits.append(numpy_helper.from_array(np.array(axes, np.int64), "axes"))
        inputs.append("axes")
    elif axes is not None:
        attrs["axes"] = axes
    node = helper.make_node(op, inputs, ["y"], **attrs)
    out = np.zeros(shape).sum(axis=None if axes is None else tuple(axes),
                              keepdims=bool(keepdims)).shape  # fmt: skip
    graph = helper.make_graph(
        [node], "reduce", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out)], inits,
    )  # fmt: skip
    opset = 18 if axes_input else 13
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _run(model: onnx.ModelProto, tmp_path: Path, scale: float = 1.0) -> tuple[Any, ...]:
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        compiled = lepton_compiler.compile(str(path), backend="tvm")
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    x = (np.random.default_rng(0).standard_normal(shape) * scale).astype(np.float32)
    return compiled, run_onnxruntime(str(path), {"x": x})["y"], compiled.run({"x": x})["y"]


CASES = {
    # name: (shape, axes, keepdims)
    "layernorm_like_last": ((2, 7, 768), [-1], 1),
    "se_block_hw": ((1, 24, 14, 14), [2, 3], 1),
    "channels_kept_inner": ((2, 5, 3, 9), [1], 0),
    "all_axes": ((3, 17, 5), None, 0),
    "middle_and_last": ((2, 3, 4, 5, 6), [1, 4], 1),
    "first_and_middle": ((4, 3, 5, 33), [0, 2], 0),
    "long_kept_rows_chunked": ((3, 2, 1300), [1], 1),
    "size_one_axes": ((1, 8, 1, 19), [0, 2], 0),
}


@pytest.mark.parametrize("op", ["ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin",
                                "ReduceSumSquare", "ReduceL1", "ReduceL2"])  # fmt: skip
@pytest.mark.parametrize("name", sorted(CASES))
def test_reduce_matches_onnxruntime(op: str, name: str, tmp_path: Path) -> None:
    shape, axes, keepdims = CASES[name]
    compiled, want, got = _run(_reduce_model(op, shape, axes, keepdims, axes_input=True),
                               tmp_path)  # fmt: skip
    assert compiled.executor.fallbacks == []
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5 * float(np.abs(want).max()))


def test_reduce_prod_and_axes_attribute(tmp_path: Path) -> None:
    """ReduceProd (values near 1 so the product stays finite), axes as an attribute
    (opset 13)."""
    model = _reduce_model("ReduceProd", (2, 6, 10), [2], 0, axes_input=False)
    compiled, want, got = _run(model, tmp_path, scale=0.1)
    assert compiled.executor.fallbacks == []
    np.testing.assert_allclose(got, want, rtol=1e-5)


@pytest.mark.parametrize("op", ["ReduceLogSum", "ReduceLogSumExp"])
def test_log_reductions(op: str, tmp_path: Path) -> None:
    """log(sum(x)) of positive values (the input is squared first) and log(sum(exp(x)))."""
    nodes = [helper.make_node("Mul", ["x", "x"], ["sq"]),
             helper.make_node(op, ["sq", "axes"], ["y"], keepdims=0)]  # fmt: skip
    graph = helper.make_graph(
        nodes, "log", [helper.make_tensor_value_info("x", TensorProto.FLOAT, (3, 7, 20))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, (3, 20))],
        [numpy_helper.from_array(np.array([1], np.int64), "axes")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    compiled, want, got = _run(model, tmp_path)
    assert compiled.executor.fallbacks == []
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_reduction_with_epilogue_is_one_kernel(tmp_path: Path) -> None:
    """RMS-norm style ``sqrt(mean(x*x) + eps)`` after the square: the Add and Sqrt run as
    the reduction's results are stored."""
    nodes = [
        helper.make_node("Mul", ["x", "x"], ["sq"]),
        helper.make_node("ReduceMean", ["sq", "axes"], ["ms"], keepdims=1),
        helper.make_node("Add", ["ms", "eps"], ["v"]),
        helper.make_node("Sqrt", ["v"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "rms", [helper.make_tensor_value_info("x", TensorProto.FLOAT, (2, 9, 64))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, (2, 9, 1))],
        [numpy_helper.from_array(np.array([-1], np.int64), "axes"),
         numpy_helper.from_array(np.array(1e-5, np.float32), "eps")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    compiled, want, got = _run(model, tmp_path)
    assert compiled.executor.fallbacks == []
    assert any("ReduceMean+Add+Sqrt" in k for k in compiled.executor.native_ops)
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_computed_axes_fall_back(tmp_path: Path) -> None:
    node = helper.make_node("ReduceSum", ["x", "axes"], ["y"], keepdims=1)
    graph = helper.make_graph(
        [node], "computed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, (2, 5)),
         helper.make_tensor_value_info("axes", TensorProto.INT64, (1,))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, (2, 1))],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    with pytest.warns(UserWarning, match="ReduceSum"):
        compiled = lepton_compiler.compile(str(path), backend="tvm")
    assert compiled.executor.fallbacks == ["ReduceSum ×1 (reference kernel)"]
    x = np.arange(10, dtype=np.float32).reshape(2, 5)
    got = compiled.run({"x": x, "axes": np.array([1], np.int64)})["y"]
    np.testing.assert_array_equal(got, x.sum(axis=1, keepdims=True))


ARG_CASES = [((3, 1000), 1, 0), ((2, 7, 5, 3), 1, 1), ((4, 6, 300), 0, 0), ((9,), 0, 1)]


@pytest.mark.parametrize("op", ["ArgMax", "ArgMin"])
@pytest.mark.parametrize(("shape", "axis", "keepdims"), ARG_CASES)
def test_argmax_argmin(op: str, shape: tuple[int, ...], axis: int, keepdims: int,
                       tmp_path: Path) -> None:  # fmt: skip
    """Ties included (integer-valued inputs): the first index wins."""
    node = helper.make_node(op, ["x"], ["y"], axis=axis, keepdims=keepdims)
    out = np.zeros(shape).sum(axis=axis, keepdims=bool(keepdims)).shape
    graph = helper.make_graph(
        [node], "arg", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.INT64, out)],
    )  # fmt: skip
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    compiled = lepton_compiler.compile(str(path), backend="tvm")
    assert compiled.executor.fallbacks == []
    x = np.random.default_rng(1).integers(-3, 4, shape).astype(np.float32)
    want = run_onnxruntime(str(path), {"x": x})["y"]
    got = compiled.run({"x": x})["y"]
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("op", ["ArgMax", "ArgMin"])
@pytest.mark.parametrize(("shape", "axis", "keepdims"), ARG_CASES)
def test_arg_kernel_select_last_index(op: str, shape: tuple[int, ...], axis: int,
                                      keepdims: int) -> None:  # fmt: skip
    """The kernel itself with ``select_last_index=1`` (the canonical pipeline rewrites that
    attribute into a reversed Slice and a Sub before kernels are chosen)."""
    from lepton_compiler.ir import DType, Graph, Node, TensorType, Value
    from lepton_compiler.targets.tvm.build import build_group, host_target
    from lepton_compiler.targets.tvm.executor import _wrap_single

    out = np.zeros(shape).sum(axis=axis, keepdims=bool(keepdims)).shape
    g = Graph(opset_imports={"": 18})
    x = g.add_input(Value("x", TensorType(DType.FLOAT32, shape)))
    node = Node(op, [x], {"axis": axis, "keepdims": keepdims, "select_last_index": 1},
                outputs=[Value("y", TensorType(DType.INT64, out))])  # fmt: skip
    g.append(node)
    fused, _ = _wrap_single(node)
    xv = np.random.default_rng(2).integers(-3, 4, shape).astype(np.float32)
    (got,) = build_group(fused, host_target(2))(xv)
    flipped = np.flip(xv, axis=axis)
    pick = np.argmax if op == "ArgMax" else np.argmin
    want = shape[axis] - 1 - pick(flipped, axis=axis)
    np.testing.assert_array_equal(got, want.reshape(out))
