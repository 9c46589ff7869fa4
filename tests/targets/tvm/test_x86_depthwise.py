"""TVM x86 grouped / depthwise conv groups: Conv(group > 1) + bias + Clip/ReLU + residual built
with the depthwise schedule match the reference interpreter on the unfused graph."""

from __future__ import annotations

import os

import numpy as np
import pytest

pytest.importorskip("tvm")
os.environ.setdefault("TVM_NUM_THREADS", "2")

from lepton_compiler.interpreter import run_graph
from lepton_compiler.ir import Graph, Node
from lepton_compiler.pass_manager import PassContext
from lepton_compiler.passes.fusion.group import GroupFusionPass
from lepton_compiler.targets.tvm.build import build_group, host_target
from lepton_compiler.targets.tvm.kernels.depthwise import MAX_GROUP_CHANNELS, lower_grouped
from lepton_compiler.targets.tvm.schedules.x86_depthwise import (
    DepthwiseConfig,
    schedule_grouped,
    tile_for,
)
from lepton_compiler.targets.tvm.te_ops import LoweringError
from lepton_compiler.testing import graph_from_text

HEADER = '<ir_version: 8, opset_import: ["" : 18]>\n'
TARGET = host_target(2)


def dw_text(
    c: int,
    hw: tuple[int, int],
    k: tuple[int, int] = (3, 3),
    *,
    m: int | None = None,
    group: int | None = None,
    strides: tuple[int, int] = (1, 1),
    pads: tuple[int, int, int, int] = (1, 1, 1, 1),
    dilations: tuple[int, int] = (1, 1),
    n: int = 1,
    bias: str = "input",  # "none" | "input" (Conv's B) | "add" (Add of [1,M,1,1])
    act: str = "clip",  # "none" | "relu" | "clip" | any other one-input op name
    residual: bool = False,
) -> str:
    """An ONNX-text graph: a grouped Conv (depthwise by default), then the epilogue; output y."""
    m = c if m is None else m
    group = c if group is None else group
    h, w = hw
    kh, kw = k
    ho = (h + pads[0] + pads[2] - dilations[0] * (kh - 1) - 1) // strides[0] + 1
    wo = (w + pads[1] + pads[3] - dilations[1] * (kw - 1) - 1) // strides[1] + 1
    out = f"float[{n},{m},{ho},{wo}]"
    ins = [f"float[{n},{c},{h},{w}] x", f"float[{m},{c // group},{kh},{kw}] wt"]
    if bias == "input":
        ins.append(f"float[{m}] b")
    if bias == "add":
        ins.append(f"float[1,{m},1,1] b")
    if residual:
        ins.append(f"{out} r")
    conv_ins = "x, wt, b" if bias == "input" else "x, wt"
    lines = [
        f"  t0 = Conv<group = {group}, pads = {list(pads)}, strides = {list(strides)}, "
        f"dilations = {list(dilations)}>({conv_ins})"
    ]
    last = "t0"

    def add(expr: str) -> None:
        nonlocal last
        name = f"t{len(lines)}"
        lines.append(f"  {name} = {expr}")
        last = name

    if bias == "add":
        add(f"Add({last}, b)")
    if act == "relu":
        add(f"Relu({last})")
    if act == "clip":
        lines.append("  lo = Constant<value = float {0.0}>()")
        lines.append("  hi = Constant<value = float {6.0}>()")
        add(f"Clip({last}, lo, hi)")
    elif act not in ("none", "relu"):
        add(f"{act}({last})")
    if residual:
        add(f"Add({last}, r)")
    if last == "t0":
        lines.append("  y = Identity(t0)")
    body = "\n".join(lines)
    if last != "t0":
        body = body.replace(f"  {last} = ", "  y = ")
    return HEADER + f"g ({', '.join(ins)}) => ({out} y) {{\n{body}\n}}"


def _fused(text: str) -> tuple[Graph, Node]:
    g, ref = graph_from_text(text), graph_from_text(text)
    GroupFusionPass()(g, PassContext())
    fused = [node for node in g if node.op == "lepton.Fused"]
    assert len(fused) == 1, str(g)
    return ref, fused[0]


