"""fuse_attention: scaled dot-product attention → lepton.Attention; and the pattern fusions
end to end on a small BERT."""

from __future__ import annotations

import math

import numpy as np
import pytest
from onnx import helper
from onnx.reference import ReferenceEvaluator

from benchmarks.models import bert_base
from lepton_compiler.frontend.onnx import import_model
from lepton_compiler.ir import Graph, Node, Value
from lepton_compiler.ops import lookup_node
from lepton_compiler.pass_manager import PassContext, PassManager
from lepton_compiler.passes.fusion.attention import FuseAttentionPass
from lepton_compiler.pipeline import run_pipeline
from lepton_compiler.testing import (
    assert_equivalent,
    graph_from_text,
    op_list,
    random_inputs,
    run_reference,
)

D = 8  # head size
SQRT_D = repr(math.sqrt(D))
INV_SQRT_D = repr(1 / math.sqrt(D))


def _attention(scale: str = "div", mask: bool = True, k_perm: str = "0,2,3,1",
               value: str | None = None, softmax: str = "Softmax<axis = -1>(z)",
               extra_out: str = "") -> str:
    """q [N,2,4,8] (b, h, s, d); k as [N,4,2,8] (b, s, h, d) or [N,2,4,8]; v [N,2,4,8]."""
    k_shape = '"N",4,2,8' if k_perm == "0,2,3,1" else '"N",2,4,8'
    sig = f'(float["N",2,4,8] q, float[{k_shape}] k, float["N",2,4,8] v'
    sig += ', float["N",1,1,4] mask)' if mask else ")"
    sig += ' => (float["N",2,4,8] y' + (f", {extra_out})" if extra_out else ")")
    c = value or (SQRT_D if scale in ("div", "q_div") else INV_SQRT_D)
    body = f"  c = Constant<value = float {{{c}}}>()\n  kt = Transpose<perm = [{k_perm}]>(k)\n"
    if scale in ("div", "mul"):
        body += f"  s = MatMul(q, kt)\n  t = {scale.capitalize()}(s, c)\n"
    else:
        op = scale[2:].capitalize()
        body += f"  qs = {op}(q, c)\n  t = MatMul(qs, kt)\n"
    body += "  z = Add(mask, t)\n" if mask else "  z = Identity(t)\n"
    body += f"  p = {softmax}\n  y = MatMul(p, v)"
    return f"g {sig} {{\n{body}\n}}"


def _graph(text: str) -> Graph:
    g = graph_from_text(text)
    PassManager(["identity_elimination"]).run(g)  # the maskless forms read t directly
    return g


CASES = {
    "div_mask": (_attention("div"), ["Transpose", "lepton.Attention"]),
    "mul_mask": (_attention("mul"), ["Transpose", "lepton.Attention"]),
    "q_div_mask": (_attention("q_div"), ["Transpose", "lepton.Attention"]),
    "q_mul_nomask_k_heads": (_attention("q_mul", mask=False, k_perm="0,1,3,2"),
                             ["lepton.Attention"]),
    "div_nomask": (_attention("div", mask=False), ["Transpose", "lepton.Attention"]),
    "mul_mask_k_heads": (_attention("mul", k_perm="0,1,3,2"), ["lepton.Attention"]),
}


def _run(g: Graph, ctx: PassContext | None = None) -> bool:
    return FuseAttentionPass()(g, ctx or PassContext(verify_each=True)).modified


@pytest.mark.parametrize("case", sorted(CASES))
def test_attention_fires(case: str) -> None:
    text, expected = CASES[case]
    g, before = _graph(text), _graph(text)
    assert _run(g)
    assert op_list(g) == expected
    att = g.nodes[-1]
    assert att.attrs["scale"] == pytest.approx(1 / math.sqrt(D), rel=1e-6)
    assert len(att.inputs) == (4 if "nomask" not in case else 3)
    assert att.inputs[0] is g.inputs[0] and att.inputs[2] is g.inputs[2]
    if len(expected) == 2:
        assert g.nodes[0].attrs["perm"] == [0, 2, 1, 3]  # k back to [b, h, s, d]
    assert g.outputs[0].shape == ("N", 2, 4, 8)
    assert_equivalent(before, g, random_inputs(before, batch=3), rtol=1e-5, atol=1e-6)
    assert not _run(g)  # idempotent


NEGATIVE = {
    "wrong_scale": _attention("div", value="3.0"),
    "missing_softmax": _attention("div", softmax="Relu(z)"),
    "softmax_over_axis_2": _attention("div", softmax="Softmax<axis = 2>(z)"),
    "probabilities_read_elsewhere": _attention("div", extra_out='float["N",2,4,4] p'),
    "scores_read_elsewhere": _attention("mul", extra_out='float["N",2,4,4] s'),
}


