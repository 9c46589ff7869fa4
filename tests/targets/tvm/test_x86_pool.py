"""TVM x86 pool family: MaxPool / AveragePool (strides, dilations, explicit and automatic
padding, ceil_mode, count_include_pad both ways) and the global pools match the reference
kernels, and so do MaxPool and GlobalMaxPool on uint8/int8 data (alone or dequantized in the
store); unsupported forms are refused with `LoweringError`."""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

pytest.importorskip("tvm")
os.environ.setdefault("TVM_NUM_THREADS", "2")

from lepton_compiler.interpreter import run_graph
from lepton_compiler.ir import DType, Graph, Node, TensorType, Value
from lepton_compiler.ops.kernels.pool import _Geometry
from lepton_compiler.ops.registry import lookup_node
from lepton_compiler.pass_manager import PassContext, get_pass
from lepton_compiler.targets.tvm.build import build_group
from lepton_compiler.targets.tvm.executor import _wrap_single
from lepton_compiler.targets.tvm.kernels import attention as attention_family
from lepton_compiler.targets.tvm.kernels import plan_group
from lepton_compiler.targets.tvm.kernels import pool as pool_family
from lepton_compiler.targets.tvm.te_ops import LoweringError

from .test_x86_attention import TARGET, _tvm_target, check_lone, lone_group

