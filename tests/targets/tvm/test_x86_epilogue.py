"""Element-wise epilogues on the TIR-based families (attention, norm, pool): a group fused by
`GroupFusionPass` (anchor, then a chain of element-wise ops reading constants and broadcast
group inputs) is one kernel whose results match the reference interpreter on the unfused
graph; chains the kernels cannot express are refused with `LoweringError`."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

pytest.importorskip("tvm")
os.environ.setdefault("TVM_NUM_THREADS", "2")

from lepton_compiler.interpreter import run_graph
from lepton_compiler.ir import DType, Graph, Node, TensorType, Value
from lepton_compiler.pass_manager import PassContext
from lepton_compiler.passes.fusion.group import GroupFusionPass
from lepton_compiler.targets.tvm.build import build_group, host_target
from lepton_compiler.targets.tvm.kernels import plan_group
from lepton_compiler.targets.tvm.te_ops import LoweringError

from .test_x86_attention import _tvm_target

TARGET = host_target(2)
F32 = DType.FLOAT32

#: An epilogue step: (op, other operand) where the operand is None (unary), a float (a
#: scalar constant), a shape (a new graph input), "x0" (the anchor's first input, reused),
#: "self" (the running value twice), and for the second position "rev" flips the order.
Step = tuple[str, Any] | tuple[str, Any, str]


def chain_graph(
    anchor: str,
    in_shapes: Sequence[tuple[int, ...]],
    out_shape: tuple[int, ...],
    attrs: dict[str, Any],
    steps: Sequence[Step],
) -> Graph:
    """A graph: the anchor op on inputs x0.., then the element-wise steps; output y."""
    g = Graph(opset_imports={"": 18})
    xs = [g.add_input(Value(f"x{i}", TensorType(F32, s))) for i, s in enumerate(in_shapes)]
    cur = Value("t0", TensorType(F32, out_shape))
    g.append(Node(anchor, xs, attrs, outputs=[cur], name="anchor"))
    for i, step in enumerate(steps):
        op, arg = step[0], step[1]
        out = Value(f"t{i + 1}", TensorType(F32, out_shape))
        if arg is None:
            ins = [cur]
        else:
            if arg == "self":
                other = cur
            elif arg == "x0":
                other = xs[0]
            elif isinstance(arg, float):
                other = g.add_constant(np.array(arg, np.float32), name=f"c{i}")
            else:
                other = g.add_input(Value(f"e{i}", TensorType(F32, tuple(arg))))
            ins = [other, cur] if len(step) > 2 else [cur, other]
        g.append(Node(op, ins, {}, outputs=[out], name=f"epi{i}"))
        cur = out
    g.outputs = [cur]
    return g


def check_chain(
    anchor: str,
    in_shapes: Sequence[tuple[int, ...]],
    out_shape: tuple[int, ...],
    attrs: dict[str, Any],
    steps: Sequence[Step],
    seed: int = 0,
) -> None:
    """Fuse the chain into one group, build it, compare with the unfused graph."""
    ref = chain_graph(anchor, in_shapes, out_shape, attrs, steps)
    g = chain_graph(anchor, in_shapes, out_shape, attrs, steps)
    GroupFusionPass()(g, PassContext())
    fused = [n for n in g if n.op == "lepton.Fused"]
    assert len(fused) == 1 and len(list(fused[0].attrs["body"])) == 1 + len(steps), str(g)
    rng = np.random.default_rng(seed)
    feeds = {v.name: rng.standard_normal(v.shape).astype(np.float32) for v in ref.inputs}
    kernel = build_group(fused[0], TARGET)
    args = [feeds[v.name] if v.const is None else np.asarray(v.const) for v in fused[0].inputs]
    (got,) = kernel(*args)
    want = run_graph(ref, feeds)[ref.outputs[0].name]
    scale = float(np.abs(want).max()) or 1.0
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * scale)


CASES: dict[str, tuple[Any, ...]] = {
    "attention_bias_relu": (
        "lepton.Attention", [(1, 2, 19, 8)] * 3 + [(1, 1, 1, 19)], (1, 2, 19, 8),
        {"scale": 0.35}, [("Add", (8,)), ("Relu", None)]),
    "attention_residual_scale": (
        "lepton.Attention", [(2, 3, 16, 16)] * 3, (2, 3, 16, 16), {"scale": 0.25},
        [("Add", "x0"), ("Mul", 0.5), ("Sub", (3, 1, 1), "rev")]),
    "softmax_mul_tensor": (
        "Softmax", [(3, 5, 37)], (3, 5, 37), {"axis": -1}, [("Mul", (5, 1)), ("Add", 1.0)]),
    "softmax_axis1_square": (
        "Softmax", [(2, 7, 5, 3)], (2, 7, 5, 3), {"axis": 1}, [("Mul", "self")]),
    "layernorm_relu_residual": (
        "LayerNormalization", [(4, 33, 24), (24,), (24,)], (4, 33, 24), {"axis": -1},
        [("Relu", None), ("Add", (4, 33, 24))]),
    "skiplayernorm_gelu_like": (
        "lepton.SkipLayerNorm", [(2, 9, 40), (2, 9, 40), (40,)], (2, 9, 40),
        {"epsilon": 1e-5}, [("Sigmoid", None), ("Max", (1, 40))]),
    "maxpool_relu": (
        "MaxPool", [(1, 4, 11, 9)], (1, 4, 5, 4), {"kernel_shape": [3, 3], "strides": [2, 2]},
        [("Relu", None)]),
    "avgpool_bias_clip_like": (
        "AveragePool", [(2, 3, 9, 11)], (2, 3, 5, 6),
        {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]},
        [("Add", (1, 3, 1, 1)), ("Min", 0.5)]),
    "gap_sigmoid_scale": (
        "GlobalAveragePool", [(2, 16, 7, 7)], (2, 16, 1, 1), {},
        [("Sigmoid", None), ("Mul", (16, 1, 1)), ("Div", 3.0)]),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(CASES))
def test_epilogue_matches_reference(name: str) -> None:
    check_chain(*CASES[name])


def test_three_tensor_operands_are_refused() -> None:
    steps: list[Step] = [("Add", (24,)), ("Mul", (1, 24)), ("Sub", (33, 24))]
    g = chain_graph("LayerNormalization", [(4, 33, 24), (24,)], (4, 33, 24), {}, steps)
    GroupFusionPass()(g, PassContext())
    (fused,) = [n for n in g if n.op == "lepton.Fused"]
    with pytest.raises(LoweringError):
        plan_group(fused, _tvm_target())


def test_unsupported_epilogue_op_is_refused() -> None:
    """Sign is element-wise (it joins the group) but not in the shared table."""
    g = chain_graph("MaxPool", [(1, 2, 8, 8)], (1, 2, 4, 4),
                    {"kernel_shape": [2, 2], "strides": [2, 2]}, [("Sign", None)])  # fmt: skip
    GroupFusionPass()(g, PassContext())
    (fused,) = [n for n in g if n.op == "lepton.Fused"]
    assert [n.op for n in fused.attrs["body"]] == ["MaxPool", "Sign"]
    with pytest.raises(LoweringError):
        plan_group(fused, _tvm_target())
