"""TVM x86 conv groups: fused Conv + bias + ReLU/Clip + residual built with our schedule match
the reference interpreter on the unfused graph; kernels are cached by workload."""

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
from lepton_compiler.targets.tvm.te_ops import LoweringError, lower_group
from lepton_compiler.testing import graph_from_text

HEADER = '<ir_version: 8, opset_import: ["" : 18]>\n'
TARGET = host_target(2)


def conv_text(
    c: int,
    m: int,
    hw: tuple[int, int],
    k: tuple[int, int],
    *,
    strides: tuple[int, int] = (1, 1),
    pads: tuple[int, int, int, int] = (0, 0, 0, 0),
    dilations: tuple[int, int] = (1, 1),
    n: int = 1,
    bias: str = "none",  # "none" | "input" (Conv's B) | "add" (Add of [1,M,1,1])
    act: str = "none",  # "none" | "relu" | "clip" | any unary ONNX op name ("Sigmoid"...)
    residual: bool = False,
    relu_after_residual: bool = False,
) -> str:
    """An ONNX-text graph: Conv, then the requested epilogue; output y."""
    h, w = hw
    kh, kw = k
    ho = (h + pads[0] + pads[2] - dilations[0] * (kh - 1) - 1) // strides[0] + 1
    wo = (w + pads[1] + pads[3] - dilations[1] * (kw - 1) - 1) // strides[1] + 1
    out = f"float[{n},{m},{ho},{wo}]"
    ins = [f"float[{n},{c},{h},{w}] x", f"float[{m},{c},{kh},{kw}] wt"]
    if bias == "input":
        ins.append(f"float[{m}] b")
    if bias == "add":
        ins.append(f"float[1,{m},1,1] b")
    if residual:
        ins.append(f"{out} r")
    conv_ins = "x, wt, b" if bias == "input" else "x, wt"
    lines = [
        f"  t0 = Conv<pads = {list(pads)}, strides = {list(strides)}, "
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
    if act not in ("none", "relu", "clip"):
        add(f"{act}({last})")
    if residual:
        add(f"Add({last}, r)")
        if relu_after_residual:
            add(f"Relu({last})")
    lines.append(f"  y = Identity({last})" if last == "t0" else "")
    body = "\n".join(x for x in lines if x)
    if last != "t0":
        body = body.replace(f"  {last} = ", "  y = ")
    return HEADER + f"g ({', '.join(ins)}) => ({out} y) {{\n{body}\n}}"


def _fused(text: str) -> tuple[Graph, Graph, Node]:
    g, ref = graph_from_text(text), graph_from_text(text)
    GroupFusionPass()(g, PassContext())
    fused = [node for node in g if node.op == "lepton.Fused"]
    assert len(fused) == 1, str(g)
    return g, ref, fused[0]


def _feeds(graph: Graph, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {v.name: rng.standard_normal(v.shape).astype(np.float32) for v in graph.inputs}


def _check(text: str, seed: int = 0) -> None:
    _, ref, fused = _fused(text)
    feeds = _feeds(ref, seed)
    kernel = build_group(fused, TARGET)
    args = [feeds[v.name] if v.const is None else np.asarray(v.const) for v in fused.inputs]
    (got,) = kernel(*args)
    want = run_graph(ref, feeds)["y"]
    assert got.shape == want.shape
    scale = float(np.abs(want).max()) or 1.0
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * scale)


CASES = {
    "3x3_s1_p1_bias_relu": conv_text(8, 16, (10, 10), (3, 3), pads=(1, 1, 1, 1), bias="input",
                                     act="relu"),
    "1x1_plain": conv_text(16, 32, (7, 7), (1, 1)),
    "1x1_s2_bias": conv_text(16, 24, (9, 9), (1, 1), strides=(2, 2), bias="input"),
    "3x3_s2_p1_bias_relu": conv_text(8, 16, (11, 11), (3, 3), strides=(2, 2), pads=(1, 1, 1, 1),
                                     bias="input", act="relu"),
    "7x7_s2_p3_stem": conv_text(3, 16, (32, 32), (7, 7), strides=(2, 2), pads=(3, 3, 3, 3),
                                bias="input", act="relu"),
    "residual_then_relu": conv_text(8, 8, (8, 8), (3, 3), pads=(1, 1, 1, 1), bias="add",
                                    act="relu", residual=True, relu_after_residual=True),
    "residual_no_bias": conv_text(8, 16, (6, 6), (3, 3), pads=(1, 1, 1, 1), residual=True),
    "add_bias_clip_relu6": conv_text(4, 12, (9, 13), (3, 3), pads=(1, 1, 1, 1), bias="add",
                                     act="clip"),
    "asym_pads_dilation_batch2": conv_text(5, 7, (12, 9), (3, 2), pads=(2, 0, 1, 1),
                                           dilations=(2, 1), n=2, bias="input", act="relu"),
    "1x1_flat_bias_relu_residual": conv_text(16, 24, (8, 8), (1, 1), bias="input", act="relu",
                                             residual=True, relu_after_residual=True),
    "1x1_flat_partial_tile": conv_text(16, 16, (8, 10), (1, 1), bias="input", act="relu",
                                       residual=True),
    "1x1_flat_add_bias_clip": conv_text(8, 16, (4, 12), (1, 1), bias="add", act="clip", n=2),
    "rows_3x3_w16_residual": conv_text(8, 16, (6, 16), (3, 3), pads=(1, 1, 1, 1), bias="input",
                                       act="relu", residual=True, relu_after_residual=True),
    "rows_7x7_s2_stem_w64": conv_text(3, 8, (10, 64), (7, 7), strides=(2, 2), pads=(3, 3, 3, 3),
                                      bias="add", act="clip", n=2),
    "rows_padded_w14_residual": conv_text(8, 16, (14, 14), (3, 3), pads=(1, 1, 1, 1),
                                          bias="input", act="relu", residual=True,
                                          relu_after_residual=True),
    "5x5_stride_3": conv_text(4, 8, (17, 14), (5, 5), strides=(3, 3), pads=(2, 2, 2, 2),
                              bias="add", act="relu"),
}  # fmt: skip


@pytest.mark.parametrize("form", ["cvec", "other"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_fused_conv_matches_reference(
    name: str, form: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every case in both the channel-vector form and the position-vector forms."""
    from lepton_compiler.targets.tvm.kernels import conv

    monkeypatch.setattr(conv, "FORCE_CVEC", form == "cvec")
    _check(CASES[name])


def test_resnet_block_shape() -> None:
    """One real ResNet-50 layer size (64->64 3x3 on 56x56) with its residual tail."""
    _check(conv_text(64, 64, (56, 56), (3, 3), pads=(1, 1, 1, 1), bias="input", act="relu"))


def test_direct_conv_uses_flat_layout(monkeypatch: pytest.MonkeyPatch) -> None:
    """1x1 stride-1 convs whose H*W splits into vectors run in flat [N, C, H*W] layout (the
    epilogue inside the register tile); others keep NCHW (channel-vector form off)."""
    from lepton_compiler.targets.tvm.kernels import conv

    monkeypatch.setattr(conv, "FORCE_CVEC", False)
    _, _, fused = _fused(CASES["1x1_flat_bias_relu_residual"])
    kernel = build_group(fused, TARGET)
    assert (1, 16, 64) in kernel.param_shapes and kernel.kernel_output_shapes == [(1, 24, 64)]
    assert kernel.output_shapes == [(1, 24, 8, 8)]
    _, _, other = _fused(CASES["1x1_plain"])  # 7x7 positions: not whole vectors
    assert build_group(other, TARGET).param_shapes[0] == (1, 16, 7, 7)


FLAT_ORDER_CASES = {
    "narrow_clip_batch2": conv_text(16, 24, (8, 8), (1, 1), bias="input", act="clip", n=2),
    "odd_channels_partial_tile": conv_text(24, 21, (8, 10), (1, 1), bias="add", act="relu",
                                           residual=True),
    "wide_input_residual": conv_text(48, 16, (16, 16), (1, 1), bias="input", act="clip",
                                     residual=True),
}  # fmt: skip


@pytest.mark.parametrize("bound", [0, 64])
@pytest.mark.parametrize("name", sorted(FLAT_ORDER_CASES))
def test_flat_conv_both_loop_orders(name: str, bound: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Flat 1x1 convs with channel blocks outside position tiles (narrow inputs,
    `STORE_BOUND_MAX_CHANNELS`) and inside them both match the reference."""
    from lepton_compiler.targets.tvm.kernels import conv
    from lepton_compiler.targets.tvm.schedules import x86_conv

    monkeypatch.setattr(conv, "FORCE_CVEC", False)
    monkeypatch.setattr(x86_conv, "STORE_BOUND_MAX_CHANNELS", bound)
    monkeypatch.setattr(x86_conv, "STORE_BOUND_MIN_OUTPUT_BYTES", 0)
    _, ref, fused = _fused(FLAT_ORDER_CASES[name])
    kernel = build_group(fused, TARGET)
    cfg = kernel.config
    assert cfg is not None and len(kernel.kernel_output_shapes[0]) == 3  # the flat form
    c = ref.inputs[0].shape[1]
    assert cfg.spatial_outer == (c > bound)
    _check(FLAT_ORDER_CASES[name])


def test_narrow_flat_convs_sweep_channel_blocks_outside() -> None:
    """MobileNetV2's first expand conv (16->96 on 112x112, 4.8 MB out) puts channel blocks
    outside position tiles; smaller outputs (24->144 on 56x56) and wider inputs (ResNet-50's
    64->256 on 56x56) keep position tiles outside."""
    from lepton_compiler.targets.tvm.schedules.x86_conv import ConvConfig, choose_config
    from lepton_compiler.targets.tvm.te_ops import conv_workload

    def cfg(c: int, m: int, hw: int) -> ConvConfig:
        _, _, fused = _fused(conv_text(c, m, (hw, hw), (1, 1), bias="input", act="clip"))
        conv = next(n for n in fused.attrs["body"] if n.op == "Conv")
        return choose_config(conv_workload(conv), 16, flat=True)

    assert not cfg(16, 96, 112).spatial_outer
    assert cfg(24, 144, 56).spatial_outer
    assert cfg(64, 256, 56).spatial_outer


def test_whole_vector_widths_run_by_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    """Widths of whole vectors (or rounded up with little waste: 14 -> 16) run by rows, the
    epilogue inside the register tile; others keep the flattened NCHW form (with the
    channel-vector form, which takes 14x14 outputs by default, switched off)."""
    from lepton_compiler.targets.tvm.kernels import conv

    monkeypatch.setattr(conv, "FORCE_CVEC", False)
    for name in ("rows_7x7_s2_stem_w64", "rows_padded_w14_residual"):
        _, _, fused = _fused(CASES[name])
        kernel = build_group(fused, TARGET)
        assert kernel.config is not None and kernel.config.rows, name
    _, _, other = _fused(CASES["3x3_s1_p1_bias_relu"])  # width 10: the flattened form
    cfg = build_group(other, TARGET).config
    assert cfg is not None and not cfg.rows


def test_kernels_are_cached_by_workload() -> None:
    text = CASES["3x3_s1_p1_bias_relu"]
    _, _, f1 = _fused(text)
    _, _, f2 = _fused(text)
    k1, k2 = build_group(f1, TARGET), build_group(f2, TARGET)
    assert k1 is k2
    other = conv_text(8, 16, (10, 10), (3, 3), pads=(1, 1, 1, 1), bias="input", act="none")
    _, _, f3 = _fused(other)
    assert build_group(f3, TARGET) is not k1


def test_weights_are_kernel_parameters_and_clip_bounds_are_baked_in() -> None:
    _, _, fused = _fused(CASES["add_bias_clip_relu6"])
    lg = lower_group(fused)
    names = [v.name for v in fused.inputs]
    used = [names[i] for i in lg.input_indices]
    assert used == ["x", "wt", "b"]  # the Clip bounds (constants) are not parameters


def test_grouped_conv_is_refused() -> None:
    text = HEADER + """
g (float[1,4,6,6] x, float[4,1,3,3] wt) => (float[1,4,6,6] y) {
  c = Conv<group = 4, pads = [1,1,1,1]>(x, wt)
  y = Relu(c)
}
"""
    _, _, fused = _fused(text)
    with pytest.raises(LoweringError, match="grouped"):
        lower_group(fused)


def test_elementwise_only_group() -> None:
    text = HEADER + """
g (float[2,3,5,7] x, float[1,3,1,1] s) => (float[2,3,5,7] y) {
  a = Mul(x, s)
  y = Relu(a)
}
"""
    _check(text)
