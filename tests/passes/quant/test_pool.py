"""quantize_before_maxpool: ``QuantizeLinear(MaxPool(x))`` becomes ``MaxPool(QuantizeLinear(x))``
with bit-identical results; per-channel quantization, mixed readers, Indices and AveragePool
are left alone; a pre-quantized ``DQ -> MaxPool -> Q`` runs the pool on the 8-bit tensor."""

from __future__ import annotations

import numpy as np
import pytest

from lepton_compiler.interpreter import run_graph
from lepton_compiler.ir import DType, Graph, verify
from lepton_compiler.pass_manager import PassContext, get_pass
from tests.passes.conftest import ops, parse

_HEADER = '<ir_version: 8, opset_import: ["" : 18]>'
_POOL = "kernel_shape = [3, 3], pads = [1, 1, 1, 1], strides = [2, 2]"


def _run(graph: Graph, name: str = "quantize_before_maxpool") -> bool:
    return get_pass(name)()(graph, PassContext(verify_each=True)).modified


def _stem(dtype: str = "uint8", zero_point: int = 128, relu: bool = True) -> str:
    """x -> [Relu] -> MaxPool(pads, strides) -> Q -> DQ -> Conv; the quantized pool ``q`` is
    an output too."""
    first = "r = Relu(x)" if relu else "r = Identity(x)"
    return f"""{_HEADER}
g (float[2, 3, 9, 9] x) => (float[2, 4, 5, 5] y, {dtype}[2, 3, 5, 5] q)
<float s = {{0.05}}, {dtype} z = {{{zero_point}}}, float[4, 3, 1, 1] w = {{{_weights()}}}> {{
  {first}
  m = MaxPool<{_POOL}>(r)
  q = QuantizeLinear(m, s, z)
  d = DequantizeLinear(q, s, z)
  y = Conv(d, w)
}}"""


def _weights() -> str:
    return ", ".join(f"{v:.3f}" for v in np.linspace(-1.0, 1.0, 12))


def _feeds(seed: int, scale: float = 4.0) -> dict[str, np.ndarray]:
    """Random inputs spanning both signs and past the quantized range (saturation)."""
    rng = np.random.default_rng(seed)
    return {"x": (rng.standard_normal((2, 3, 9, 9)) * scale).astype(np.float32)}


@pytest.mark.parametrize(
    ("dtype", "zero_point", "relu"),
    [("uint8", 128, True), ("uint8", 0, True), ("int8", 0, False), ("int8", 20, False)],
)
def test_quantize_moves_before_maxpool(dtype: str, zero_point: int, relu: bool) -> None:
    text = _stem(dtype, zero_point, relu)
    g, before = parse(text), parse(text)
    assert _run(g)
    verify(g)
    first = "Relu" if relu else "Identity"
    assert ops(g) == [first, "QuantizeLinear", "MaxPool", "DequantizeLinear", "Conv"]
    pool = next(n for n in g if n.op == "MaxPool")
    assert pool.name == next(n for n in before if n.op == "MaxPool").name
    assert dict(pool.attrs) == dict(next(n for n in before if n.op == "MaxPool").attrs)
    assert pool.inputs[0] is not None and pool.inputs[0].dtype is DType.from_numpy(dtype)
    assert pool.output.dtype is DType.from_numpy(dtype) and pool.output.shape == (2, 3, 5, 5)
    assert pool.output.name == "q"
    for seed in range(3):
        feeds = _feeds(seed)
        want, got = run_graph(before, feeds), run_graph(g, feeds)
        assert got["q"].dtype == want["q"].dtype == np.dtype(dtype)
        np.testing.assert_array_equal(got["q"], want["q"])
        np.testing.assert_array_equal(got["y"], want["y"])
    assert not _run(g)


def test_padding_of_an_8bit_pool_never_wins() -> None:
    """All-negative inputs quantize to values above the dtype minimum only where they are
    real, so a border window's maximum is a real element (padding must act as -inf)."""
    text = _stem("int8", -100, relu=False)
    g, before = parse(text), parse(text)
    assert _run(g)
    feeds = {"x": -np.abs(_feeds(5, scale=1.0)["x"]) - 0.5}
    want = run_graph(before, feeds)["q"]
    got = run_graph(g, feeds)["q"]
    np.testing.assert_array_equal(got, want)
    assert want.min() > -128


def _graph(body: str, consts: str = "float s = {0.05}, uint8 z = {128}") -> Graph:
    return parse(f"""{_HEADER}
g (float[1, 2, 8, 8] x) => (float[1, 2, 4, 4] y)
<{consts}> {{
{body}
}}""")


