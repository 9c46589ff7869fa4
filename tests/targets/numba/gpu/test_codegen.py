"""CUDA code generation without running anything: the templates' sources (valid Python,
readable, the epilogue in the store), launch configurations from shapes, the groups they
refuse, and parity with the CPU templates (a group the CPU path takes has a CUDA kernel of
the same family)."""

from __future__ import annotations

import warnings

import pytest

import lepton_compiler
from lepton_compiler.errors import LoweringError
from lepton_compiler.ir import Graph, Node
from lepton_compiler.targets.numba.gpu.executor import _as_group
from lepton_compiler.targets.numba.gpu.templates import plan_group
from lepton_compiler.targets.numba.gpu.templates.launch import flat_launch
from lepton_compiler.testing import graph_from_text

from .models import skip_and_attention_graph


def groups(text_or_graph: str | Graph) -> list[Node]:
    """The groups the CUDA executor hands to the templates: the O2 pipeline's fused groups,
    and lone nodes wrapped as one-node groups."""
    graph = graph_from_text(text_or_graph) if isinstance(text_or_graph, str) else text_or_graph
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = lepton_compiler.compile(graph, backend="reference").graph
    wrapped = (_as_group(n) for n in out.nodes)
    return [g[0] for g in wrapped if g is not None]


CONV = """
g (float[2, 8, 33, 31] x, float[16, 8, 3, 3] w, float[16] b, float[2, 16, 33, 31] r)
    => (float[2, 16, 33, 31] y) {
    c = Conv<pads = [1, 1, 1, 1]>(x, w, b)
    a = Add(c, r)
    y = Relu(a)
}"""

MATMUL = """
g (float[4, 33, 70] a, float[70, 17] b, float[17] c) => (float[4, 33, 17] y) {
    m = MatMul(a, b)
    s = Add(m, c)
    y = Sigmoid(s)
}"""


def test_conv_source_is_an_implicit_gemm_with_the_epilogue_in_the_store() -> None:
    (group,) = groups(CONV)
    plan = plan_group(group)
    compile(plan.source, "conv.py", "exec")
    src = plan.source
    assert plan.family == "conv" and plan.ops == ["Conv", "Add", "Relu"]
    assert plan.grid == (-(-33 * 31 // 16), 1, 2) and plan.block == (16, 16)
    assert "@cuda.jit(cache=True)\ndef conv2d(x, w, b, e0, out):" in src
    assert "sb[ty, tx] = xv" in src and "if iy >= 0 and iy < 33 and ix >= 0 and ix < 31:" in src
    assert "acc += b[i]\n" in src and "v0 = acc + e0[n, i, j]" in src
    assert "v1 = max(v0, C0)" in src and "out[n, i, j] = v1" in src
    assert plan.param_shapes[1] == (16, 72) and plan.output_shapes == [(2, 16, 33 * 31)]


def test_matmul_rows_merged_and_launch_from_shape() -> None:
    (group,) = groups(MATMUL)
    plan = plan_group(group)
    compile(plan.source, "matmul.py", "exec")
    assert plan.grid == (2, -(-4 * 33 // 16), 1) and plan.block == (16, 16)
    assert plan.param_shapes == [(132, 70), (70, 17), (1, 17)]
    assert "for k0 in range(0, 70, 16):" in plan.source
    assert "math.exp(-v0)" in plan.source


def test_flat_launch_fits_the_size() -> None:
    assert flat_launch(10) == ((1,), (32,))
    assert flat_launch(100) == ((1,), (128,))
    assert flat_launch(1000) == ((4,), (256,))
    assert flat_launch(10**8) == ((4096,), (256,))  # the grid-stride loop covers the rest


def test_norm_and_attention_use_one_block_per_row() -> None:
    plans = {p.family: p for p in map(plan_group, groups(skip_and_attention_graph()))}
    assert plans["norm"].grid == (4,) and plans["norm"].block == (32,)
    assert plans["attention"].grid == (8,) and plans["attention"].block == (32,)
    src = plans["attention"].source
    assert (
        "p = cuda.shared.array(2, float32)" in src and "sh[tid] = max(sh[tid], sh[tid + 16])" in src
    )


@pytest.mark.parametrize(
    ("text", "why"),
    [
        (
            "g (float[2, 1, 3, 4] a, float[1, 3, 4, 5] b) => (float[2, 3, 3, 5] y) "
            "{ y = MatMul(a, b) }",
            "batch broadcast",
        ),
        ("g (float[3, 5] x) => (float[3, 5] y) { y = Softmax<axis = 0>(x) }", "non-last axis"),
        (
            "g (float[1, 2, 5, 5] x, float[2, 2, 3, 3] w) => (float[1, 2, 3, 3] y) "
            "{ c = Conv(x, w) \n y = Cos(c) }",
            "no Numba template for Cos",
        ),
    ],
)
def test_refused_groups_say_why(text: str, why: str) -> None:
    (group,) = groups(text)
    with pytest.raises(LoweringError, match=why):
        plan_group(group)


def test_every_group_the_cpu_templates_take_has_a_cuda_kernel() -> None:
    pytest.importorskip("numba")
    from lepton_compiler.targets.numba.templates import plan_group as cpu_plan

    for group in [*groups(CONV), *groups(MATMUL), *groups(skip_and_attention_graph())]:
        assert plan_group(group).family == cpu_plan(group).family