@pytest.mark.parametrize("case", sorted(NEGATIVE))
def test_attention_refuses(case: str) -> None:
    g = _graph(NEGATIVE[case])
    ops = op_list(g)
    assert not _run(g)
    assert op_list(g) == ops


def test_mask_that_broadcasts_the_scores_is_refused() -> None:
    text = _attention("div").replace('float["N",1,1,4] mask', 'float[3,2,4,4] mask').replace(
        'float["N",2,4,8] y', 'float[3,2,4,8] y')
    g = _graph(text)
    ctx = PassContext(trace_rules=True, verify_each=True)
    assert not _run(g, ctx)
    assert any("attention_div_mask" in t and "broadcasts the scores" in t for t in ctx.traces)


@pytest.mark.parametrize(
    "case,reason",
    [("wrong_scale", "scale 0.333333 is not 1/sqrt(d) = 0.353553 for head size d = 8"),
     # both MatMuls match the root and fail equally deep at the Softmax; the tracer keeps the
     # first (QKᵀ, "expected Softmax producing %q") rather than the PV MatMul ("... found Relu")
     ("missing_softmax", "expected Softmax")],
)
def test_trace_explains_why_attention_did_not_fire(case: str, reason: str) -> None:
    g = _graph(NEGATIVE[case])
    ctx = PassContext(trace_rules=True, verify_each=True)
    assert not _run(g, ctx)
    line = next(t for t in ctx.traces if "rule attention_div_mask:" in t)
    assert "did not fire" in line and reason in line, line


# -- the pattern fusions on a small BERT ------------------------------------------------------

LAYERS = 2
PATTERN_FUSIONS = ["fuse_activations", "fuse_normalization", "fuse_skip_layernorm",
                   "fuse_attention", "fold_matmul_transpose", "fuse_matmul_bias"]  # fmt: skip
LAYER_NORMS = ("LayerNormalization", "lepton.SkipLayerNorm")


def _layers(g: Graph) -> list[list[Node]]:
    """The nodes after the embeddings' LayerNorm, cut after every second LayerNorm."""
    nodes = list(g)
    first = next(i for i, n in enumerate(nodes) if n.op in LAYER_NORMS)
    layers: list[list[Node]] = [[]]
    for n in nodes[first + 1 :]:
        layers[-1].append(n)
        if sum(m.op in LAYER_NORMS for m in layers[-1]) == 2:
            layers.append([])
    assert not layers[-1], f"nodes after the last layer: {[n.op for n in layers[-1]]}"
    return layers[:-1]


@pytest.mark.parametrize("batch,cleanup", [(2, True), ("batch", True), (2, False)])
def test_small_bert_fuses_every_layer(batch: int | str, cleanup: bool) -> None:
    model = bert_base(batch=batch, seq=16, layers=LAYERS, hidden=64, heads=4, ffn=128, vocab=100,
                      init_std=0.2)  # fmt: skip
    g, before = import_model(model, simplify=False), import_model(model, simplify=False)
    ctx = PassContext(opt_level=1, verify_each=True)
    if cleanup:
        run_pipeline(g, ctx)
    assert PassManager(PATTERN_FUSIONS).run(g, ctx).modified
    layers = _layers(g)
    assert len(layers) == LAYERS
    for nodes in layers:
        ops = [n.op for n in nodes]
        assert ops.count("lepton.Attention") == 1, ops
        assert ops.count("lepton.Gelu") == 1, ops
        assert sum(ops.count(op) for op in LAYER_NORMS) == 2, ops
        assert not {"Softmax", "Erf", "Div"} & set(ops), ops
    rng = np.random.default_rng(0)
    feeds = {"input_ids": rng.integers(0, 100, (2, 16)).astype(np.int64),
             "attention_mask": (rng.random((2, 16)) > 0.3).astype(np.int64)}  # fmt: skip
    feeds["attention_mask"][:, 0] = 1  # every row attends somewhere
    expected = run_reference(before, feeds)["last_hidden_state"]
    got = run_reference(g, feeds)["last_hidden_state"]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_attention_op_matches_onnx_attention_23() -> None:
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((2, 4, 5, 8)).astype(np.float32) for _ in range(3))
    mask = np.where(rng.random((2, 1, 1, 5)) > 0.3, 0.0, -10000.0).astype(np.float32)
    names = ["q", "k", "v", "mask"]
    node = helper.make_node("Attention", names, ["y"], scale=0.3)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info(n, 1, None)
                                            for n in names],
                              [helper.make_tensor_value_info("y", 1, None)])  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)])
    expected = ReferenceEvaluator(model).run(None, dict(zip(names, [q, k, v, mask],
                                                            strict=True)))[0]  # fmt: skip
    ours = Node("lepton.Attention", [Value(n) for n in names], {"scale": 0.3})
    ref = lookup_node(ours).reference
    assert ref is not None
    got = ref(ours, [q, k, v, mask], {})[0]
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
