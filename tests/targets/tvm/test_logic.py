"""TVM comparisons, boolean logic and Where (`te_logic`): match ONNX Runtime with
broadcasting, on float32/int64 inputs and bool outputs, alone and chained (a transformer's
mask arithmetic); a comparison of booleans stays with the reference kernel."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

pytest.importorskip("tvm")
os.environ.setdefault("TVM_NUM_THREADS", "2")

import lepton_compiler
from lepton_compiler.testing import run_onnxruntime

T = {"f": TensorProto.FLOAT, "i": TensorProto.INT64, "b": TensorProto.BOOL}
NP = {"f": np.float32, "i": np.int64, "b": np.bool_}


Spec = dict[str, tuple[tuple[int, ...], str]]


def _check(
    nodes: list[onnx.NodeProto],
    inputs: Spec,
    outputs: Spec,
    tmp_path: Path,
    inits: dict[str, np.ndarray] | None = None,
) -> lepton_compiler.CompiledModel:
    graph = helper.make_graph(
        nodes, "logic",
        [helper.make_tensor_value_info(n, T[t], s) for n, (s, t) in inputs.items()],
        [helper.make_tensor_value_info(n, T[t], s) for n, (s, t) in outputs.items()],
        [numpy_helper.from_array(v, k) for k, v in (inits or {}).items()],
    )  # fmt: skip
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        compiled = lepton_compiler.compile(str(path), backend="tvm")
    rng = np.random.default_rng(0)
    feeds = {}
    for name, (shape, t) in inputs.items():
        if t == "b":
            feeds[name] = rng.random(shape) < 0.5
        elif t == "i":
            feeds[name] = rng.integers(-2, 3, shape).astype(np.int64)
        else:
            feeds[name] = rng.integers(-2, 3, shape).astype(np.float32)  # ties for Equal
    want = run_onnxruntime(str(path), feeds)
    got = compiled.run(feeds)
    for key, ref in want.items():
        assert got[key].dtype == ref.dtype and got[key].shape == ref.shape, key
        if ref.dtype == np.float32:  # Mean: a product by 1/n, rounded either way
            np.testing.assert_allclose(got[key], ref, rtol=1e-6, err_msg=key)
        else:
            np.testing.assert_array_equal(got[key], ref, err_msg=key)
    return compiled


@pytest.mark.parametrize("op", ["Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual"])
@pytest.mark.parametrize("t", ["f", "i"])
def test_comparisons_broadcast(op: str, t: str, tmp_path: Path) -> None:
    node = helper.make_node(op, ["a", "b"], ["y"])
    compiled = _check([node], {"a": ((2, 3, 17), t), "b": ((3, 1), t)},
                      {"y": ((2, 3, 17), "b")}, tmp_path)  # fmt: skip
    assert compiled.executor.fallbacks == []


@pytest.mark.parametrize("op", ["And", "Or", "Xor"])
def test_boolean_logic(op: str, tmp_path: Path) -> None:
    nodes = [helper.make_node(op, ["a", "b"], ["t"]), helper.make_node("Not", ["t"], ["y"])]
    compiled = _check(nodes, {"a": ((4, 1, 33), "b"), "b": ((5, 33), "b")},
                      {"y": ((4, 5, 33), "b")}, tmp_path)  # fmt: skip
    assert compiled.executor.fallbacks == []


def test_mask_arithmetic_chain(tmp_path: Path) -> None:
    """``Where(Equal(ids, 0), -1e4, scores)``, then a Cast of the mask to float."""
    nodes = [
        helper.make_node("Equal", ["ids", "zero"], ["pad"]),
        helper.make_node("Where", ["pad", "neg", "scores"], ["masked"]),
        helper.make_node("Cast", ["pad"], ["padf"], to=TensorProto.FLOAT),
    ]
    inits = {"zero": np.array(0, np.int64), "neg": np.array(-1e4, np.float32)}
    compiled = _check(nodes, {"ids": ((2, 1, 1, 19), "i"), "scores": ((2, 4, 19, 19), "f")},
                      {"masked": ((2, 4, 19, 19), "f"), "padf": ((2, 1, 1, 19), "f")},
                      tmp_path, inits)  # fmt: skip
    assert compiled.executor.fallbacks == []


def test_comparing_booleans_falls_back(tmp_path: Path) -> None:
    node = helper.make_node("Equal", ["a", "b"], ["y"])
    compiled = _check([node], {"a": ((3, 4), "b"), "b": ((3, 4), "b")},
                      {"y": ((3, 4), "b")}, tmp_path)  # fmt: skip
    assert compiled.executor.fallbacks == ["Equal ×1 (reference kernel)"]


@pytest.mark.parametrize("op", ["Max", "Min", "Sum", "Mean"])
@pytest.mark.parametrize("count", [1, 3])
def test_variadic_ops(op: str, count: int, tmp_path: Path) -> None:
    """Max/Min/Sum/Mean of one or three broadcasting inputs."""
    shapes = [(2, 3, 5), (3, 1), (5,)][:count]
    names = [f"x{k}" for k in range(count)]
    node = helper.make_node(op, names, ["y"])
    compiled = _check([node], {n: (s, "f") for n, s in zip(names, shapes, strict=True)},
                      {"y": ((2, 3, 5), "f")}, tmp_path)  # fmt: skip
    assert compiled.executor.fallbacks == []
