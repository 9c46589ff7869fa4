"""TVM x86 int8 conv groups (``lepton.QConv`` + float epilogue + QuantizeLinear) match the
reference interpreter on the unfused graph: ResNet-50's conv forms (1x1 stride 1/2, 3x3
stride 1/2 padded, the 7x7/2 stem on 3 channels), odd sizes, batch 2, uint8 and int8
activations, per-channel and per-tensor weight scales, with and without bias, float and
requantized outputs; with VNNI and on a target without it. Grouped convs are refused."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pytest

pytest.importorskip("tvm")
os.environ.setdefault("TVM_NUM_THREADS", "2")

from lepton_compiler.interpreter import run_graph
from lepton_compiler.ir import DType, Graph, Node, TensorType, Value
from lepton_compiler.ops.infer import refresh_types
from lepton_compiler.pass_manager import PassContext
from lepton_compiler.passes.fusion import group as fusion
from lepton_compiler.passes.fusion.group import GroupFusionPass
from lepton_compiler.targets.tvm.build import build_group
from lepton_compiler.targets.tvm.kernels import plan_group
from lepton_compiler.targets.tvm.kernels import qconv as qconv_family
from lepton_compiler.targets.tvm.schedules.x86_qconv import (
    QConvTile,
    QConvWorkload,
    choose_qconv_tile,
)
from lepton_compiler.targets.tvm.te_ops import LoweringError
from lepton_compiler.targets.tvm.vnni import has_vnni

ZNVER4 = {"kind": "llvm", "mcpu": "znver4", "num-cores": 2}
#: AVX-512 without VNNI: the plain int32 loop nest.
SKYLAKE = {"kind": "llvm", "mcpu": "skylake-avx512", "num-cores": 2}
#: AVX2 only.
HASWELL = {"kind": "llvm", "mcpu": "haswell", "num-cores": 2}


def add(g: Graph, op: str, inputs: list[Value | None], **attrs: Any) -> Value:
    node = g.make_node(op, inputs, attrs)
    refresh_types(node)
    return node.outputs[0]


def qconv_graph(
    c: int,
    m: int,
    hw: tuple[int, int],
    k: tuple[int, int],
    *,
    strides: tuple[int, int] = (1, 1),
    pads: tuple[int, int, int, int] = (0, 0, 0, 0),
    dilations: tuple[int, int] = (1, 1),
    n: int = 1,
    signed: bool = False,
    per_channel: bool = True,
    bias: bool = True,
    epilogue: str = "none",
    group: int = 1,
    seed: int = 0,
) -> Graph:
    """``y = epilogue(QConv(x, ...))`` with random constants. Epilogues: ``none`` (float
    output), ``relu``, ``clip``, ``relu_q`` (Relu + QuantizeLinear to uint8),
    ``residual_relu_q`` (Add of a float input, Relu, QuantizeLinear to int8),
    ``saturate_q`` (QuantizeLinear to int8 with a tiny scale: every value saturates),
    ``q_dq_add`` (QuantizeLinear, DequantizeLinear, Add of a float input)."""
    rng = np.random.default_rng(seed)
    xdt = DType.INT8 if signed else DType.UINT8
    g = Graph(opset_imports={"": 18})
    x = g.add_input(Value("x", TensorType(xdt, (n, c, *hw))))
    xs = g.add_constant(np.float32(0.05), "xs")
    xz = g.add_constant(np.array(-3 if signed else 121, xdt.value), "xz")
    w = g.add_constant(rng.integers(-127, 128, (m, c // group, *k)).astype(np.int8), "w")
    ws_val = rng.uniform(0.002, 0.02, m) if per_channel else np.float32(0.01)
    ws = g.add_constant(np.asarray(ws_val, np.float32), "ws")
    ins: list[Value | None] = [x, xs, xz, w, ws]
    if bias:
        ins.append(g.add_constant(rng.integers(-3000, 3000, m).astype(np.int32), "b"))
    y = add(g, "lepton.QConv", ins, strides=list(strides), pads=list(pads),
            dilations=list(dilations), group=group)  # fmt: skip
    out_shape = y.shape
    if epilogue == "relu":
        y = add(g, "Relu", [y])
    elif epilogue == "clip":
        y = add(g, "Clip", [y, g.add_constant(np.float32(-1.0)), g.add_constant(np.float32(2.5))])
    elif epilogue == "relu_q":
        y = add(g, "Relu", [y])
        y = add(g, "QuantizeLinear", [y, g.add_constant(np.float32(0.04)),
                                      g.add_constant(np.uint8(3))])  # fmt: skip
    elif epilogue == "residual_relu_q":
        r = g.add_input(Value("r", TensorType(DType.FLOAT32, out_shape)))
        y = add(g, "Relu", [add(g, "Add", [y, r])])
        y = add(g, "QuantizeLinear", [y, g.add_constant(np.float32(0.03)),
                                      g.add_constant(np.int8(-5))])  # fmt: skip
    elif epilogue == "saturate_q":
        # a scale so small that most values land far outside int8 (and int32) when divided
        y = add(g, "QuantizeLinear", [y, g.add_constant(np.float32(1e-9)),
                                      g.add_constant(np.int8(-5))])  # fmt: skip
    elif epilogue == "q_dq_add":
        r = g.add_input(Value("r", TensorType(DType.FLOAT32, out_shape)))
        s, z = g.add_constant(np.float32(0.05)), g.add_constant(np.uint8(128))
        y = add(g, "DequantizeLinear", [add(g, "QuantizeLinear", [y, s, z]), s, z])
        y = add(g, "Add", [r, y])
    else:
        assert epilogue == "none"
    g.outputs = [y]
    return g


def _fused(g: Graph) -> Node:
    GroupFusionPass()(g, PassContext())
    fused = [node for node in g if node.op == "lepton.Fused"]
    if fused:
        assert len(fused) == 1, str(g)
        return fused[0]
    (node,) = [node for node in g]  # a lone QConv: wrap it as the executor does
    return fusion._wrap(g, fusion._Group([node]))


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


def check(make: Any, target: dict[str, Any] = ZNVER4, **kw: Any) -> None:
    """Build the group for `target` and compare it with the reference interpreter: float
    outputs to ~1e-5 relative, quantized outputs exactly except for at most a few elements
    one unit off (a float rounding that lands on .5)."""
    ref, g = make(**kw), make(**kw)
    feeds = _feeds(ref)
    want = run_graph(ref, feeds)[ref.outputs[0].name]
    fused = _fused(g)
    kernel = build_group(fused, target)
    assert kernel.family == "qconv"
    args = [feeds[v.name] if v.const is None else np.asarray(v.const) for v in fused.inputs]
    (got,) = kernel(*args)
    assert got.shape == want.shape and got.dtype == want.dtype
    if want.dtype == np.float32:
        scale = float(np.abs(want).max()) or 1.0
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * scale)
    else:
        diff = np.abs(got.astype(np.int32) - want.astype(np.int32))
        assert diff.max() <= 1
        assert (diff > 0).mean() < 0.01


def _conv(**kw: Any) -> Graph:
    return qconv_graph(**kw)


SHAPES = {
    "3x3_s1_p1": dict(c=8, m=16, hw=(10, 10), k=(3, 3), pads=(1, 1, 1, 1)),
    "1x1_s1": dict(c=16, m=24, hw=(7, 7), k=(1, 1)),
    "1x1_s2": dict(c=16, m=20, hw=(9, 9), k=(1, 1), strides=(2, 2)),
    "3x3_s2_p1": dict(c=8, m=16, hw=(11, 11), k=(3, 3), strides=(2, 2), pads=(1, 1, 1, 1)),
    "7x7_s2_p3_stem": dict(c=3, m=16, hw=(20, 20), k=(7, 7), strides=(2, 2), pads=(3, 3, 3, 3)),
    "odd_asym_dilated_batch2": dict(
        c=5, m=7, hw=(12, 9), k=(3, 2), pads=(2, 0, 1, 1), dilations=(2, 1), n=2
    ),
    "wide_rows_m40": dict(c=12, m=40, hw=(5, 37), k=(3, 3), pads=(1, 1, 1, 1)),
}


@pytest.mark.parametrize("shape", list(SHAPES))
def test_shapes_float_output(shape: str) -> None:
    check(_conv, **SHAPES[shape])


@pytest.mark.parametrize(
    "epilogue", ["relu", "clip", "relu_q", "residual_relu_q", "q_dq_add", "saturate_q"]
)
def test_epilogues(epilogue: str) -> None:
    check(_conv, **SHAPES["3x3_s2_p1"], epilogue=epilogue)


@pytest.mark.parametrize("shape", ["7x7_s2_p3_stem", "odd_asym_dilated_batch2"])
def test_int8_activations_requantized(shape: str) -> None:
    check(_conv, **SHAPES[shape], signed=True, epilogue="residual_relu_q")


def test_per_tensor_scale_no_bias() -> None:
    check(_conv, **SHAPES["1x1_s2"], per_channel=False, bias=False, epilogue="relu_q")


@pytest.mark.parametrize("target", [SKYLAKE, HASWELL], ids=["skylake-avx512", "haswell"])
def test_without_vnni(target: dict[str, Any]) -> None:
    assert not has_vnni(target)
    check(_conv, target, **SHAPES["odd_asym_dilated_batch2"], signed=True, epilogue="relu_q")
    check(_conv, target, **SHAPES["3x3_s1_p1"], epilogue="residual_relu_q")


@pytest.mark.parametrize(
    "tile",
    [
        QConvTile(3, 1, 0),
        QConvTile(5, 2, 0),
        QConvTile(5, 2, 0, fused=True),
        QConvTile(2, 3, 2),
        QConvTile(16, 1, 1),
    ],
    ids=["flat_3x1", "flat_5x2", "flat_fused_5x2", "rows_2x3", "rows_16x1"],
)
def test_tile_forms(tile: QConvTile, monkeypatch: pytest.MonkeyPatch) -> None:
    """Flat tiles (positions across rows, a partial last tile; repacked in the task or in
    a stage of their own) and row tiles, with a full-shaped residual operand and
    per-channel scales: every index maps right."""
    monkeypatch.setattr(qconv_family, "choose_qconv_tile", lambda wl, threads=2: tile)
    check(_conv, c=9, m=21, hw=(7, 9), k=(1, 1), n=2, epilogue="residual_relu_q")
    check(_conv, c=16, m=8, hw=(5, 5), k=(1, 1), signed=True, epilogue="relu_q")
    if tile.tr:
        check(_conv, **SHAPES["3x3_s1_p1"], epilogue="residual_relu_q")


@pytest.mark.parametrize(
    "tile",
    [QConvTile(5, 1, 0, fused=True, splits=2), QConvTile(2, 3, 0, fused=True, splits=3)],
    ids=["fused_5x1_split2", "fused_2x3_split3"],
)
def test_fused_splits(tile: QConvTile, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fused tiles whose channel blocks go in parts (parts of unequal size: 5 or 11 blocks
    in 2 or 3 parts), batch 2, a partial last position tile and a residual operand."""
    monkeypatch.setattr(qconv_family, "choose_qconv_tile", lambda wl, threads=2: tile)
    check(_conv, c=9, m=21, hw=(7, 9), k=(1, 1), n=2, epilogue="residual_relu_q")
    check(_conv, c=16, m=10, hw=(5, 5), k=(1, 1), signed=True, epilogue="relu_q")


