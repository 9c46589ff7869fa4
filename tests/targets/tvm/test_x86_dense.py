"""TVM x86 dense groups: Gemm (every attribute form) and MatMul (rank >= 2 A, 2-D B) with
their fused element-wise epilogue match the reference interpreter on the unfused graph;
odd sizes (M=1, N not whole vectors, K=1, prime M) work; unsupported groups are refused with
`LoweringError`; the element-wise table's polynomial transcendentals are accurate."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

pytest.importorskip("tvm")
os.environ.setdefault("TVM_NUM_THREADS", "2")

import tvm
from tvm import te, tirx

from lepton_compiler.interpreter import run_graph
from lepton_compiler.ir import Graph, Node, Value
from lepton_compiler.pass_manager import PassContext
from lepton_compiler.passes.fusion.group import GroupFusionPass
from lepton_compiler.targets.tvm import te_elementwise as tew
from lepton_compiler.targets.tvm.build import build_group, host_target
from lepton_compiler.targets.tvm.executor import TvmExecutor, _wrap_single
from lepton_compiler.targets.tvm.kernels import plan_group
from lepton_compiler.targets.tvm.kernels.dense import pack_weights
from lepton_compiler.targets.tvm.schedules.x86_dense import choose_dense_config
from lepton_compiler.targets.tvm.te_ops import LoweringError
from lepton_compiler.testing import graph_from_text

TARGET = host_target(2)


def header(opset: int = 18) -> str:
    return f'<ir_version: 8, opset_import: ["" : {opset}]>\n'


def gemm_text(
    m: int,
    k: int,
    n: int,
    *,
    trans_a: int = 0,
    trans_b: int = 0,
    alpha: float = 1.0,
    beta: float = 1.0,
    c_shape: tuple[int, ...] | None = (-1,),
    epilogue: str = "",
    extra: str = "",
    opset: int = 18,
) -> str:
    """A Gemm graph ``y = epilogue(Gemm(a, b, c))``; ``c_shape`` (-1 stands for N) or None
    for no C; `epilogue` lines read ``t`` and must end by assigning ``y``."""
    a = f"float[{k},{m}] a" if trans_a else f"float[{m},{k}] a"
    b = f"float[{n},{k}] b" if trans_b else f"float[{k},{n}] b"
    ins = [a, b]
    args = "a, b"
    if c_shape is not None:
        dims = ",".join(str(n if d == -1 else d) for d in c_shape)
        ins.append(f"float[{dims}] c" if c_shape else "float c")
        args += ", c"
    if extra:
        ins.append(extra)
    attrs = f"transA = {trans_a}, transB = {trans_b}, alpha = {alpha}, beta = {beta}"
    lines = [f"  t = Gemm<{attrs}>({args})"]
    lines += epilogue.strip().splitlines() if epilogue else ["  y = Identity(t)"]
    body = "\n".join(line if line.startswith("  ") else "  " + line for line in lines)
    return header(opset) + f"g ({', '.join(ins)}) => (float[{m},{n}] y) {{\n{body}\n}}"


def _fused(text: str, lepton_gelu: bool = False) -> tuple[Graph, Node, list[Value]]:
    """The reference graph, the one fused dense group (ONNX Gelu nodes renamed to
    ``lepton.Gelu`` in both when asked) and the graph values its inputs stand for."""
    g, ref = graph_from_text(text), graph_from_text(text)
    if lepton_gelu:
        for graph in (g, ref):
            for node in graph:
                if node.op == "Gelu":
                    node.domain = "lepton"
    GroupFusionPass()(g, PassContext())
    fused = [node for node in g if node.op == "lepton.Fused"]
    if fused:
        assert len(fused) == 1, str(g)
        return ref, fused[0], list(fused[0].inputs)  # type: ignore[arg-type]
    (single,) = [node for node in g if node.op in ("Gemm", "MatMul")]
    group, values = _wrap_single(single)
    return ref, group, values


def _feeds(graph: Graph, seed: int = 0, positive: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {}
    for v in graph.inputs:
        x = rng.standard_normal(v.shape).astype(np.float32)
        feeds[v.name] = np.abs(x) + 0.5 if v.name in positive else x
    return feeds


def _check(
    text: str,
    seed: int = 0,
    lepton_gelu: bool = False,
    positive: tuple[str, ...] = (),
    rtol: float = 1e-4,
) -> None:
    ref, fused, values = _fused(text, lepton_gelu)
    feeds = _feeds(ref, seed, positive)
    kernel = build_group(fused, TARGET)
    assert kernel.family == "dense"
    args = [feeds[v.name] if v.const is None else np.asarray(v.const) for v in values]
    (got,) = kernel(*args)
    want = run_graph(ref, feeds)["y"]
    assert got.shape == want.shape
    scale = float(np.nanmax(np.abs(want))) or 1.0
    np.testing.assert_allclose(got, want, rtol=rtol, atol=3e-6 * scale)


# -- Gemm attribute forms -----------------------------------------------------------------------

GEMM_CASES = {
    "plain_bias_n": gemm_text(8, 32, 48),
    "no_c": gemm_text(8, 32, 48, c_shape=None),
    "c_1xn": gemm_text(8, 32, 48, c_shape=(1, -1)),
    "c_mxn": gemm_text(8, 32, 48, c_shape=(8, -1)),
    "c_mx1": gemm_text(8, 32, 48, c_shape=(8, 1)),
    "c_scalar": gemm_text(8, 32, 48, c_shape=(1,)),
    "c_rank0": gemm_text(8, 32, 48, c_shape=()),
    "trans_b": gemm_text(8, 32, 48, trans_b=1),
    "trans_a": gemm_text(8, 32, 48, trans_a=1),
    "trans_a_trans_b_alpha_beta": gemm_text(
        6, 20, 40, trans_a=1, trans_b=1, alpha=0.5, beta=-2.0, c_shape=(6, -1)
    ),
    "beta_zero": gemm_text(8, 16, 32, beta=0.0),
    "alpha_only": gemm_text(4, 16, 32, alpha=3.0, c_shape=None),
}


@pytest.mark.parametrize("name", sorted(GEMM_CASES))
def test_gemm_forms(name: str) -> None:
    _check(GEMM_CASES[name])


# -- odd sizes ----------------------------------------------------------------------------------

SIZES = {
    "m1_gemv": (1, 64, 1000),
    "m1_small_n": (1, 7, 5),
    "n_not_vectors": (8, 24, 37),
    "k1": (8, 1, 32),
    "prime_m": (13, 40, 48),
    "prime_m_padded_rows_k_vectors": (127, 64, 96),
    "m7_n100": (7, 33, 100),
    "bert_like": (128, 96, 96),
}


@pytest.mark.parametrize("name", sorted(SIZES))
def test_odd_sizes(name: str) -> None:
    m, k, n = SIZES[name]
    _check(gemm_text(m, k, n, epilogue="y = Relu(t)"))


@pytest.mark.parametrize("m, k, n", [(8, 3072, 192), (13, 3072, 200)])
def test_k_blocked(m: int, k: int, n: int) -> None:
    """Long reductions are blocked along K (partial sums kept between K blocks), also with
    rows padded to whole tiles and N not whole tiles."""
    assert choose_dense_config(m, n, k, 16).kc > 0
    _check(gemm_text(m, k, n, epilogue="y = Relu(t)"))


# -- MatMul -------------------------------------------------------------------------------------


def matmul_text(a_shape: tuple[int, ...], n: int, epilogue: str = "", extra: str = "") -> str:
    k = a_shape[-1]
    out = ",".join(str(d) for d in (*a_shape[:-1], n))
    a = ",".join(str(d) for d in a_shape)
    ins = [f"float[{a}] a", f"float[{k},{n}] b"] + ([extra] if extra else [])
    lines = ["  t = MatMul(a, b)"]
    lines += [f"  {ln.strip()}" for ln in epilogue.strip().splitlines()] or ["  y = Identity(t)"]
    if not epilogue:
        lines = ["  y = MatMul(a, b)"]
    body = "\n".join(lines)
    return header() + f"g ({', '.join(ins)}) => (float[{out}] y) {{\n{body}\n}}"


def test_matmul_rank3_a() -> None:
    _check(matmul_text((2, 5, 24), 40))


def test_matmul_rank4_a_with_bias_and_residual() -> None:
    _check(
        matmul_text(
            (2, 3, 4, 16),
            32,
            "u = Add(t, bias)\ny = Add(u, r)",
            "float[32] bias, float[2,3,4,32] r",
        )
    )


def test_matmul_partly_broadcast_operand() -> None:
    """An operand broadcast over some leading dims only ([2,1,1,N] against [2,3,4,N])."""
    _check(matmul_text((2, 3, 4, 16), 32, "y = Mul(t, s)", "float[2,1,1,32] s"))


def test_matmul_2d() -> None:
    _check(matmul_text((16, 24), 48, "y = Sigmoid(t)"))


# -- epilogue ops -------------------------------------------------------------------------------

_SCALARS = (
    "  lo = Constant<value = float {-0.5}>()\n  hi = Constant<value = float {0.75}>()\n"
    "  two = Constant<value = float {2.0}>()\n  p3 = Constant<value = float {3.0}>()\n"
    "  p15 = Constant<value = float {1.5}>()\n"
)

EPILOGUES: dict[str, tuple[str, str]] = {
    # name: (epilogue lines, extra input)
    "add_residual": ("y = Add(t, r)", "float[8,48] r"),
    "add_reversed": ("y = Add(r, t)", "float[8,48] r"),
    "mul_row": ("y = Mul(t, s)", "float[48] s"),
    "sub_col": ("y = Sub(s, t)", "float[8,1] s"),
    "div": ("y = Div(t, s)", "float[1,48] s"),
    "relu": ("y = Relu(t)", ""),
    "clip": (_SCALARS + "y = Clip(t, lo, hi)", ""),
    "clip_min_only": (_SCALARS + "y = Clip(t, lo)", ""),
    "tanh": ("y = Tanh(t)", ""),
    "sigmoid": ("y = Sigmoid(t)", ""),
    "erf": ("y = Erf(t)", ""),
    "exp": ("y = Exp(t)", ""),
    "neg_abs": ("u = Neg(t)\ny = Abs(u)", ""),
    "log_sqrt": ("u = Abs(t)\nv = Sqrt(u)\ny = Log(v)", ""),
    "leaky_relu": ("y = LeakyRelu<alpha = 0.1>(t)", ""),
    "hard_sigmoid": ("y = HardSigmoid<alpha = 0.3, beta = 0.4>(t)", ""),
    "hard_swish": ("y = HardSwish(t)", ""),
    "softplus": ("y = Softplus(t)", ""),
    "softsign": ("y = Softsign(t)", ""),
    "elu": ("y = Elu<alpha = 0.7>(t)", ""),
    "selu": ("y = Selu(t)", ""),
    "pow_square": (_SCALARS + "y = Pow(t, two)", ""),
    "pow_cube": (_SCALARS + "y = Pow(t, p3)", ""),
    "pow_general": (_SCALARS + "u = Abs(t)\ny = Pow(u, p15)", ""),
    "max_min": ("u = Max(t, r)\ny = Min(u, s)", "float[8,48] r, float[48] s"),
    "prelu": ("y = PRelu(t, s)", "float[48] s"),
    "reciprocal": (_SCALARS + "u = Abs(t)\nv = Add(u, two)\ny = Reciprocal(v)", ""),
    "chain_bias_relu_residual": (
        "u = Mul(t, s)\nv = Relu(u)\ny = Add(v, r)",
        "float[48] s, float[8,48] r",
    ),
}


@pytest.mark.parametrize("name", sorted(EPILOGUES))
def test_epilogue_ops(name: str) -> None:
    lines, extra = EPILOGUES[name]
    _check(gemm_text(8, 24, 48, epilogue=lines, extra=extra))


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_lepton_gelu(approximate: str) -> None:
    text = gemm_text(16, 64, 96, epilogue=f'y = Gelu<approximate = "{approximate}">(t)', opset=20)
    _check(text, lepton_gelu=True)
    _check(text)  # ONNX Gelu-20 too


def test_silu() -> None:
    ref, fused, values = _fused(gemm_text(8, 24, 48, epilogue="y = Relu(t)"))
    body = fused.attrs["body"]
    relu = next(n for n in body if n.op == "Relu")
    relu.domain, relu.op_type = "lepton", "SiLU"
    for node in ref:
        if node.op == "Relu":
            node.domain, node.op_type = "lepton", "SiLU"
    feeds = _feeds(ref)
    kernel = build_group(fused, TARGET)
    args = [feeds[v.name] for v in values]
    np.testing.assert_allclose(kernel(*args)[0], run_graph(ref, feeds)["y"], rtol=1e-4, atol=1e-5)


def test_constant_weights_are_packed_once_in_the_executor() -> None:
    """Through `TvmExecutor`: the constant weights are packed at construction (the kernel
    declares [Npad/nb, K, nb]) and the result matches the reference."""
    text = gemm_text(4, 32, 40, trans_b=1, alpha=0.5, epilogue="y = Relu(t)")
    g, ref = graph_from_text(text), graph_from_text(text)
    feeds = _feeds(ref)
    b_val = next(v for v in g.inputs if v.name == "b")
    const = g.add_constant(feeds["b"], "bw")
    g.replace_all_uses(b_val, const)
    g.inputs = [v for v in g.inputs if v is not b_val]
    GroupFusionPass()(g, PassContext())
    ex = TvmExecutor(g, TARGET)
    assert ex.native_flops_share == 1.0 and not ex.build_errors
    (kernel,) = ex.kernels
    cfg = kernel.config
    assert kernel.param_shapes[1] == (-(-40 // cfg.nb), 32, cfg.nb)
    got = ex.run({k: v for k, v in feeds.items() if k != "b"})["y"]
    np.testing.assert_allclose(got, run_graph(ref, feeds)["y"], rtol=1e-4, atol=1e-5)


def test_compiled_mlp_matches_onnxruntime() -> None:
    """`compile(backend="tvm")` on a rank-3 MLP (MatMul + bias + GELU, then MatMul + bias +
    residual): every product is a dense kernel, kernels hand their outputs to each other,
    and the result matches ONNX Runtime."""
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper

    import lepton_compiler

    rng = np.random.default_rng(3)

    def init(name: str, *shape: int) -> object:
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype("f"), name)

    sqrt2 = numpy_helper.from_array(np.array(np.sqrt(2.0), np.float32), "sqrt2")
    one = numpy_helper.from_array(np.array(1.0, np.float32), "one")
    half = numpy_helper.from_array(np.array(0.5, np.float32), "half")
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["m1"]),
        helper.make_node("Add", ["m1", "b1"], ["h"]),
        helper.make_node("Div", ["h", "sqrt2"], ["d"]),
        helper.make_node("Erf", ["d"], ["e"]),
        helper.make_node("Add", ["e", "one"], ["e1"]),
        helper.make_node("Mul", ["h", "e1"], ["he"]),
        helper.make_node("Mul", ["he", "half"], ["g"]),
        helper.make_node("MatMul", ["g", "w2"], ["m2"]),
        helper.make_node("Add", ["m2", "b2"], ["o"]),
        helper.make_node("Add", ["o", "x"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 5, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 5, 32])],
        [
            init("w1", 32, 72),
            init("b1", 72),
            init("w2", 72, 32),
            init("b2", 32),
            sqrt2,
            one,
            half,
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    compiled = lepton_compiler.compile(model, backend="tvm", progress=False)
    families = sorted(k.family for k in compiled.executor.kernels)
    assert families.count("dense") == 2, families
    x = rng.standard_normal((2, 5, 32)).astype("f")
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    want = sess.run(None, {"x": x})[0]
    np.testing.assert_allclose(compiled.run({"x": x})["y"], want, rtol=1e-4, atol=1e-5)


def test_pack_weights_layout() -> None:
    b = np.arange(6 * 5, dtype=np.float32).reshape(6, 5)  # K=6, N=5
    p = pack_weights(b, n=5, k=6, nb=4, trans_b=False, alpha=2.0)
    assert p.shape == (2, 6, 4)
    np.testing.assert_array_equal(p[1, :, 0], 2 * b[:, 4])
    np.testing.assert_array_equal(p[1, :, 1:], 0)
    pt = pack_weights(b.T.copy(), n=5, k=6, nb=4, trans_b=True, alpha=2.0)
    np.testing.assert_array_equal(p, pt)


def test_config_choice() -> None:
    """BERT's M=128 gets an 8-row tile; M=1 a one-row GEMV tile; prime M a dividing tile."""
    cfg = choose_dense_config(128, 768, 768, 16)
    assert cfg.mb == 8 and cfg.mb * cfg.nvec + cfg.nvec < 32
    assert choose_dense_config(1, 1000, 2048, 16).mb == 1
    odd = choose_dense_config(13, 64, 64, 16)  # prime M: rows padded to whole tiles
    assert odd.mb > 1 and odd.padded_m(13) % odd.mb == 0
    avx2 = choose_dense_config(128, 768, 768, 8)
    assert avx2.lanes == 8 and avx2.mb * avx2.nvec + avx2.nvec < 16  # 16 ymm registers


