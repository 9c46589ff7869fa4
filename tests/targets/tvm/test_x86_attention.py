"""TVM x86 attention family: ``lepton.Attention`` (every mask and broadcast form the reference
supports) and a lone ``Softmax`` or ``LogSoftmax`` (any axis) match the reference kernels;
unsupported forms are refused with `LoweringError`."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

pytest.importorskip("tvm")
os.environ.setdefault("TVM_NUM_THREADS", "2")

from lepton_compiler.ir import DType, Graph, Node, TensorType, Value
from lepton_compiler.ops.registry import lookup_node
from lepton_compiler.targets.tvm.build import build_group, host_target
from lepton_compiler.targets.tvm.executor import _wrap_single
from lepton_compiler.targets.tvm.kernels import attention as attention_family
from lepton_compiler.targets.tvm.kernels import plan_group
from lepton_compiler.targets.tvm.te_ops import LoweringError

TARGET = host_target(2)


def lone_group(
    op: str,
    in_shapes: Sequence[tuple[int, ...] | None],
    out_shape: tuple[int, ...],
    attrs: dict[str, Any],
    dtypes: Sequence[DType] | None = None,
    opset: int = 18,
) -> tuple[Node, Node]:
    """A graph holding one `op` node (None input shapes are absent optional inputs) and that
    node wrapped as a one-node ``lepton.Fused`` group, as the executor wraps it."""
    dts = list(dtypes) if dtypes is not None else [DType.FLOAT32] * len(in_shapes)
    g = Graph(opset_imports={"": opset})
    ins: list[Value | None] = []
    for i, (s, dt) in enumerate(zip(in_shapes, dts, strict=True)):
        ins.append(None if s is None else g.add_input(Value(f"x{i}", TensorType(dt, s))))
    out = Value("y", TensorType(DType.FLOAT32, out_shape))
    node = Node(op, ins, attrs, outputs=[out], name="n0")
    g.append(node)
    g.outputs = [out]
    fused, _ = _wrap_single(node)
    return node, fused


def check_lone(
    op: str,
    in_shapes: Sequence[tuple[int, ...] | None],
    out_shape: tuple[int, ...],
    attrs: dict[str, Any],
    seed: int = 0,
    rtol: float = 1e-5,
    data: Sequence[np.ndarray | None] | None = None,
    opset: int = 18,
) -> None:
    """Build the kernel for a lone `op` node and compare it with the op's reference kernel."""
    node, fused = lone_group(op, in_shapes, out_shape, attrs, opset=opset)
    rng = np.random.default_rng(seed)
    if data is None:
        data = [None if s is None else rng.standard_normal(s).astype(np.float32)
                for s in in_shapes]  # fmt: skip
    ref = lookup_node(node)
    assert ref is not None and ref.reference is not None
    want = np.asarray(ref.reference(node, list(data), {})[0])
    kernel = build_group(fused, TARGET)
    (got,) = kernel(*[d for d in data if d is not None])
    assert got.shape == want.shape == out_shape
    scale = float(np.abs(want[np.isfinite(want)]).max(initial=0.0)) or 1.0
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * scale)


# -- lepton.Attention ----------------------------------------------------------------------------

ATTENTION = {
    # name: (q, k, v, mask, out)
    "bert_base": ((1, 12, 128, 64), (1, 12, 128, 64), (1, 12, 128, 64), (1, 1, 1, 128),
                  (1, 12, 128, 64)),
    "no_mask": ((1, 4, 32, 16), (1, 4, 32, 16), (1, 4, 32, 16), None, (1, 4, 32, 16)),
    "odd_seq_batch2": ((2, 3, 37, 24), (2, 3, 45, 24), (2, 3, 45, 20), (2, 1, 37, 45),
                       (2, 3, 37, 20)),
    "one_head_rows_split": ((1, 1, 50, 64), (1, 1, 50, 64), (1, 1, 50, 64), (1, 1, 1, 50),
                            (1, 1, 50, 64)),
    "mask_2d_causal_shape": ((2, 2, 19, 8), (2, 2, 19, 8), (2, 2, 19, 8), (19, 19),
                             (2, 2, 19, 8)),
    "mask_1d": ((1, 2, 5, 8), (1, 2, 7, 8), (1, 2, 7, 72), (7,), (1, 2, 5, 72)),
    "mask_per_row": ((1, 2, 9, 8), (1, 2, 11, 8), (1, 2, 11, 8), (1, 2, 9, 1), (1, 2, 9, 8)),
    # keys padded to 32: the last mask row must not be read past its 17 columns
    "mask_rows_padded_keys": ((1, 1, 2, 8), (1, 1, 17, 8), (1, 1, 17, 8), (1, 1, 2, 17),
                              (1, 1, 2, 8)),
    "kv_broadcast_heads": ((2, 4, 17, 16), (2, 1, 17, 16), (1, 1, 17, 16), (2, 1, 1, 17),
                           (2, 4, 17, 16)),
    "rank2": ((33, 40), (21, 40), (21, 130), None, (33, 130)),
    "rank3_mask_lead": ((3, 6, 8), (3, 6, 8), (3, 6, 8), (3, 6, 6), (3, 6, 8)),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(ATTENTION))
def test_attention_matches_reference(name: str) -> None:
    q, k, v, mask, out = ATTENTION[name]
    check_lone("lepton.Attention", [q, k, v, mask], out, {"scale": 1.0 / np.sqrt(q[-1])})