@pytest.mark.parametrize(
    "tile",
    [QConvTile(16, 1, 0, tail=True), QConvTile(16, 1, 0, fused=True, tail=True),
     QConvTile(16, 1, 0, fused=True, splits=2, tail=True)],
    ids=["tail", "fused_tail", "fused_split_tail"],
)  # fmt: skip
def test_channel_vector_tail(tile: QConvTile, monkeypatch: pytest.MonkeyPatch) -> None:
    """The last, partial position tile computed over channels (one accumulator per
    position): M a multiple of 16 (vector stores) or not (per-channel stores), a full-shaped
    residual operand, batch 2, strided 1x1 (not fused) and direct convs."""
    monkeypatch.setattr(qconv_family, "choose_qconv_tile", lambda wl, threads=2: tile)
    check(_conv, c=9, m=21, hw=(7, 9), k=(1, 1), n=2, epilogue="residual_relu_q")
    check(_conv, c=20, m=64, hw=(7, 7), k=(1, 1), epilogue="residual_relu_q")
    check(_conv, c=16, m=32, hw=(5, 5), k=(1, 1), signed=True, epilogue="relu_q")
    if not tile.fused:
        check(_conv, c=12, m=48, hw=(13, 13), k=(1, 1), strides=(2, 2), epilogue="none")


