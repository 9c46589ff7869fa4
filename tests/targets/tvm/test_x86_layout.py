"""TVM x86 layout family: ``Transpose`` permutations that keep the last axis in place (BERT's
head split and merge, odd sizes, runs longer than one vector chunk) match the reference
kernel; permutations that move the last axis are refused with `LoweringError`."""

from __future__ import annotations

import os
from typing import Any

import pytest

pytest.importorskip("tvm")
os.environ.setdefault("TVM_NUM_THREADS", "2")

from lepton_compiler.ir import DType
from lepton_compiler.targets.tvm.kernels import attention as attention_family
from lepton_compiler.targets.tvm.kernels import plan_group
from lepton_compiler.targets.tvm.te_ops import LoweringError

from .test_x86_attention import _tvm_target, check_lone, lone_group

TRANSPOSE = {
    # name: (input shape, perm)
    "bert_split_heads": ((1, 128, 12, 64), (0, 2, 1, 3)),
    "bert_merge_heads": ((1, 12, 128, 64), (0, 2, 1, 3)),
    "odd_batch2": ((2, 37, 3, 20), (0, 2, 1, 3)),
    "long_run_overlap": ((3, 5, 100), (1, 0, 2)),
    "two_kept_axes": ((4, 6, 7, 9), (1, 0, 2, 3)),
    "rotate_leading": ((2, 3, 4, 5, 8), (2, 0, 3, 1, 4)),
}


@pytest.mark.parametrize("name", sorted(TRANSPOSE))
def test_transpose_matches_reference(name: str) -> None:
    shape, perm = TRANSPOSE[name]
    out = tuple(shape[p] for p in perm)
    check_lone("Transpose", [shape], out, {"perm": list(perm)}, rtol=0.0)


def test_transpose_parallel_form(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(attention_family, "SERIAL_ELEMENTS", 0)
    shape, perm = TRANSPOSE["odd_batch2"]
    out = tuple(shape[p] for p in perm)
    _, fused = lone_group("Transpose", [shape], out, {"perm": list(perm)})
    assert plan_group(fused, _tvm_target()).config.parallel
    check_lone("Transpose", [shape], out, {"perm": list(perm)}, rtol=0.0)


@pytest.mark.parametrize("attrs", [{"perm": [0, 2, 1]}, {}], ids=["moves_last_axis", "reverse"])
def test_transpose_moving_the_last_axis_is_a_copy_loop(attrs: dict[str, Any]) -> None:
    """Permutations that move the last axis run as the element-wise family's copy loop."""
    shape = (2, 3, 4)
    out = tuple(shape[p] for p in attrs.get("perm", [2, 1, 0]))
    _, fused = lone_group("Transpose", [shape], out, attrs)
    assert plan_group(fused, _tvm_target()).config[0] == "ew"  # the element-wise schedule
    check_lone("Transpose", [shape], out, attrs, rtol=0.0)


@pytest.mark.parametrize("case", ["identity", "fp16"])
def test_transpose_refusals(case: str) -> None:
    shape: tuple[int, ...] = (2, 3, 4)
    attrs: dict[str, Any] = {"perm": [1, 0, 2]}
    dtypes = [DType.FLOAT32]
    if case == "identity":
        attrs = {"perm": [0, 1, 2]}
    if case == "fp16":
        dtypes = [DType.FLOAT16]
    out = tuple(shape[p] for p in attrs.get("perm", [2, 1, 0]))
    _, fused = lone_group("Transpose", [shape], out, attrs, dtypes)
    with pytest.raises(LoweringError):
        plan_group(fused, _tvm_target())


def test_same_flat_code_other_shapes_are_separate_kernels() -> None:
    """Two transposes whose flat code is identical but whose shapes differ must not share a
    cached kernel (its output shapes and input positions are part of it)."""
    from lepton_compiler.targets.tvm.build import build_group, host_target

    outs = []
    for shape in ((2, 3, 4, 6), (2, 3, 6, 4)):
        out = (shape[1], shape[0], shape[2], shape[3])
        check_lone("Transpose", [shape], out, {"perm": [1, 0, 2, 3]}, rtol=0.0)
        _, fused = lone_group("Transpose", [shape], out, {"perm": [1, 0, 2, 3]})
        outs.append(build_group(fused, host_target(2)).output_shapes)
    assert outs == [[(3, 2, 4, 6)], [(3, 2, 6, 4)]]