WINDOWED = {
    # name: (op, input shape, attrs)
    "resnet_maxpool": ("MaxPool", (1, 64, 112, 112),
                       {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    "max_2x2_s2": ("MaxPool", (2, 3, 10, 13), {"kernel_shape": [2, 2], "strides": [2, 2]}),
    "max_ceil_mode": ("MaxPool", (1, 4, 11, 9),
                      {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}),
    "max_dilated_asym_pads": ("MaxPool", (1, 2, 12, 15),
                              {"kernel_shape": [3, 2], "dilations": [2, 3],
                               "pads": [2, 0, 1, 2]}),
    "max_same_upper_s3": ("MaxPool", (1, 3, 17, 14),
                          {"kernel_shape": [3, 3], "strides": [3, 3], "auto_pad": "SAME_UPPER"}),
    "avg_exclude_pad": ("AveragePool", (2, 3, 9, 11),
                        {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    "avg_include_pad": ("AveragePool", (2, 3, 9, 11),
                        {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1],
                         "count_include_pad": 1}),
    "avg_ceil_include_pad": ("AveragePool", (1, 5, 10, 10),
                             {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 0, 1, 0],
                              "ceil_mode": 1, "count_include_pad": 1}),
    "avg_dilated_same_lower": ("AveragePool", (1, 2, 13, 8),
                               {"kernel_shape": [2, 3], "dilations": [2, 1],
                                "auto_pad": "SAME_LOWER"}),
    "avg_7x7_global_like": ("AveragePool", (1, 16, 7, 7), {"kernel_shape": [7, 7]}),
    "avg_resnet_s1": ("AveragePool", (1, 4, 28, 28),
                      {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}),
    "avg_wide_s3_tail": ("AveragePool", (1, 2, 7, 131),
                         {"kernel_shape": [2, 4], "strides": [1, 3], "pads": [0, 2, 1, 1]}),
    "avg_s3_dilated_ceil": ("AveragePool", (1, 3, 16, 40),
                            {"kernel_shape": [3, 3], "strides": [3, 3], "dilations": [2, 2],
                             "pads": [1, 2, 1, 2], "ceil_mode": 1}),
    "max_wide_s3_tail": ("MaxPool", (1, 2, 7, 131),
                         {"kernel_shape": [2, 4], "strides": [1, 3], "pads": [0, 2, 1, 1]}),
    "max_s1_odd_width": ("MaxPool", (1, 2, 5, 37), {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}),
    "max_pad_wider_than_row": ("MaxPool", (1, 2, 6, 3),
                               {"kernel_shape": [5, 5], "strides": [2, 2], "pads": [4, 4, 4, 4]}),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(WINDOWED))
def test_windowed_pool_matches_reference(name: str) -> None:
    op, shape, attrs = WINDOWED[name]
    geo = _Geometry(shape[2:], attrs)
    check_lone(op, [shape], (shape[0], shape[1], *geo.out), attrs)


GLOBAL = {
    "resnet_gap": ("GlobalAveragePool", (1, 2048, 7, 7)),
    "mobilenet_gap": ("GlobalAveragePool", (1, 1280, 7, 7)),
    "gap_batch2_odd": ("GlobalAveragePool", (2, 3, 5, 9)),
    "gap_3d_input": ("GlobalAveragePool", (2, 4, 37)),
    "gmp": ("GlobalMaxPool", (2, 5, 6, 7)),
    "gmp_5d": ("GlobalMaxPool", (1, 3, 4, 5, 6)),
}


@pytest.mark.parametrize("name", sorted(GLOBAL))
def test_global_pool_matches_reference(name: str) -> None:
    op, shape = GLOBAL[name]
    check_lone(op, [shape], (shape[0], shape[1], *([1] * (len(shape) - 2))), {})


def test_maxpool_with_infinities() -> None:
    x = np.random.default_rng(2).standard_normal((1, 2, 6, 6)).astype(np.float32)
    x[0, 0, :2, :2] = -np.inf
    x[0, 1, 3, 3] = np.inf
    attrs = {"kernel_shape": [2, 2], "strides": [2, 2]}
    check_lone("MaxPool", [x.shape], (1, 2, 3, 3), attrs, data=[x])


@pytest.mark.parametrize("case", ["indices", "1d", "3d", "fp16"])
def test_pool_refusals(case: str) -> None:
    attrs: dict[str, Any] = {"kernel_shape": [2, 2]}
    if case == "indices":
        x = Value("x", TensorType(DType.FLOAT32, (1, 1, 4, 4)))
        outs = [Value("y", TensorType(DType.FLOAT32, (1, 1, 3, 3))),
                Value("i", TensorType(DType.INT64, (1, 1, 3, 3)))]  # fmt: skip
        node = Node("MaxPool", [x], attrs, outputs=outs, name="mp")
        body = Graph(inputs=[x], outputs=outs, nodes=[node])
        fused = Node("lepton.Fused", [x], {"body": body, "anchor": "MaxPool", "epilogue": []},
                     outputs=[Value("f", TensorType(DType.FLOAT32, (1, 1, 3, 3)))])  # fmt: skip
    elif case == "1d":
        _, fused = lone_group("MaxPool", [(1, 2, 8)], (1, 2, 7), {"kernel_shape": [2]})
    elif case == "3d":
        _, fused = lone_group("AveragePool", [(1, 2, 4, 4, 4)], (1, 2, 3, 3, 3),
                              {"kernel_shape": [2, 2, 2]})  # fmt: skip
    else:
        _, fused = lone_group("MaxPool", [(1, 2, 4, 4)], (1, 2, 3, 3), attrs, [DType.FLOAT16])
    with pytest.raises(LoweringError):
        plan_group(fused, _tvm_target())


def test_lone_pool_is_wrapped_by_executor() -> None:
    """A lone MaxPool becomes a one-node group the pool family plans."""
    g = Graph(opset_imports={"": 18})
    x = g.add_input(Value("x", TensorType(DType.FLOAT32, (1, 2, 8, 8))))
    y = Value("y", TensorType(DType.FLOAT32, (1, 2, 4, 4)))
    node = g.append(Node("MaxPool", [x], {"kernel_shape": [2, 2], "strides": [2, 2]},
                         outputs=[y], name="mp"))  # fmt: skip
    fused, _ = _wrap_single(node)
    assert plan_group(fused, _tvm_target()).family == "pool"


@pytest.mark.parametrize("name", ["max_ceil_mode", "avg_include_pad"])
def test_windowed_pool_serial_form(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Small pools run on the calling thread (the ResNet MaxPool runs in parallel); both
    forms give the same results."""
    op, shape, attrs = WINDOWED[name]
    geo = _Geometry(shape[2:], attrs)
    out = (shape[0], shape[1], *geo.out)
    _, fused = lone_group(op, [shape], out, attrs)
    assert not plan_group(fused, _tvm_target()).config.parallel
    monkeypatch.setattr(attention_family, "SERIAL_ELEMENTS", 0)
    assert plan_group(fused, _tvm_target()).config.parallel
    check_lone(op, [shape], out, attrs)


def test_global_pool_parallel_form(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(attention_family, "SERIAL_ELEMENTS", 0)
    check_lone("GlobalMaxPool", [(2, 5, 6, 7)], (2, 5, 1, 1), {})
    check_lone("GlobalAveragePool", [(2, 3, 5, 9)], (2, 3, 1, 1), {})


EIGHT_BIT = {
    # name: (op, input shape, attrs)
    "resnet_maxpool": ("MaxPool", (1, 64, 112, 112),
                       {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    "max_ceil_mode": ("MaxPool", (1, 4, 11, 9),
                      {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}),
    "max_ceil_mode_pads": ("MaxPool", (2, 3, 10, 10),
                           {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1],
                            "ceil_mode": 1}),
    "max_dilated_asym_pads": ("MaxPool", (1, 2, 12, 15),
                              {"kernel_shape": [3, 2], "dilations": [2, 3],
                               "pads": [2, 0, 1, 2]}),
    "max_same_upper_s3": ("MaxPool", (1, 3, 17, 14),
                          {"kernel_shape": [3, 3], "strides": [3, 3], "auto_pad": "SAME_UPPER"}),
    "max_wide_s3_tail": ("MaxPool", (1, 2, 7, 131),
                         {"kernel_shape": [2, 4], "strides": [1, 3], "pads": [0, 2, 1, 1]}),
    "gmp": ("GlobalMaxPool", (2, 5, 6, 7), {}),
    "gmp_long": ("GlobalMaxPool", (1, 3, 37, 11), {}),
}  # fmt: skip


def _lone_8bit(op: str, shape: tuple[int, ...], attrs: dict[str, Any], dtype: DType) -> Node:
    """A graph holding one `op` node on `dtype` data (storing `dtype`)."""
    if op.startswith("Global"):
        out_shape = (shape[0], shape[1], *([1] * (len(shape) - 2)))
    else:
        out_shape = (shape[0], shape[1], *_Geometry(shape[2:], attrs).out)
    g = Graph(opset_imports={"": 18})
    x = g.add_input(Value("x", TensorType(dtype, shape)))
    y = Value("y", TensorType(dtype, out_shape))
    node = g.append(Node(op, [x], attrs, outputs=[y], name="n0"))
    g.outputs = [y]
    return node


@pytest.mark.parametrize("dtype", [DType.UINT8, DType.INT8])
@pytest.mark.parametrize("name", sorted(EIGHT_BIT))
def test_8bit_max_pool_matches_reference(name: str, dtype: DType) -> None:
    """Exact results on uint8/int8 data; all-minimum corners check that padding (the dtype's
    minimum) never beats a real element."""
    op, shape, attrs = EIGHT_BIT[name]
    node = _lone_8bit(op, shape, attrs, dtype)
    fused, _ = _wrap_single(node)
    plan = plan_group(fused, _tvm_target())
    assert plan.family == "pool" and plan.output_dtypes == [dtype.numpy.name]
    info = np.iinfo(dtype.numpy)
    x = _random_8bit(shape, dtype, 3)
    x[..., :3, :3] = info.min
    x[0, 0, -2:, -2:] = info.min + 1
    ref = lookup_node(node)
    assert ref is not None and ref.reference is not None
    want = np.asarray(ref.reference(node, [x], {})[0])
    (got,) = build_group(fused, TARGET)(x)
    assert got.dtype == want.dtype == dtype.numpy
    np.testing.assert_array_equal(got, want)


def _random_8bit(shape: tuple[int, ...], dtype: DType, seed: int) -> np.ndarray:
    info = np.iinfo(dtype.numpy)
    rng = np.random.default_rng(seed)
    return rng.integers(info.min, info.max, shape, endpoint=True).astype(dtype.numpy)


@pytest.mark.parametrize("dtype", [DType.UINT8, DType.INT8])
@pytest.mark.parametrize("name", ["max_ceil_mode_pads", "gmp"])
def test_8bit_max_pool_dequantized_in_its_store(name: str, dtype: DType) -> None:
    """``MaxPool(q) -> DequantizeLinear`` (a pre-quantized model's pooled tensor read by float
    ops) is one kernel storing float32, equal to the reference."""
    op, shape, attrs = EIGHT_BIT[name]
    node = _lone_8bit(op, shape, attrs, dtype)
    g = node.graph
    assert g is not None
    scale = g.add_constant(np.float32(0.037), "s")
    zero = g.add_constant(np.asarray(7, dtype.numpy), "z")
    out = Value("out", TensorType(DType.FLOAT32, node.output.shape))
    g.append(Node("DequantizeLinear", [node.output, scale, zero], outputs=[out], name="dq"))
    g.outputs = [out]
    x = _random_8bit(shape, dtype, 4)
    want = run_graph(g, {"x": x})["out"]
    get_pass("fuse_groups")()(g, PassContext())
    (fused,) = [n for n in g if n.op == "lepton.Fused"]
    plan = plan_group(fused, _tvm_target())
    assert plan.family == "pool" and plan.param_dtypes == [dtype.numpy.name]
    assert plan.output_dtypes == ["float32"]
    (got,) = build_group(fused, TARGET)(x, scale.const, zero.const)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("case", ["average", "relu_epilogue", "float_output"])
def test_8bit_pool_refusals(case: str) -> None:
    attrs: dict[str, Any] = {"kernel_shape": [2, 2], "strides": [2, 2]}
    if case == "average":
        fused, _ = _wrap_single(_lone_8bit("AveragePool", (1, 2, 4, 4), attrs, DType.UINT8))
    elif case == "relu_epilogue":
        x = Value("x", TensorType(DType.UINT8, (1, 2, 4, 4)))
        m = Value("m", TensorType(DType.UINT8, (1, 2, 2, 2)))
        y = Value("y", TensorType(DType.UINT8, (1, 2, 2, 2)))
        nodes = [Node("MaxPool", [x], attrs, outputs=[m], name="mp"),
                 Node("Relu", [m], {}, outputs=[y], name="r")]  # fmt: skip
        body = Graph(inputs=[x], outputs=[y], nodes=nodes)
        fused = Node("lepton.Fused", [x], {"body": body, "anchor": "MaxPool", "epilogue": ["Relu"]},
                     outputs=[Value("f", TensorType(DType.UINT8, (1, 2, 2, 2)))])  # fmt: skip
    else:
        x = Value("x", TensorType(DType.INT8, (1, 2, 4, 4)))
        y = Value("y", TensorType(DType.FLOAT32, (1, 2, 2, 2)))
        node = Node("MaxPool", [x], attrs, outputs=[y], name="mp")
        g = Graph(inputs=[x], outputs=[y], nodes=[node])
        fused, _ = _wrap_single(next(iter(g)))
    with pytest.raises(LoweringError):
        plan_group(fused, _tvm_target())


def test_float_pool_plan_keys_are_unchanged() -> None:
    """Float pools keep their plan keys (no dtype entry), so their builds stay cached."""
    op, shape, attrs = WINDOWED["resnet_maxpool"]
    _, fused = lone_group(op, [shape], (1, 64, 56, 56), attrs)
    key = plan_group(fused, _tvm_target()).key
    assert key[0][-1] == "float32" and "uint8" not in repr(key)


def test_pools_split_phases_with_masked_loads() -> None:
    """A plane is split into column phases by vector shuffles of masked contiguous row loads
    (no clamped per-element loads), for float32 and, with 512-bit vectors, for 8-bit data;
    8-bit data on narrower vectors goes through a padded row buffer instead."""
    from lepton_compiler.targets.tvm.schedules.x86_pool import PoolShape, pool_func

    shape = PoolShape(planes=4, h=20, w=70, ho=10, wo=35, kernel=(3, 3), strides=(2, 2),
                      dilations=(1, 1), begin=(1, 1), end=(1, 1), is_max=True,
                      include_pad=False, lanes=16)  # fmt: skip
    for script in (pool_func(shape).script(), pool_func(shape, None, "uint8", "uint8").script()):
        assert "T.Shuffle" in script and "T.masked_load" in script
    narrow = replace(shape, lanes=8)
    assert "T.masked_load" in pool_func(narrow).script()
    script = pool_func(narrow, None, "uint8", "uint8").script()
    assert "T.Shuffle" in script and "T.masked_load" not in script


@pytest.mark.parametrize("name", ["resnet_maxpool", "max_wide_s3_tail", "max_ceil_mode_pads"])
def test_8bit_max_pool_on_narrow_vectors(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """With 256-bit vectors an 8-bit plane is copied through a padded row buffer: exact too."""
    monkeypatch.setattr(pool_family, "vector_lanes", lambda target: 8)
    op, shape, attrs = EIGHT_BIT[name]
    node = _lone_8bit(op, shape, attrs, DType.UINT8)
    fused, _ = _wrap_single(node)
    assert plan_group(fused, _tvm_target()).config.lanes == 8
    x = _random_8bit(shape, DType.UINT8, 5)
    x[..., :3, :3] = 0
    ref = lookup_node(node)
    assert ref is not None and ref.reference is not None
    want = np.asarray(ref.reference(node, [x], {})[0])
    (got,) = build_group(fused, TARGET)(x)
    np.testing.assert_array_equal(got, want)