_MAX = "m = MaxPool<kernel_shape = [2, 2], strides = [2, 2]>(x)"

REFUSED = {
    "per_channel": (
        f"{_MAX}\n q = QuantizeLinear<axis = 1>(m, s2, z2)\n y = DequantizeLinear<axis = 1>(q, "
        "s2, z2)",
        "float[2] s2 = {0.05, 0.1}, uint8[2] z2 = {128, 120}",
    ),
    "different_scales": (
        f"{_MAX}\n q = QuantizeLinear(m, s, z)\n p = QuantizeLinear(m, t, z)\n"
        " a = DequantizeLinear(q, s, z)\n b = DequantizeLinear(p, t, z)\n y = Add(a, b)",
        "float s = {0.05}, float t = {0.1}, uint8 z = {128}",
    ),
    "float_reader": (
        f"{_MAX}\n q = QuantizeLinear(m, s, z)\n d = DequantizeLinear(q, s, z)\n y = Add(d, m)",
        "float s = {0.05}, uint8 z = {128}",
    ),
    "average_pool": (
        "m = AveragePool<kernel_shape = [2, 2], strides = [2, 2]>(x)\n"
        " q = QuantizeLinear(m, s, z)\n y = DequantizeLinear(q, s, z)",
        "float s = {0.05}, uint8 z = {128}",
    ),
    "indices": (
        "m, i = MaxPool<kernel_shape = [2, 2], strides = [2, 2]>(x)\n"
        " q = QuantizeLinear(m, s, z)\n d = DequantizeLinear(q, s, z)\n"
        " f = Cast<to = 1>(i)\n y = Add(d, f)",
        "float s = {0.05}, uint8 z = {128}",
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_not_rewritten(case: str) -> None:
    body, consts = REFUSED[case]
    g = _graph(body, consts)
    before = ops(g)
    assert not _run(g)
    assert ops(g) == before


def test_equal_readers_share_the_8bit_pool() -> None:
    """Two QuantizeLinear readers with equal (separately stored) parameters both read the one
    new pool; the float input's other reader keeps the float tensor."""
    g = _graph(
        f"{_MAX}\n q = QuantizeLinear(m, s, z)\n p = QuantizeLinear(m, t, z)\n"
        " a = DequantizeLinear(q, s, z)\n b = DequantizeLinear(p, t, z)\n"
        " c = Add(a, b)\n e = MaxPool<kernel_shape = [2, 2], strides = [2, 2]>(x)\n"
        " y = Add(c, e)",
        "float s = {0.05}, float t = {0.05}, uint8 z = {128}",
    )
    before = run_graph(g, _small_feeds())["y"]
    assert _run(g)
    assert ops(g).count("QuantizeLinear") == 1
    pools = [n for n in g if n.op == "MaxPool"]
    assert sorted(str(p.output.dtype) for p in pools) == sorted(["float32", "uint8"])
    np.testing.assert_array_equal(run_graph(g, _small_feeds())["y"], before)


def _small_feeds() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {"x": (rng.standard_normal((1, 2, 8, 8)) * 3).astype(np.float32)}


def test_prequantized_pool_runs_on_the_quantized_tensor() -> None:
    """``DQ -> MaxPool -> Q`` with one scale (ONNX Runtime's QDQ form) leaves an exact round
    trip that ``lower_qdq`` removes: the pool reads the quantized input directly."""
    g = parse(f"""{_HEADER}
g (uint8[1, 2, 8, 8] x) => (float[1, 2, 4, 4] y)
<float s = {{0.05}}, uint8 z = {{128}}> {{
  d = DequantizeLinear(x, s, z)
  m = MaxPool<kernel_shape = [3, 3], pads = [1, 1, 1, 1], strides = [2, 2]>(d)
  q = QuantizeLinear(m, s, z)
  y = DequantizeLinear(q, s, z)
}}""")
    rng = np.random.default_rng(2)
    feeds = {"x": rng.integers(0, 256, (1, 2, 8, 8), dtype=np.uint8)}
    before = run_graph(g, feeds)["y"]
    assert _run(g)
    assert _run(g, "lower_qdq")
    get_pass("dead_code_elimination")()(g, PassContext())
    assert ops(g) == ["MaxPool", "DequantizeLinear"]
    pool = next(iter(g))
    assert pool.inputs[0] is g.inputs[0]
    np.testing.assert_array_equal(run_graph(g, feeds)["y"], before)
