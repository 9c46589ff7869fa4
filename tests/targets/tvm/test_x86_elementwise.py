"""Element-wise ops through the TVM backend: anchor-less chains, lone ops, and conv epilogues
built from `te_elementwise`'s table match the reference interpreter; ops outside the table
are refused."""

from __future__ import annotations

import os

import numpy as np
import pytest

pytest.importorskip("tvm")
os.environ.setdefault("TVM_NUM_THREADS", "2")

from lepton_compiler.interpreter import run_graph
from lepton_compiler.pass_manager import PassContext
from lepton_compiler.passes.fusion.group import GroupFusionPass
from lepton_compiler.targets.tvm.build import build_group, host_target
from lepton_compiler.targets.tvm.executor import _wrap_single
from lepton_compiler.targets.tvm.te_ops import LoweringError
from lepton_compiler.testing import graph_from_text

HEADER = '<ir_version: 8, opset_import: ["" : 18]>\n'
TARGET = host_target(2)


def _run_group(text: str, seed: int = 0) -> None:
    """Fuse the graph (one group expected), build it, compare with the unfused reference."""
    g, ref = graph_from_text(text), graph_from_text(text)
    GroupFusionPass()(g, PassContext())
    groups = [n for n in g if n.op == "lepton.Fused"]
    assert len(groups) == 1, str(g)
    rng = np.random.default_rng(seed)
    feeds = {v.name: rng.standard_normal(v.shape).astype(np.float32) for v in ref.inputs}
    want = run_graph(ref, feeds)
    kernel = build_group(groups[0], TARGET)
    args = [feeds[v.name] if v.name in feeds else v.const for v in groups[0].inputs]
    got = kernel(*args)
    np.testing.assert_allclose(got[0], want[ref.outputs[0].name], rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize(
    "expr",
    [
        "HardSwish(x)",
        "Sigmoid(x)",
        "Tanh(x)",
        "Erf(x)",
        "LeakyRelu<alpha = 0.2>(x)",
        "Softsign(x)",
        "Abs(x)",
    ],
)
def test_lone_unary_op(expr: str) -> None:
    text = HEADER + f"g (float[2,3,17] x) => (float[2,3,17] y) {{\n  y = {expr}\n}}"
    g = graph_from_text(text)
    node = next(iter(g))
    fused, _ = _wrap_single(node)
    kernel = build_group(fused, TARGET)
    x = np.random.default_rng(1).standard_normal((2, 3, 17)).astype(np.float32) * 3
    want = run_graph(graph_from_text(text), {"x": x})["y"]
    np.testing.assert_allclose(kernel(x)[0], want, rtol=2e-5, atol=2e-6)


def test_chain_with_broadcast_max_and_tensor_pow() -> None:
    text = HEADER + (
        "g (float[4,16] a, float[16] b, float[4,1] e) => (float[4,16] y) {\n"
        "  s = Max(a, b)\n  t = Sigmoid(s)\n  y = Pow(t, e)\n}"
    )
    _run_group(text)


def test_conv_with_hardswish_epilogue() -> None:
    text = HEADER + (
        "g (float[1,8,16,16] x, float[16,8,1,1] w, float[16] b) => (float[1,16,16,16] y) {\n"
        "  c = Conv(x, w, b)\n  y = HardSwish(c)\n}"
    )
    _run_group(text)


def test_unknown_op_is_refused() -> None:
    text = HEADER + "g (float[8] x) => (float[8] y) {\n  y = Sin(x)\n}"
    node = next(iter(graph_from_text(text)))
    fused, _ = _wrap_single(node)
    with pytest.raises(LoweringError):
        build_group(fused, TARGET)


def test_cast_chain_from_int64_mask() -> None:
    """BERT's mask preparation: Cast(int64 -> float) then (1 - m) * -10000."""
    text = HEADER + (
        "g (int64[2,16] m) => (float[2,16] y) {\n"
        "  one = Constant<value = float {1.0}>()\n"
        "  big = Constant<value = float {-10000.0}>()\n"
        "  f = Cast<to = 1>(m)\n  d = Sub(one, f)\n  y = Mul(d, big)\n}"
    )
    g, ref = graph_from_text(text), graph_from_text(text)
    GroupFusionPass()(g, PassContext())
    group = next(n for n in g if n.op == "lepton.Fused")
    kernel = build_group(group, TARGET)
    assert kernel.param_dtypes[0] == "int64"  # then the two scalar constants
    m = np.random.default_rng(0).integers(0, 2, (2, 16)).astype(np.int64)
    args = [m if v.name == "m" else v.const for v in group.inputs]
    np.testing.assert_array_equal(kernel(*args)[0], run_graph(ref, {"m": m})["y"])


def test_integer_add_and_float_add_are_different_kernels() -> None:
    def lone(dtype: str) -> object:
        text = HEADER + f"g ({dtype}[8] a, {dtype}[8] b) => ({dtype}[8] y) {{\n  y = Add(a, b)\n}}"
        fused, _ = _wrap_single(next(iter(graph_from_text(text))))
        return build_group(fused, TARGET)

    k_int, k_float = lone("int64"), lone("float")
    assert k_int.digest != k_float.digest
    a = np.arange(8, dtype=np.int64)
    np.testing.assert_array_equal(k_int(a, a)[0], a + a)
    assert k_int.output_dtypes == ["int64"]


def test_integer_div_is_refused() -> None:
    text = HEADER + "g (int64[8] a, int64[8] b) => (int64[8] y) {\n  y = Div(a, b)\n}"
    fused, _ = _wrap_single(next(iter(graph_from_text(text))))
    with pytest.raises(LoweringError, match="Div on int64"):
        build_group(fused, TARGET)


@pytest.mark.parametrize(("dtype", "zp"), [("uint8", 128), ("int8", -3)])
def test_lone_quantize_linear_rounds_half_to_even_and_saturates(dtype: str, zp: int) -> None:
    """QuantizeLinear as a kernel equals the reference exactly: ties round to even (a
    power-of-two scale makes ``x / scale`` an exact tie), values far outside the range
    (±1e10, past int32) saturate; DequantizeLinear reads the result back."""
    text = HEADER + (
        f"g (float[2,3,40] x) => ({dtype}[2,3,40] y) "
        f"<float s = {{0.25}}, {dtype} z = {{{zp}}}> {{\n  y = QuantizeLinear(x, s, z)\n}}"
    )
    g = graph_from_text(text)
    fused, _ = _wrap_single(next(iter(g)))
    kernel = build_group(fused, TARGET)
    rng = np.random.default_rng(3)
    x = rng.integers(-300, 300, (2, 3, 40)) * 0.5 + 0.25 * rng.integers(0, 2, (2, 3, 40))
    x = x.astype(np.float32) * 0.25
    x.flat[:6] = [1e10, -1e10, 0.125, -0.125, 0.375, 31.875]
    want = run_graph(graph_from_text(text), {"x": x})["y"]
    got = kernel(x, np.float32(0.25), np.array(zp, dtype))[0]
    assert got.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(got, want)
