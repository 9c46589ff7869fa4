"""TVM x86 int8 matrix-product groups (``lepton.QMatMul`` + float epilogue + QuantizeLinear)
match the reference interpreter on the unfused graph: BERT-like shapes, odd sizes (K not a
multiple of 4, N not whole vectors, a single row, 3-D A), uint8 and int8 activations,
per-column and per-tensor scales, with and without bias, float and requantized outputs;
with VNNI and without; unsupported groups are refused. The re-registered ``dot_16x4_vnni``
tensor intrinsic compiles under LLVM 22 and is exact."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pytest

pytest.importorskip("tvm")
os.environ.setdefault("TVM_NUM_THREADS", "2")

from lepton_compiler.interpreter import run_graph
from lepton_compiler.ir import DType, Graph, TensorType, Value
from lepton_compiler.passes.fusion import group as fusion
from lepton_compiler.targets.tvm.build import build_group
from lepton_compiler.targets.tvm.kernels import plan_group
from lepton_compiler.targets.tvm.schedules.x86_qdense import QDenseWorkload, choose_qdense_tile
from lepton_compiler.targets.tvm.te_ops import LoweringError

from .test_x86_qconv import SKYLAKE, ZNVER4, add


def qmatmul_graph(
    a_shape: tuple[int, ...],
    n: int,
    *,
    signed: bool = False,
    per_channel: bool = True,
    bias: bool = True,
    epilogue: str = "none",
    seed: int = 0,
) -> Graph:
    """``y = epilogue(QMatMul(a, ...))``. Epilogues: ``none``, ``gelu`` (lepton.Gelu),
    ``relu_q`` (Relu + QuantizeLinear to uint8), ``residual_q`` (Add of a float [.., N]
    input + QuantizeLinear to int8), ``rowvec_clip`` (Add of a float [N] input, Clip)."""
    rng = np.random.default_rng(seed)
    adt = DType.INT8 if signed else DType.UINT8
    k = a_shape[-1]
    g = Graph(opset_imports={"": 18})
    a = g.add_input(Value("a", TensorType(adt, a_shape)))
    ins: list[Value | None] = [
        a,
        g.add_constant(np.float32(0.04), "as"),
        g.add_constant(np.array(5 if signed else 131, adt.value), "az"),
        g.add_constant(rng.integers(-127, 128, (k, n)).astype(np.int8), "b"),
        g.add_constant(
            np.asarray(rng.uniform(0.002, 0.02, n) if per_channel else 0.01, np.float32), "bs"
        ),
    ]
    if bias:
        ins.append(g.add_constant(rng.integers(-3000, 3000, n).astype(np.int32), "bias"))
    y = add(g, "lepton.QMatMul", ins)
    out_shape = y.shape
    if epilogue == "gelu":
        y = add(g, "lepton.Gelu", [y])
    elif epilogue == "relu_q":
        y = add(g, "QuantizeLinear", [add(g, "Relu", [y]), g.add_constant(np.float32(0.05)),
                                      g.add_constant(np.uint8(7))])  # fmt: skip
    elif epilogue == "residual_q":
        r = g.add_input(Value("r", TensorType(DType.FLOAT32, out_shape)))
        y = add(g, "QuantizeLinear", [add(g, "Add", [y, r]), g.add_constant(np.float32(0.05)),
                                      g.add_constant(np.int8(-2))])  # fmt: skip
    elif epilogue == "rowvec_clip":
        r = g.add_input(Value("r", TensorType(DType.FLOAT32, (n,))))
        y = add(g, "Clip", [add(g, "Add", [r, y]), g.add_constant(np.float32(-2.0)),
                            g.add_constant(np.float32(3.0))])  # fmt: skip
    else:
        assert epilogue == "none"
    g.outputs = [y]
    return g


def _feeds(g: Graph, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {}
    for v in g.inputs:
        if v.dtype is DType.FLOAT32:
            feeds[v.name] = rng.standard_normal(v.shape).astype(np.float32)
        else:
            info = np.iinfo(v.dtype.value)
            feeds[v.name] = rng.integers(info.min, info.max + 1, v.shape).astype(v.dtype.value)
    return feeds


def check(a_shape: tuple[int, ...], n: int, target: dict[str, Any] = ZNVER4, **kw: Any) -> None:
    """Build the whole graph as one group and compare with the reference interpreter."""
    ref, g = qmatmul_graph(a_shape, n, **kw), qmatmul_graph(a_shape, n, **kw)
    feeds = _feeds(ref)
    want = run_graph(ref, feeds)[ref.outputs[0].name]
    fused = fusion._wrap(g, fusion._Group(list(g)))
    kernel = build_group(fused, target)
    assert kernel.family == "qdense"
    args = [feeds[v.name] if v.const is None else np.asarray(v.const) for v in fused.inputs]
    (got,) = kernel(*args)
    assert got.shape == want.shape and got.dtype == want.dtype
    if want.dtype == np.float32:
        scale = float(np.abs(want).max()) or 1.0
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-6 * scale)
    else:
        diff = np.abs(got.astype(np.int32) - want.astype(np.int32))
        assert diff.max() <= 1
        assert (diff > 0).mean() < 0.01


SHAPES = {
    "bert_ffn_small_rows": ((2, 16, 768), 3072),
    "bert_proj": ((32, 3072), 768),
    "k_odd_n_odd": ((7, 13), 21),
    "k_3_n_5": ((4, 3), 5),
    "one_row": ((1, 64), 40),
    "n_one_vector_plus_one": ((9, 40), 17),
}


@pytest.mark.parametrize("shape", list(SHAPES))
def test_shapes_float_output(shape: str) -> None:
    a_shape, n = SHAPES[shape]
    check(a_shape, n)


@pytest.mark.parametrize("epilogue", ["gelu", "relu_q", "residual_q", "rowvec_clip"])
def test_epilogues(epilogue: str) -> None:
    check((3, 5, 44), 37, epilogue=epilogue)


@pytest.mark.parametrize("shape", ["k_odd_n_odd", "bert_proj"])
def test_int8_activations(shape: str) -> None:
    a_shape, n = SHAPES[shape]
    check(a_shape, n, signed=True, epilogue="residual_q")


def test_per_tensor_scale_no_bias() -> None:
    check((6, 30), 19, per_channel=False, bias=False, epilogue="relu_q")


def test_without_vnni() -> None:
    check((5, 23), 35, SKYLAKE, signed=True, epilogue="relu_q")
    check((2, 3, 64), 48, SKYLAKE)


def test_non_2d_weights_refused() -> None:
    g = qmatmul_graph((4, 8), 16, epilogue="relu_q")
    node = next(iter(g))
    node.set_input(3, g.add_constant(np.zeros((1, 8, 16), np.int8)))
    with pytest.raises(LoweringError):
        plan_group(fusion._wrap(g, fusion._Group(list(g))), _target())


def test_float_activations_refused() -> None:
    g = qmatmul_graph((4, 8), 16)
    node = next(iter(g))
    node.set_input(2, g.add_constant(np.float32(0.0)))
    with pytest.raises(LoweringError, match="zero point"):
        plan_group(fusion._wrap(g, fusion._Group(list(g))), _target())


def test_tiles_fit_the_registers() -> None:
    for rows, k, n in [(128, 768, 768), (128, 768, 3072), (128, 3072, 768), (1, 64, 40),
                       (7, 13, 21)]:  # fmt: skip
        t = choose_qdense_tile(QDenseWorkload(rows, k, n, False, True, True))
        assert t.mb * t.nvec + min(t.mb, t.nvec) + 1 <= 30
        if rows >= 128:
            assert t.mb * t.nvec >= 12


def _target() -> Any:
    import tvm

    return tvm.target.Target(ZNVER4)


@pytest.mark.skipif(os.environ.get("LEPTON_TEST_TENSOR_INTRIN") != "1",
                    reason="imports TVM's tensor intrinsics (about 20 s); "
                           "LEPTON_TEST_TENSOR_INTRIN=1 runs it")  # fmt: skip
def test_registered_vnni_intrinsic_tensorizes() -> None:
    """``dot_16x4_vnni``, re-registered, tensorizes an int8 dense that LLVM 22 verifies and
    that is bit-exact."""
    import tvm
    from tvm import s_tir, te

    from lepton_compiler.targets.tvm.vnni import VNNI_INTRIN, register_dot_16x4_vnni

    register_dot_16x4_vnni()
    m, n, k = 8, 32, 64
    a = te.placeholder((m, k), "uint8", name="a")
    b = te.placeholder((n // 16, k // 4, 16, 4), "int8", name="b")
    rk = te.reduce_axis((0, k), name="rk")
    c = te.compute(
        (m, n),
        lambda i, j: te.sum(
            a[i, rk].astype("int32") * b[j // 16, rk // 4, j % 16, rk % 4].astype("int32"),
            axis=rk,
        ),
        name="c",
    )
    sch = s_tir.Schedule(te.create_prim_func([a, b, c]))
    blk = sch.get_sblock("c")
    i, j, kk = sch.get_loops(blk)
    jo, ji = sch.split(j, [None, 16])
    ko, ki = sch.split(kk, [None, 4])
    sch.reorder(i, jo, ko, ji, ki)
    sch.decompose_reduction(blk, ko)
    sch.tensorize(ji, VNNI_INTRIN)
    mod = tvm.compile(sch.mod, target=tvm.target.Target(ZNVER4))
    rng = np.random.default_rng(0)
    an = rng.integers(0, 256, (m, k)).astype(np.uint8)
    bn = rng.integers(-128, 128, (k, n)).astype(np.int8)
    bp = np.ascontiguousarray(bn.reshape(k // 4, 4, n // 16, 16).transpose(2, 0, 3, 1))
    out = tvm.runtime.empty((m, n), "int32")
    mod(tvm.runtime.tensor(an), tvm.runtime.tensor(bp), out)
    np.testing.assert_array_equal(out.numpy(), an.astype(np.int64) @ bn.astype(np.int64))
