"""The integer product template (``lepton.QMatMul``): exact int32 sums against the registry's
reference, uint8/int8 inputs, per-column and per-tensor scales, with and without bias, float
and requantized (uint8/int8) outputs, reductions split into chunks to stay exact, odd sizes,
ONNX Runtime's QLinearMatMul; refusals fall back to the reference kernel.

The graphs are built with the IR and grouped by the ``fuse_groups`` pass (`QGraph`); the
helpers here are shared with ``test_qconv.py``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

pytest.importorskip("numba")

from lepton_compiler.ir import Graph, Value, tensor_type_of
from lepton_compiler.ops import lookup
from lepton_compiler.ops.infer import refresh_types
from lepton_compiler.pass_manager import PassContext, get_pass
from lepton_compiler.targets.graph_steps import wrap_single
from lepton_compiler.targets.numba.executor import StaticExecutor
from lepton_compiler.targets.numba.kernel import build_kernel
from lepton_compiler.targets.numba.templates import template_for
from lepton_compiler.testing import model_from_text, run_onnxruntime, run_reference

RNG = np.random.default_rng(0)


@pytest.fixture(autouse=True)
def same_data_in_every_order() -> None:
    """Restart `RNG` before each test, so that its data do not depend on which tests ran."""
    RNG.bit_generator.state = np.random.default_rng(0).bit_generator.state


class QGraph:
    """A small IR graph written op by op (types inferred as nodes are added)."""

    def __init__(self) -> None:
        self.graph = Graph(opset_imports={"": 21, "lepton": 1})
        self.feeds: dict[str, np.ndarray] = {}

    def input(self, name: str, value: np.ndarray) -> Value:
        """A graph input fed with `value`."""
        v = Value(name, tensor_type_of(value))
        self.graph.add_input(v)
        self.feeds[name] = value
        return v

    def const(self, value: Any, dtype: Any) -> Value:
        """A constant (initializer)."""
        v = Value(self.graph.unique_name("k"), const=np.asarray(value, dtype=dtype))
        self.graph.register_constant(v)
        return v

    def op(self, op: str, *inputs: Value | None, **attrs: Any) -> Value:
        """Append `op` and return its output."""
        node = self.graph.make_node(op, list(inputs), attrs, name=self.graph.unique_name("n"))
        node.outputs[0].name = self.graph.unique_name(op.split(".")[-1].lower())
        refresh_types(node)
        return node.outputs[0]

    def quantize(self, y: Value, scale: float, zero_point: int, dtype: Any) -> Value:
        """``QuantizeLinear(y, scale, zero_point)`` with constant scalars."""
        return self.op(
            "QuantizeLinear", y, self.const(scale, np.float32), self.const(zero_point, dtype)
        )

    def output(self, v: Value) -> None:
        self.graph.outputs = [v]


def run_both(build: Callable[[], QGraph], threads: int = 2) -> tuple[Any, Any, Any]:
    """Build the graph twice: run one on the reference interpreter, group the other with
    ``fuse_groups`` and run it on the Numba executor. Returns (numba output, reference output,
    executor)."""
    ref_graph = build()
    expected = next(iter(run_reference(ref_graph.graph, ref_graph.feeds).values()))
    qg = build()
    get_pass("fuse_groups")().run(qg.graph, PassContext())
    ex = StaticExecutor(qg.graph, threads)
    got = next(iter(ex.run(qg.feeds).values()))
    got_again = next(iter(ex.run(qg.feeds).values()))  # the second run reuses the buffers
    np.testing.assert_array_equal(got, got_again)
    return got, expected, ex


def run_tiled(build: Callable[[], QGraph], tiles: int = 2) -> tuple[Any, Any, str]:
    """Write the graph's one group with `tiles` product tiles (one per thread), compile it
    with ``parallel=True`` and call it on its inputs. Returns (output in the reference's
    shape, reference output, source)."""
    ref_graph = build()
    expected = next(iter(run_reference(ref_graph.graph, ref_graph.feeds).values()))
    qg = build()
    get_pass("fuse_groups")().run(qg.graph, PassContext())
    (node,) = qg.graph.nodes
    fused, values = wrap_single(node) if node.op != "lepton.Fused" else (node, node.inputs)
    plan = template_for(fused).plan(fused, tiles)  # type: ignore[union-attr]
    kernel = build_kernel(plan)
    inputs = [v.const if v.const is not None else qg.feeds[v.name] for v in values]
    (out,) = kernel(*inputs)
    return out.reshape(np.shape(expected)), expected, plan.source


def families(ex: StaticExecutor) -> list[str]:
    return [s.kernel.family for s in ex._steps if s.kernel is not None]


def source(ex: StaticExecutor, family: str) -> str:
    k = next(k for k in ex.kernels if k.family == family)
    return k.path.read_text(encoding="utf-8")


def assert_quantized_close(got: np.ndarray, expected: np.ndarray, max_share: float = 0.01) -> None:
    """Equal dtype and shape; values within one step, and off by one only rarely (float32
    arithmetic in another order can move a value across a rounding tie)."""
    assert got.dtype == expected.dtype and got.shape == expected.shape
    diff = np.abs(got.astype(np.int32) - expected.astype(np.int32))
    assert diff.max(initial=0) <= 1
    assert np.count_nonzero(diff) <= max_share * diff.size


def integer_data(shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    info = np.iinfo(dtype)
    return RNG.integers(info.min, int(info.max) + 1, shape).astype(dtype)


def qmatmul_graph(
    a: np.ndarray,
    zp: int,
    b: np.ndarray,
    b_scale: np.ndarray,
    bias: np.ndarray | None,
    epilogue: Callable[[QGraph, Value], Value] | None = None,
) -> Callable[[], QGraph]:
    def build() -> QGraph:
        g = QGraph()
        x = g.input("a", a)
        args = [x, g.const(0.02, np.float32), g.const(zp, a.dtype), g.const(b, np.int8),
                g.const(b_scale, np.float32)]  # fmt: skip
        if bias is not None:
            args.append(g.const(bias, np.int32))
        y = g.op("lepton.QMatMul", *args)
        g.output(epilogue(g, y) if epilogue is not None else y)
        return g

    return build


def test_reference_is_the_registry_op() -> None:
    assert lookup("lepton", "QMatMul").reference is not None


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
@pytest.mark.parametrize("per_channel", [True, False])
def test_float_output_is_exact(dtype: Any, per_channel: bool) -> None:
    a = integer_data((2, 7, 37), dtype)
    b = integer_data((37, 13), np.int8)
    scale = RNG.uniform(0.001, 0.01, 13 if per_channel else 1).astype(np.float32)
    bias = RNG.integers(-5000, 5000, 13).astype(np.int32)
    got, expected, ex = run_both(qmatmul_graph(a, 3 if dtype == np.uint8 else -2, b, scale, bias))
    assert families(ex) == ["qdense"]
    assert got.dtype == np.float32 and got.shape == (2, 7, 13)
    np.testing.assert_array_equal(got, expected)  # same int32 sum, same float32 rounding


def test_symmetric_int8_without_bias_per_tensor_scale() -> None:
    a = integer_data((5, 9), np.int8)
    b = integer_data((9, 4), np.int8)
    got, expected, ex = run_both(qmatmul_graph(a, 0, b, np.float32([0.25]), None))
    assert families(ex) == ["qdense"]
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("out_dtype", [np.uint8, np.int8])
def test_bias_relu_requantized_in_the_store(out_dtype: Any) -> None:
    a = integer_data((11, 70), np.uint8)
    b = integer_data((70, 19), np.int8)
    scale = RNG.uniform(0.002, 0.004, 19).astype(np.float32)
    bias = RNG.integers(-3000, 3000, 19).astype(np.int32)
    zp = 128 if out_dtype == np.uint8 else 0

    def epilogue(g: QGraph, y: Value) -> Value:
        return g.quantize(g.op("Relu", y), 0.05, zp, out_dtype)

    got, expected, ex = run_both(qmatmul_graph(a, 120, b, scale, bias, epilogue))
    assert families(ex) == ["qdense"]
    src = source(ex, "qdense")
    assert "epilogue: Relu -> QuantizeLinear" in src
    assert "v1 = round(min(max(v0 / C1, " in src and src.count(" + 128\n") == (zp == 128)
    assert_quantized_close(got, expected)


def test_residual_add_of_a_dequantized_side_input() -> None:
    a = integer_data((6, 33), np.uint8)
    side = integer_data((6, 8), np.uint8)
    b = integer_data((33, 8), np.int8)
    scale = np.full(8, 0.003, np.float32)

    def build() -> QGraph:
        g = qmatmul_graph(a, 7, b, scale, None)()
        y = g.graph.outputs[0]
        s = g.op("DequantizeLinear", g.input("side", side), g.const(0.1, np.float32),
                 g.const(9, np.uint8))  # fmt: skip
        g.output(g.quantize(g.op("Add", y, s), 0.1, 3, np.uint8))
        return g

    got, expected, ex = run_both(build)
    assert "qdense" in families(ex)
    assert_quantized_close(got, expected)


def test_long_reduction_is_split_into_exact_chunks() -> None:
    k = 1500  # 1500 * 127 * 255 > 2^24: one float32 product would round (odd partial sums)
    a = np.full((3, k), 255, np.uint8)
    a[:, ::7] = 0
    b = np.full((k, 5), 127, np.int8)
    b[:, 1] = -127
    got, expected, ex = run_both(qmatmul_graph(a, 0, b, np.ones(5, np.float32), None))
    assert "in 3 chunk(s) of 500" in source(ex, "qdense")
    np.testing.assert_array_equal(got, expected)
    exact = 255 * 127 * (k - len(range(0, k, 7)))
    assert got[0, 0] == np.float32(exact) * np.float32(0.02)
    got, expected, _ = run_tiled(qmatmul_graph(a, 0, b, np.ones(5, np.float32), None))
    np.testing.assert_array_equal(got, expected)


def test_parallel_tiles() -> None:
    a = integer_data((53, 600), np.uint8)
    b = integer_data((600, 31), np.int8)
    bias = RNG.integers(-100, 100, 31).astype(np.int32)
    got, expected, src = run_tiled(qmatmul_graph(a, 0, b, np.full(31, 1e-3, np.float32), bias))
    assert "one tile of rows per thread" in src and "step = 32" in src
    np.testing.assert_array_equal(got, expected)


def test_matches_onnxruntime_qlinearmatmul() -> None:
    a = integer_data((4, 24), np.uint8)
    b = integer_data((24, 6), np.int8)
    got, _, _ = run_both(
        qmatmul_graph(
            a, 100, b, np.full(6, 0.01, np.float32), None,
            lambda g, y: g.quantize(y, 0.2, 128, np.uint8),
        )
    )  # fmt: skip
    values = ", ".join(str(int(v)) for v in b.reshape(-1))
    text = f"""
        <ir_version: 10, opset_import: ["" : 21]>
        g (uint8[4, 24] a) => (uint8[4, 6] y)
          <float sa = {{0.02}}, uint8 za = {{100}}, int8[24, 6] b = {{{values}}},
           float sb = {{0.01}}, int8 zb = {{0}}, float sy = {{0.2}}, uint8 zy = {{128}}> {{
            y = QLinearMatMul(a, sa, za, b, sb, zb, sy, zy)
        }}"""
    expected = run_onnxruntime(model_from_text(text), {"a": a})["y"]
    assert_quantized_close(got, expected)


def test_non_constant_weights_fall_back() -> None:
    a = integer_data((3, 4), np.uint8)
    b = integer_data((4, 2), np.int8)

    def build() -> QGraph:
        g = QGraph()
        y = g.op("lepton.QMatMul", g.input("a", a), g.const(0.1, np.float32),
                 g.const(0, np.uint8), g.input("b", b), g.const(0.1, np.float32))  # fmt: skip
        g.output(g.op("Relu", y))
        return g

    got, expected, ex = run_both(build)
    assert families(ex) == []
    assert "constant weight" in next(iter(ex.build_errors.values()))
    np.testing.assert_array_equal(got, expected)


def test_per_channel_requantization_is_refused() -> None:
    a = integer_data((3, 4), np.uint8)
    b = integer_data((4, 2), np.int8)

    def epilogue(g: QGraph, y: Value) -> Value:
        return g.op("QuantizeLinear", y, g.const([0.1, 0.2], np.float32),
                    g.const([0, 0], np.uint8), axis=1)  # fmt: skip

    got, expected, ex = run_both(qmatmul_graph(a, 0, b, np.ones(2, np.float32), None, epilogue))
    assert families(ex) == []
    assert "constant scalar scale" in next(iter(ex.build_errors.values()))
    np.testing.assert_array_equal(got, expected)


def test_quantized_output_is_refused_by_the_float_templates() -> None:
    x = RNG.standard_normal((4, 6)).astype(np.float32)
    w = RNG.standard_normal((6, 3)).astype(np.float32)

    def build() -> QGraph:
        g = QGraph()
        y = g.op("MatMul", g.input("x", x), g.const(w, np.float32))
        g.output(g.quantize(y, 0.05, 10, np.uint8))
        return g

    got, expected, ex = run_both(build)
    assert "dense" not in families(ex)
    assert "stores float32 only" in next(iter(ex.build_errors.values()))
    assert_quantized_close(got, expected)


def test_rank_3_rows_with_a_float_vector_add_and_tanh() -> None:
    a = integer_data((2, 3, 17), np.uint8)
    b = integer_data((17, 10), np.int8)
    c = RNG.standard_normal(10).astype(np.float32)

    def epilogue(g: QGraph, y: Value) -> Value:
        return g.op("Tanh", g.op("Add", y, g.const(c, np.float32)))

    got, expected, ex = run_both(
        qmatmul_graph(a, 50, b, np.full(10, 0.001, np.float32), None, epilogue)
    )
    assert families(ex) == ["qdense"] and got.shape == (2, 3, 10)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_dequantize_add_chain_runs_in_the_elementwise_template() -> None:
    q = integer_data((4, 9), np.int8)
    r = RNG.standard_normal((4, 9)).astype(np.float32)

    def build() -> QGraph:
        g = QGraph()
        d = g.op("DequantizeLinear", g.input("q", q), g.const(0.07, np.float32),
                 g.const(-5, np.int8))  # fmt: skip
        g.output(g.op("Relu", g.op("Add", d, g.input("r", r))))
        return g

    got, expected, ex = run_both(build)
    assert families(ex) == ["elementwise"]
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


def test_quantize_dequantize_pair_inside_a_float_chain() -> None:
    x = (RNG.standard_normal((5, 12)) * 3).astype(np.float32)
    x[0, :4] = [0.25, 0.75, -0.25, 1e30]  # ties (scale 0.5) round to even; far values saturate

    def build() -> QGraph:
        g = QGraph()
        q = g.quantize(g.input("x", x), 0.5, 3, np.int8)
        d = g.op("DequantizeLinear", q, g.const(0.5, np.float32), g.const(3, np.int8))
        g.output(g.op("Relu", d))
        return g

    got, expected, ex = run_both(build)
    assert families(ex) == ["elementwise"]
    np.testing.assert_array_equal(got, expected)
