"""TVM x86 pool family: MaxPool / AveragePool (strides, dilations, explicit and automatic
padding, ceil_mode, count_include_pad both ways) and the global pools match the reference
kernels; unsupported forms are refused with `LoweringError`."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pytest

pytest.importorskip("tvm")
os.environ.setdefault("TVM_NUM_THREADS", "2")

from lepton_compiler.ir import DType, Graph, Node, TensorType, Value
from lepton_compiler.ops.kernels.pool import _Geometry
from lepton_compiler.targets.tvm.executor import _wrap_single
from lepton_compiler.targets.tvm.kernels import attention as attention_family
from lepton_compiler.targets.tvm.kernels import plan_group
from lepton_compiler.targets.tvm.te_ops import LoweringError

from .test_x86_attention import _tvm_target, check_lone, lone_group

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