def test_avx2_target() -> None:
    """An AVX2 target (8 lanes, 16 registers) builds and matches too (runs on AVX-512 CPUs)."""
    ref, fused, values = _fused(gemm_text(13, 40, 100, epilogue="y = Sigmoid(t)"))
    feeds = _feeds(ref)
    target = {**TARGET, "mcpu": "haswell"}
    kernel = build_group(fused, target)
    assert kernel.config.lanes == 8
    args = [feeds[v.name] for v in values]
    np.testing.assert_allclose(kernel(*args)[0], run_graph(ref, feeds)["y"], rtol=1e-4, atol=1e-5)


def test_kernels_are_cached_by_workload() -> None:
    _, f1, _ = _fused(gemm_text(8, 32, 48, epilogue="y = Relu(t)"))
    _, f2, _ = _fused(gemm_text(8, 32, 48, epilogue="y = Relu(t)"))
    _, f3, _ = _fused(gemm_text(8, 32, 48, epilogue="y = Tanh(t)"))
    k1, k2, k3 = (build_group(f, TARGET) for f in (f1, f2, f3))
    assert k1 is k2 and k3 is not k1


def test_group_with_two_outputs() -> None:
    """An intermediate read outside the group is a second output, written from the same tile."""
    text = (
        header()
        + """
g (float[8,24] a, float[24,40] b, float[40] s) => (float[8,40] y, float[8,40] u) {
  t = MatMul(a, b)
  u = Relu(t)
  y = Mul(u, s)
}
"""
    )
    fused = _whole_graph_group(text)
    body = fused.attrs["body"]
    fused = Node(
        "lepton.Fused",
        list(fused.inputs),
        dict(fused.attrs),
        outputs=[Value(f"{o.name}_outer", o.type) for o in body.outputs],
        name="two_outputs",
    )
    feeds = _feeds(body)
    kernel = build_group(fused, TARGET)
    got = kernel(*[feeds[v.name] for v in body.inputs])
    want = run_graph(graph_from_text(text), feeds)
    np.testing.assert_allclose(got[0], want["y"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got[1], want["u"], rtol=1e-5, atol=1e-5)


# -- refusals -----------------------------------------------------------------------------------


def _whole_graph_group(text: str) -> Node:
    """The whole graph as one `lepton.Fused` group (whatever the fusion pass would do)."""
    g = graph_from_text(text)
    nodes = list(g)
    return Node(
        "lepton.Fused",
        [Value(f"{v.name}_outer", v.type) for v in g.inputs],
        {"body": g, "anchor": nodes[0].op, "epilogue": [n.op for n in nodes[1:]]},
        outputs=[Value("y_outer", g.outputs[0].type)],
        name="group",
    )


def _refused(text: str, match: str) -> None:
    fused = _whole_graph_group(text)
    with pytest.raises(LoweringError, match=match):
        plan_group(fused, tvm.target.Target(TARGET))


def test_batched_b_goes_to_the_batched_kernel() -> None:
    """A batched B is a product per batch (`kernels.bmm`, tested in test_bmm.py)."""
    text = (
        header()
        + """
g (float[2,4,8] a, float[2,8,16] b) => (float[2,4,16] y) {
  y = MatMul(a, b)
}
"""
    )
    plan = plan_group(_whole_graph_group(text), tvm.target.Target(TARGET))
    assert plan.key[0][0] == "bmm"


def test_1d_a_is_refused() -> None:
    text = (
        header()
        + """
g (float[8] a, float[8,16] b) => (float[16] y) {
  y = MatMul(a, b)
}
"""
    )
    _refused(text, "1-D A")


def test_non_float_is_refused() -> None:
    text = (
        header()
        + """
g (int32[4,8] a, int32[8,16] b) => (int32[4,16] y) {
  y = MatMul(a, b)
}
"""
    )
    _refused(text, "float32")


def test_shape_changing_epilogue_is_refused() -> None:
    text = (
        header()
        + """
g (float[4,8] a, float[8,16] b, float[3,4,16] r) => (float[3,4,16] y) {
  t = MatMul(a, b)
  y = Add(t, r)
}
"""
    )
    _refused(text, "not the product")


def test_unsupported_epilogue_op_is_refused() -> None:
    text = (
        header()
        + """
g (float[4,8] a, float[8,16] b) => (float[4,16] y) {
  t = MatMul(a, b)
  y = Sin(t)
}
"""
    )
    _refused(text, "Sin")


def test_non_constant_clip_bound_is_refused() -> None:
    text = (
        header()
        + """
g (float[4,8] a, float[8,16] b, float lo) => (float[4,16] y) {
  t = MatMul(a, b)
  y = Clip(t, lo)
}
"""
    )
    _refused(text, "Clip")


# -- the element-wise table ---------------------------------------------------------------------


def _run_unary(fn: tew.Unary, x: np.ndarray) -> np.ndarray:
    n = x.size
    a = te.placeholder((n,), "float32", name="a")
    b = te.compute((n,), lambda i: fn(a[i]), name="b")
    sch = tvm.s_tir.Schedule(te.create_prim_func([a, b]))
    (loop,) = sch.get_loops(sch.get_sblock("b"))
    _, inner = sch.split(loop, [None, 16])
    sch.vectorize(inner)
    mod = tvm.compile(sch.mod, target=tvm.target.Target(TARGET))
    out = tvm.runtime.empty((n,), "float32", tvm.cpu(0))
    mod["main"](tvm.runtime.tensor(x, tvm.cpu(0)), out)
    return out.numpy()


def test_polynomial_transcendentals_are_accurate() -> None:
    x = np.concatenate([np.linspace(-12, 12, 4096), np.linspace(-1e-3, 1e-3, 64)]).astype("f")
    t = x.astype(np.float64)
    erf = np.vectorize(math.erf)(t)
    # absolute error bounds (exp: relative)
    got = _run_unary(tew.fast_exp, x)
    assert np.max(np.abs(got - np.exp(t)) / np.exp(t)) < 3e-7
    assert np.max(np.abs(_run_unary(tew.fast_erf, x) - erf)) < 1e-6
    assert np.max(np.abs(_run_unary(tew.fast_tanh, x) - np.tanh(t))) < 1e-6
    assert np.max(np.abs(_run_unary(tew.fast_sigmoid, x) - 1 / (1 + np.exp(-t)))) < 1e-6
    gelu = 0.5 * t * (1 + np.vectorize(math.erf)(t / math.sqrt(2.0)))
    assert np.max(np.abs(_run_unary(tew.gelu, x) - gelu)) < 2e-6


def test_unary_builder_table() -> None:
    """Constant operands (Pow's exponent, Clip's bounds) are baked in; without them, or for
    an op outside the table, there is no builder."""
    x = Value("x")
    two = Value("two", const=np.array(2.0, np.float32))
    e = Value("e")

    def const(v: Value | None) -> np.ndarray | None:
        return None if v is None or v.const is None else np.asarray(v.const)

    three = tirx.const(3.0, "float32")
    square = tew.unary_builder(Node("Pow", [x, two]), const)
    assert square is not None and float(square(three).value) == 9.0
    assert tew.unary_builder(Node("Pow", [x, e]), const) is None  # exponent not constant
    assert tew.unary_builder(Node("Clip", [x, e]), const) is None  # bound not constant
    assert tew.unary_builder(Node("Clip", [x, None, two]), const) is not None
    assert tew.unary_builder(Node("Sin", [x]), const) is None  # not in the table
    assert tew.binary_builder("Add") is not None and tew.binary_builder("Sin") is None
