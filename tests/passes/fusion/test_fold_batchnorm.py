"""fold_batchnorm: BN and per-channel Mul/Add disappear into Conv/ConvTranspose/Gemm/MatMul."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from lepton_compiler.frontend.onnx import import_model
from lepton_compiler.ir import Graph
from lepton_compiler.pass_manager import PassContext
from lepton_compiler.passes.fusion.fold_batchnorm import FoldBatchNormPass
from tests.passes.conftest import check_equivalent, feeds_for, ops

RNG = np.random.default_rng(0)


def _t(name: str, *shape: int, positive: bool = False) -> onnx.TensorProto:
    a = RNG.uniform(0.5, 1.5, shape) if positive else RNG.standard_normal(shape)
    return numpy_helper.from_array(a.astype(np.float32), name)


def _bn(inp: str, out: str, c: int) -> tuple[onnx.NodeProto, list[onnx.TensorProto]]:
    inits = [_t("g", c, positive=True), _t("be", c), _t("mu", c), _t("va", c, positive=True)]
    return helper.make_node("BatchNormalization", [inp, "g", "be", "mu", "va"], [out],
                            epsilon=1e-3), inits


def _model(nodes, inits, x_shape, y_shape) -> Graph:
    g = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    return import_model(m, simplify=False)


def _conv_bn(bias: bool, group: int = 1, second_user: bool = False) -> tuple[Graph, Graph]:
    bn, inits = _bn("c", "y" if not second_user else "b", 8)
    conv_in = ["x", "w", "bias"] if bias else ["x", "w"]
    nodes = [helper.make_node("Conv", conv_in, ["c"], pads=[1, 1, 1, 1], group=group), bn]
    inits += [_t("w", 8, 4 // group, 3, 3)] + ([_t("bias", 8)] if bias else [])
    if second_user:
        nodes.append(helper.make_node("Add", ["b", "c"], ["y"]))
    build = lambda: _model(nodes, inits, [1, 4, 6, 6], [1, 8, 6, 6])  # noqa: E731
    return build(), build()


@pytest.mark.parametrize("bias,group", [(False, 1), (True, 1), (True, 2), (True, 4)])
def test_bn_folds_into_conv(bias: bool, group: int) -> None:
    g, before = _conv_bn(bias, group)
    ctx = PassContext(verify_each=True)
    assert FoldBatchNormPass()(g, ctx).modified
    assert ops(g) == ["Conv"]
    check_equivalent(before, g, feeds_for(before), rtol=1e-4, atol=1e-5)
    assert not FoldBatchNormPass()(g, ctx).modified


def test_conv_output_with_a_second_user_does_not_fold() -> None:
    g, _ = _conv_bn(True, second_user=True)
    assert not FoldBatchNormPass()(g, PassContext(verify_each=True)).modified
    assert ops(g) == ["Conv", "BatchNormalization", "Add"]


def test_mul_and_add_by_channel_constants_fold() -> None:
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]),
             helper.make_node("Mul", ["c", "s"], ["m"]),
             helper.make_node("Add", ["m", "t"], ["y"])]
    inits = [_t("w", 8, 4, 1, 1), _t("s", 8, 1, 1), _t("t", 1, 8, 1, 1)]
    g = _model(nodes, inits, [2, 4, 5, 5], [2, 8, 5, 5])
    before = _model(nodes, inits, [2, 4, 5, 5], [2, 8, 5, 5])
    assert FoldBatchNormPass()(g, PassContext(verify_each=True)).modified
    assert ops(g) == ["Conv"]
    check_equivalent(before, g, feeds_for(before), rtol=1e-4, atol=1e-5)


def test_a_spatial_constant_does_not_fold() -> None:
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]),
             helper.make_node("Mul", ["c", "s"], ["y"])]
    inits = [_t("w", 8, 4, 1, 1), _t("s", 1, 1, 5, 5)]
    g = _model(nodes, inits, [2, 4, 5, 5], [2, 8, 5, 5])
    assert not FoldBatchNormPass()(g, PassContext(verify_each=True)).modified


@pytest.mark.parametrize("op", ["Gemm", "GemmT", "MatMul", "ConvTranspose"])
def test_bn_folds_into_other_anchors(op: str) -> None:
    if op.startswith("Gemm"):
        trans = op == "GemmT"
        w = _t("w", 8, 6) if trans else _t("w", 6, 8)
        nodes = [helper.make_node("Gemm", ["x", "w", "bias"], ["c"], transB=int(trans))]
        inits, xs, ys = [w, _t("bias", 8)], [3, 6], [3, 8]
    elif op == "MatMul":
        nodes = [helper.make_node("MatMul", ["x", "w"], ["c"])]
        inits, xs, ys = [_t("w", 6, 8)], [3, 6], [3, 8]
    else:
        nodes = [helper.make_node("ConvTranspose", ["x", "w", "bias"], ["c"], group=2,
                                  strides=[2, 2])]
        inits, xs, ys = [_t("w", 4, 4, 3, 3), _t("bias", 8)], [1, 4, 5, 5], [1, 8, 11, 11]
    bn, bn_inits = _bn("c", "y", 8)
    g = _model([*nodes, bn], inits + bn_inits, xs, ys)
    before = _model([*nodes, bn], inits + bn_inits, xs, ys)
    assert FoldBatchNormPass()(g, PassContext(verify_each=True)).modified
    assert "BatchNormalization" not in ops(g)
    check_equivalent(before, g, feeds_for(before), rtol=1e-4, atol=1e-5)