def _check(text: str, seed: int = 0, target: dict | None = None) -> None:
    ref, fused = _fused(text)
    rng = np.random.default_rng(seed)
    # Inputs of scale ~1 with Clip(0, 6): most outputs inside the interval.
    feeds = {v.name: rng.standard_normal(v.shape).astype(np.float32) for v in ref.inputs}
    kernel = build_group(fused, target or TARGET)
    args = [feeds[v.name] if v.const is None else np.asarray(v.const) for v in fused.inputs]
    (got,) = kernel(*args)
    want = run_graph(ref, feeds)["y"]
    assert got.shape == want.shape
    scale = float(np.abs(want).max()) or 1.0
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * scale)


CASES = {
    "s1_14_clip": dw_text(32, (14, 14)),
    "s2_14_clip": dw_text(32, (14, 14), strides=(2, 2)),
    "s1_7_clip": dw_text(40, (7, 7)),
    "s2_7_relu_no_bias": dw_text(24, (7, 7), strides=(2, 2), bias="none", act="relu"),
    "s1_112_clip": dw_text(4, (112, 112)),
    "s2_112_clip": dw_text(3, (112, 112), strides=(2, 2)),
    "one_channel": dw_text(1, (9, 11)),
    "c17_odd_s2": dw_text(17, (13, 15), strides=(2, 2)),
    "no_pad_plain": dw_text(20, (10, 10), pads=(0, 0, 0, 0), bias="none", act="none"),
    "add_bias_residual": dw_text(16, (12, 12), bias="add", act="clip", residual=True),
    "residual_after_relu_s1_28": dw_text(24, (28, 28), act="relu", residual=True),
    "asym_pads": dw_text(8, (9, 12), pads=(0, 1, 2, 0)),
    "k5_s2_p2": dw_text(12, (17, 17), (5, 5), strides=(2, 2), pads=(2, 2, 2, 2)),
    "k3x1_stride_2x1": dw_text(6, (10, 8), (3, 1), strides=(2, 1), pads=(1, 0, 1, 0)),
    "dilation_2_batch_2": dw_text(10, (12, 12), dilations=(2, 2), pads=(2, 2, 2, 2), n=2),
    "stride_3": dw_text(5, (16, 16), strides=(3, 3)),
    "multiplier_2": dw_text(8, (10, 10), m=16, group=8),
    "grouped_4_in_per_group": dw_text(16, (9, 9), m=8, group=4, act="relu"),
    "grouped_s2_residual": dw_text(12, (11, 11), m=6, group=3, strides=(2, 2), residual=True),
    "hardswish_mobilenetv3": dw_text(24, (14, 14), (5, 5), pads=(2, 2, 2, 2), act="HardSwish"),
    "sigmoid_residual": dw_text(16, (8, 8), act="Sigmoid", residual=True),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_grouped_conv_matches_reference(name: str) -> None:
    _check(CASES[name])


@pytest.mark.parametrize(("c", "hw", "stride"), [(144, 56, 1), (96, 112, 2), (960, 7, 1)])
def test_mobilenetv2_shapes(c: int, hw: int, stride: int) -> None:
    """Real MobileNetV2 depthwise layers (BN folded into the bias, ReLU6 as Clip)."""
    _check(dw_text(c, (hw, hw), strides=(stride, stride)))


@pytest.mark.parametrize("name", ["s2_14_clip", "c17_odd_s2", "grouped_s2_residual"])
def test_full_resolution_columns_match_reference(name: str) -> None:
    """The ``col_phases=False`` lowering (every column computed, the epilogue reading every
    stride-th) gives the same results as the reference."""
    import tvm

    ref, fused = _fused(CASES[name])
    rng = np.random.default_rng(1)
    feeds = {v.name: rng.standard_normal(v.shape).astype(np.float32) for v in ref.inputs}
    args = [feeds[v.name] if v.const is None else np.asarray(v.const) for v in fused.inputs]
    cfg = DepthwiseConfig(16, 2, col_phases=False)
    lg = lower_grouped(fused, cfg.p_align, cfg.lanes, cfg.col_phases)
    func = tvm.compile(schedule_grouped(lg, cfg).mod, target=tvm.target.Target(TARGET))["main"]
    dev = tvm.cpu(0)
    params = [tvm.runtime.tensor(np.ascontiguousarray(args[i]), dev) for i in lg.input_indices]
    (out,) = [tvm.runtime.empty(s, "float32", dev) for s in lg.output_shapes]
    func(*params, out)
    want = run_graph(ref, feeds)["y"]
    np.testing.assert_allclose(out.numpy(), want, rtol=1e-4, atol=1e-5 * float(np.abs(want).max()))


@pytest.mark.parametrize("name", ["s1_14_clip", "c17_odd_s2", "grouped_4_in_per_group"])
def test_avx2_target(name: str) -> None:
    """8-lane vectors (an AVX2 CPU)."""
    _check(CASES[name], target={**TARGET, "mcpu": "haswell"})


def test_grouped_conv_is_planned_by_the_depthwise_family() -> None:
    _, fused = _fused(CASES["s1_14_clip"])
    kernel = build_group(fused, TARGET)
    assert kernel.config is not None and kernel.config.nvec >= 1
    assert kernel.param_shapes[:2] == [(1, 32, 14, 14), (32, 1, 3, 3)]


def test_clip_bounds_are_baked_in_and_kernels_shared() -> None:
    _, fused = _fused(CASES["s1_7_clip"])
    lg = lower_grouped(fused, 64)
    names = [v.name for v in fused.inputs]
    assert [names[i] for i in lg.input_indices] == ["x", "wt", "b"]
    _, again = _fused(CASES["s1_7_clip"])
    assert build_group(fused, TARGET) is build_group(again, TARGET)


def test_tile_minimizes_computed_vectors() -> None:
    # 7x7 stride 1: rows of 9, 6 * 9 + 7 = 61 positions -> 4 vectors, one tile.
    assert tile_for(61, 16).nvec == 4
    # 14x14: 13 * 16 + 14 = 222 positions -> 14 vectors, two tiles of 7.
    assert tile_for(222, 16).nvec == 7


def test_too_many_channels_per_group_is_refused() -> None:
    cg = MAX_GROUP_CHANNELS * 2
    _, fused = _fused(dw_text(2 * cg, (6, 6), m=4, group=2))
    with pytest.raises(LoweringError, match="channels per group"):
        build_group(fused, TARGET)


def test_unsupported_epilogue_op_is_refused() -> None:
    text = HEADER + """
g (float[1,4,6,6] x, float[4,1,3,3] wt) => (float[1,4,6,6] y) {
  c = Conv<group = 4, pads = [1,1,1,1]>(x, wt)
  y = Cos(c)
}
"""
    _, fused = _fused(text)
    with pytest.raises(LoweringError):
        build_group(fused, TARGET)


def test_inverted_residual_block_end_to_end() -> None:
    """A MobileNetV2-style block through ``compile(backend="tvm")``: the depthwise group and
    a lone depthwise Conv (no epilogue) run as TVM kernels; outputs match the reference."""
    import lepton_compiler

    text = HEADER + (
        "g (float[1,8,14,14] x, float[24,8,1,1] we, float[24] be, float[24,1,3,3] wd, "
        "float[24] bd, float[8,24,1,1] wp, float[8] bp, float[8,1,3,3] wl) "
        "=> (float[1,8,14,14] y) {\n"
        "  lo = Constant<value = float {0.0}>()\n"
        "  hi = Constant<value = float {6.0}>()\n"
        "  e = Conv(x, we, be)\n"
        "  e6 = Clip(e, lo, hi)\n"
        "  d = Conv<group = 24, pads = [1,1,1,1]>(e6, wd, bd)\n"
        "  d6 = Clip(d, lo, hi)\n"
        "  p = Conv(d6, wp, bp)\n"
        "  s = Add(p, x)\n"
        "  y = Conv<group = 8, pads = [1,1,1,1]>(s, wl)\n"
        "}\n"
    )
    ref = graph_from_text(text)
    rng = np.random.default_rng(3)
    feeds = {v.name: (0.5 * rng.standard_normal(v.shape)).astype(np.float32) for v in ref.inputs}
    want = run_graph(ref, feeds)["y"]
    model = lepton_compiler.compile(graph_from_text(text), backend="tvm")
    got = model.run(feeds)["y"]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * float(np.abs(want).max()))
    assert not any("Conv" in f for f in model.report.fallbacks)