@pytest.mark.parametrize(
    "tile", [QConvTile(16, 1, 1, cvec=True), QConvTile(32, 1, 1, cvec=True)], ids=["16", "32"]
)
def test_channel_vector_rows(tile: QConvTile, monkeypatch: pytest.MonkeyPatch) -> None:
    """Channel-vector tiles (one output row of 16 k channels a task, vectors over channels):
    padded 3x3 on 7x7 (M a multiple of the block or not), strided, batch 2, a residual
    operand, int8 activations, and a 1x1."""
    monkeypatch.setattr(qconv_family, "choose_qconv_tile", lambda wl, threads=2: tile)
    check(_conv, c=12, m=64, hw=(7, 7), k=(3, 3), pads=(1, 1, 1, 1), epilogue="relu_q")
    check(_conv, c=9, m=40, hw=(7, 7), k=(3, 3), pads=(1, 1, 1, 1), n=2,
          epilogue="residual_relu_q")  # fmt: skip
    check(_conv, c=8, m=32, hw=(13, 13), k=(3, 3), strides=(2, 2), pads=(1, 1, 1, 1),
          signed=True, epilogue="relu_q")  # fmt: skip
    check(_conv, c=16, m=48, hw=(7, 7), k=(1, 1), epilogue="none")


@pytest.mark.parametrize(
    "tile",
    [QConvTile(16, 1, 1, cvec=True, chunks=2), QConvTile(32, 1, 1, cvec=True, chunks=3)],
    ids=["16_chunks2", "32_chunks3"],
)
def test_channel_vector_row_chunks(tile: QConvTile, monkeypatch: pytest.MonkeyPatch) -> None:
    """Channel-vector tiles on rows in chunks (19 columns: chunks of 10 + 9 or 7 + 7 + 5),
    padded and strided, a residual operand, batch 2."""
    monkeypatch.setattr(qconv_family, "choose_qconv_tile", lambda wl, threads=2: tile)
    check(_conv, c=12, m=40, hw=(6, 19), k=(3, 3), pads=(1, 1, 1, 1), n=2,
          epilogue="residual_relu_q")  # fmt: skip
    check(_conv, c=8, m=32, hw=(9, 38), k=(3, 3), strides=(2, 2), pads=(1, 1, 1, 1),
          signed=True, epilogue="relu_q")  # fmt: skip