def test_attention_large_negative_mask() -> None:
    """BERT's padding mask: -10000 (or float32's lowest) on masked keys, one row fully masked."""
    shapes = [(1, 2, 16, 8), (1, 2, 16, 8), (1, 2, 16, 8), (1, 2, 16, 16)]
    rng = np.random.default_rng(3)
    data = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    mask = np.zeros(shapes[3], np.float32)
    mask[..., 10:] = -10000.0
    mask[..., 3, :] = np.finfo(np.float32).min
    data[3] = mask
    check_lone("lepton.Attention", shapes, (1, 2, 16, 8), {"scale": 0.35}, data=data)


def test_attention_is_one_flat_kernel() -> None:
    _, fused = lone_group("lepton.Attention", [(1, 12, 128, 64)] * 3 + [(1, 1, 1, 128)],
                          (1, 12, 128, 64), {"scale": 0.125})  # fmt: skip
    plan = plan_group(fused, _tvm_target())
    assert plan.family == "attention"
    assert plan.param_shapes == [(98304,)] * 3 + [(128,)]
    assert plan.kernel_output_shapes == [(98304,)]


@pytest.mark.parametrize(
    "case",
    [
        "fp16",
        "no_scale",
        "bad_mask",
        "symbolic",
    ],
)
def test_attention_refusals(case: str) -> None:
    shapes: list[tuple[Any, ...] | None] = [(1, 2, 8, 4)] * 3 + [None]
    attrs: dict[str, Any] = {"scale": 0.5}
    dtypes = [DType.FLOAT32] * 4
    if case == "fp16":
        dtypes[0] = DType.FLOAT16
    if case == "no_scale":
        attrs = {}
    if case == "bad_mask":
        shapes[3] = (1, 1, 3, 8)
    if case == "symbolic":
        shapes[0] = ("b", 2, 8, 4)
    _, fused = lone_group("lepton.Attention", shapes, (1, 2, 8, 4), attrs, dtypes)
    with pytest.raises(LoweringError):
        plan_group(fused, _tvm_target())


# -- Softmax -------------------------------------------------------------------------------------

SOFTMAX = {
    "last_axis_bert": ((1, 12, 128, 128), -1),
    "last_axis_odd": ((3, 5, 37), -1),
    "last_axis_short": ((7, 3), 1),
    "middle_axis": ((2, 19, 21), 1),
    "first_axis": ((5, 6, 40), 0),
    "inner_tail": ((2, 7, 5, 3), 1),
    "wide_inner_overlap": ((2, 5, 300), 1),
}


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("name", sorted(SOFTMAX))
def test_softmax_matches_reference(op: str, name: str) -> None:
    shape, axis = SOFTMAX[name]
    check_lone(op, [shape], shape, {"axis": axis})


def test_softmax_extreme_values() -> None:
    x = np.array([[1e4, 0.0, -1e4, 3.0], [-90.0, -95.0, -200.0, -88.0]], np.float32)
    check_lone("Softmax", [x.shape], x.shape, {"axis": -1}, data=[x])


def test_logsoftmax_extreme_values_stay_finite() -> None:
    """``x - max - log(sum(exp(x - max)))`` as ONNX Runtime computes it: finite where the
    softmax itself underflows to 0 (a log of the softmax would give -inf)."""
    x = np.array([[1e4, 0.0, -1e4, 3.0], [-90.0, -95.0, -200.0, -88.0]], np.float32)
    _, fused = lone_group("LogSoftmax", [x.shape], x.shape, {"axis": -1})
    (got,) = build_group(fused, TARGET)(x)
    m = x.max(axis=-1, keepdims=True)
    want = x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-4)


def test_softmax_before_opset_13_is_refused() -> None:
    """Before opset 13 Softmax flattens to 2-D from `axis`: not this kernel's semantics."""
    node, _ = lone_group("Softmax", [(2, 3, 4)], (2, 3, 4), {"axis": 1}, opset=11)
    with pytest.raises(LoweringError):
        attention_family._plan_softmax(
            attention_family.AnchorGroup(node, {node.inputs[0]: 0}), _tvm_target()
        )


def _tvm_target() -> Any:
    import tvm

    return tvm.target.Target(TARGET)


@pytest.mark.parametrize("name", ["last_axis_odd", "middle_axis", "inner_tail",
                                  "wide_inner_overlap"])  # fmt: skip
def test_softmax_parallel_form(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Small tensors run on the calling thread; with the threshold at 0 the same shapes run
    split into parallel tasks, with the same results."""
    monkeypatch.setattr(attention_family, "SERIAL_ELEMENTS", 0)
    shape, axis = SOFTMAX[name]
    _, fused = lone_group("Softmax", [shape], shape, {"axis": axis})
    assert plan_group(fused, _tvm_target()).config[-1] > 1
    check_lone("Softmax", [shape], shape, {"axis": axis})


def test_small_memory_bound_kernels_run_serially() -> None:
    """Below the threshold a kernel runs on the calling thread; BERT's score softmax
    (12 x 128 x 128) is above it."""
    _, small = lone_group("Softmax", [(1, 4, 64, 64)], (1, 4, 64, 64), {"axis": -1})
    assert plan_group(small, _tvm_target()).config[-1] == 1
    _, big = lone_group("Softmax", [(1, 12, 128, 128)], (1, 12, 128, 128), {"axis": -1})
    assert plan_group(big, _tvm_target()).config[-1] > 1