def test_split_choice() -> None:
    """Fused tiles split their channel blocks where the position tiles alone leave a thread
    idle part of the time; never into parts of fewer than 4 blocks; too few position tiles
    keep the separate repack stage. Layers with a partial last position tile get 16 x 1
    tiles with a channel-vector tail."""
    from lepton_compiler.targets.tvm.schedules.x86_qconv import fused_splits

    def wl(c: int, m: int, hw: int) -> QConvWorkload:
        return QConvWorkload(1, c, hw, hw, m, 1, 1, (1, 1), (0, 0, 0, 0), (1, 1), False, True,
                             True)  # fmt: skip

    assert fused_splits(wl(64, 256, 56), QConvTile(16, 1, 0), 2) == 1  # 196 tiles: even
    assert fused_splits(wl(256, 1024, 14), QConvTile(16, 1, 0), 2) == 2  # 13 tiles
    assert fused_splits(wl(512, 2048, 7), QConvTile(12, 2, 0), 2) == 0  # 2 tiles
    assert fused_splits(wl(16, 16, 4), QConvTile(16, 1, 0), 2) == 0  # 1 tile, 1 block
    for c, m, hw in [(64, 256, 56), (256, 1024, 14), (1024, 256, 14), (128, 512, 28)]:
        t = choose_qconv_tile(wl(c, m, hw))
        assert t.fused and t.r * t.v <= 24
        assert t.splits == 1 or -(-m // t.r) >= 4 * t.splits
        assert t.tail == (hw * hw % 16 != 0)
    for c, m in [(512, 2048), (2048, 512)]:
        assert choose_qconv_tile(wl(c, m, 7)) == QConvTile(16, 1, 0, tail=True)
    for c, hw, k, st in [(256, 14, 3, 1), (512, 7, 3, 1), (512, 14, 3, 2), (64, 56, 3, 1)]:
        w3 = QConvWorkload(1, c, hw, hw, c, k, k, (st, st), (1, 1, 1, 1), (1, 1), False, True,
                           True)  # fmt: skip
        assert choose_qconv_tile(w3).cvec


@pytest.mark.parametrize(
    "tile",
    [QConvTile(5, 1, 1, chunks=3), QConvTile(3, 2, 1, chunks=2)],
    ids=["chunks_3x16", "chunks_2x32"],
)
def test_row_chunks(tile: QConvTile, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows split into chunks of whole vectors (37 columns: a partial last chunk), strided
    and not, with a residual operand."""
    monkeypatch.setattr(qconv_family, "choose_qconv_tile", lambda wl, threads=2: tile)
    check(_conv, **SHAPES["wide_rows_m40"], n=2, epilogue="residual_relu_q")
    check(_conv, c=5, m=9, hw=(6, 75), k=(3, 3), strides=(2, 2), pads=(1, 1, 1, 1),
          signed=True, epilogue="relu_q")  # fmt: skip


@pytest.mark.parametrize(("target", "vnni"), [(ZNVER4, True), (SKYLAKE, False)],
                         ids=["znver4", "skylake-avx512"])  # fmt: skip
def test_vpdpbusd_only_with_vnni(target: dict[str, Any], vnni: bool) -> None:
    """The machine code holds ``vpdpbusd`` exactly when the target has VNNI."""
    import tvm

    g = qconv_graph(**SHAPES["3x3_s1_p1"], epilogue="relu_q")
    plan = plan_group(_fused(g), tvm.target.Target(target))
    mod = tvm.compile(tvm.IRModule({"main": plan.make()}), target=tvm.target.Target(target))
    assert ("vpdpbusd" in mod.mod.inspect_source("s")) == vnni


def test_two_outputs_float_and_quantized() -> None:
    """A group whose Relu output is read outside the group as well as requantized stores
    both: float32 and uint8."""
    ref, g = (qconv_graph(**SHAPES["1x1_s2"], epilogue="relu_q") for _ in range(2))
    for graph in (ref, g):
        relu = next(n for n in graph if n.op == "Relu")
        graph.outputs = [relu.outputs[0], *graph.outputs]
    feeds = _feeds(ref)
    want = run_graph(ref, feeds)
    fused = fusion._wrap(g, fusion._Group(list(g)))  # fusion keeps a shared value a boundary
    assert len(fused.outputs) == 2
    kernel = build_group(fused, ZNVER4)
    assert kernel.output_dtypes == ["float32", "uint8"]
    args = [feeds[v.name] if v.const is None else np.asarray(v.const) for v in fused.inputs]
    got_f, got_q = kernel(*args)
    want_f, want_q = (want[v.name] for v in ref.outputs)
    np.testing.assert_allclose(got_f, want_f, rtol=1e-5, atol=1e-6 * float(np.abs(want_f).max()))
    assert np.abs(got_q.astype(np.int32) - want_q.astype(np.int32)).max() <= 1


def test_output_dtype_is_part_of_the_kernel() -> None:
    """Requantizing to uint8 and to int8 with equal scale and zero point are two kernels."""

    def make(dtype: str) -> Graph:
        g = qconv_graph(**SHAPES["1x1_s1"])
        y = add(g, "QuantizeLinear", [g.outputs[0], g.add_constant(np.float32(0.04)),
                                      g.add_constant(np.array(3, dtype))])  # fmt: skip
        g.outputs = [y]
        return g

    for dtype in ("uint8", "int8"):
        check(lambda dtype=dtype: make(dtype))


def test_vnni_detection() -> None:
    assert has_vnni(ZNVER4)
    assert has_vnni({"kind": "llvm", "mcpu": "cascadelake", "num-cores": 2})
    assert not has_vnni(SKYLAKE)
    assert not has_vnni({"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a76"})


def test_dequantized_side_input() -> None:
    """A DequantizeLinear of a uint8 side tensor inside the group (a residual kept in
    uint8) is read as bytes and dequantized in the store."""

    def make() -> tuple[Graph, Node | None]:
        g = qconv_graph(**SHAPES["1x1_s1"])
        conv = next(iter(g))
        rq = g.add_input(Value("rq", TensorType(DType.UINT8, conv.outputs[0].shape)))
        s, z = g.add_constant(np.float32(0.1)), g.add_constant(np.uint8(100))
        dq = add(g, "DequantizeLinear", [rq, s, z])
        y = add(g, "Relu", [add(g, "Add", [conv.outputs[0], dq])])
        g.outputs = [y]
        return g, None

    ref, _ = make()
    g, _ = make()
    nodes = list(g)
    conv, dq = nodes[0], nodes[1]
    fused = fusion._wrap(g, fusion._Group([conv, dq, *nodes[2:]]))
    assert fused.attrs["body"].inputs  # the DQ reads a group input
    feeds = _feeds(ref)
    want = run_graph(ref, feeds)[ref.outputs[0].name]
    kernel = build_group(fused, ZNVER4)
    args = [feeds[v.name] if v.const is None else np.asarray(v.const) for v in fused.inputs]
    (got,) = kernel(*args)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * float(np.abs(want).max()))


@pytest.mark.parametrize(
    ("epilogue", "folded"),
    [("relu_q", True), ("saturate_q", True), ("residual_relu_q", False), ("relu", False)],
)
def test_requantize_is_folded(epilogue: str, folded: bool) -> None:
    """``[Relu ->] QuantizeLinear`` alone folds into the conv's per-channel scale and shift
    (the group's numbers are checked by `test_epilogues`); other epilogues stay as they
    are."""
    fused = _fused(qconv_graph(**SHAPES["1x1_s1"], epilogue=epilogue))
    anchor = qconv_family.anchor_of(fused.attrs["body"], "lepton.QConv")
    epi, _ = qconv_family.lower_epilogue(fused, anchor, tuple(anchor.outputs[0].shape))
    assert (qconv_family.folded_requantize(fused, anchor, epi).affine is not None) == folded


def test_grouped_conv_goes_to_the_depthwise_family() -> None:
    """A grouped QConv is not a VNNI kernel: the depthwise family takes it
    (`test_x86_qdepthwise.py` checks its numbers)."""
    g = qconv_graph(c=8, m=8, hw=(6, 6), k=(3, 3), pads=(1, 1, 1, 1), group=8, epilogue="relu")
    assert plan_group(_fused(g), build_target()).family == "depthwise"


def test_non_scalar_zero_point_is_refused() -> None:
    g = qconv_graph(**SHAPES["1x1_s1"], epilogue="relu")
    conv = next(iter(g))
    conv.set_input(2, g.add_constant(np.array([1, 2], np.uint8)))
    with pytest.raises(LoweringError, match="zero point"):
        plan_group(_fused(g), build_target())


def test_unsupported_epilogue_op_is_refused() -> None:
    g = qconv_graph(**SHAPES["1x1_s1"])
    y = add(g, "Softmax", [g.outputs[0]], axis=1)
    g.outputs = [y]
    fused = fusion._wrap(g, fusion._Group(list(g)))
    with pytest.raises(LoweringError):
        plan_group(fused, build_target())


def test_tiles_fit_the_registers() -> None:
    """Every tile keeps its accumulators and live operands within 30 of the 32 zmm registers and
    covers its rows; ResNet-50's layers get tiles with at least 12 accumulators; narrow
    padded or strided maps (14x14, 7x7 outputs) get channel-vector rows."""
    layers = [(64, 64, 56, 3, 1), (128, 512, 28, 1, 1), (256, 256, 14, 3, 1),
              (512, 2048, 7, 1, 1), (3, 64, 224, 7, 2), (256, 512, 56, 1, 2),
              (512, 512, 7, 3, 1), (512, 512, 14, 3, 2)]  # fmt: skip
    for c, m, h, k, s in layers:
        p = k // 2
        wl = QConvWorkload(1, c, h, h, m, k, k, (s, s), (p, p, p, p), (1, 1), False, True, True)
        t = choose_qconv_tile(wl)
        if t.cvec:  # a row chunk of r channels: an accumulator per position and 16
            seg = -(-wl.out_hw[1] // t.chunks)
            assert (t.tr, t.r % 16, t.fused) == (1, 0, False) and 16 * t.v >= seg
            assert 12 <= seg * t.r // 16 <= 16
            continue
        assert t.r * t.v + min(t.r, t.v) + 1 <= 30
        assert t.tr * wl.phase_hw[1] <= 16 * t.v or (t.tr == 1 and t.chunks * 16 * t.v >= h // s)
        assert t.tr or wl.phase_hw[1] == wl.out_hw[1]  # flat tiles: no dropped columns
        assert t.r * t.v >= 12


def build_target() -> Any:
    import tvm

    return tvm.target.Target(ZNVER4)
