"""The Gather family: axis-0 lookups into a float32 table match the reference kernel for
int32/int64 indices, negative indices and index tensors of any rank; other forms are
refused."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tvm")

from lepton_compiler.interpreter import run_graph
from lepton_compiler.targets.tvm.build import build_group, host_target
from lepton_compiler.targets.tvm.executor import _wrap_single
from lepton_compiler.targets.tvm.te_ops import LoweringError
from lepton_compiler.testing import graph_from_text

HEADER = '<ir_version: 8, opset_import: ["" : 18]>\n'
TARGET = host_target(2)


@pytest.mark.parametrize(
    ("table", "index", "itype"),
    [((50, 32), (2, 7), "int64"), ((9, 3, 5), (4,), "int32"), ((1000, 768), (1, 128), "int64")],
)
def test_gather_matches_reference(
    table: tuple[int, ...], index: tuple[int, ...], itype: str
) -> None:
    out = (*index, *table[1:])
    text = HEADER + (
        f"g (float[{','.join(map(str, table))}] t, {itype}[{','.join(map(str, index))}] i) "
        f"=> (float[{','.join(map(str, out))}] y) {{\n  y = Gather<axis = 0>(t, i)\n}}"
    )
    graph = graph_from_text(text)
    fused, _ = _wrap_single(next(iter(graph)))
    kernel = build_group(fused, TARGET)
    rng = np.random.default_rng(0)
    t = rng.standard_normal(table).astype(np.float32)
    i = rng.integers(-table[0], table[0], index).astype(itype)
    want = run_graph(graph_from_text(text), {"t": t, "i": i})["y"]
    np.testing.assert_array_equal(kernel(t, i)[0], want)


def test_other_axis_is_refused() -> None:
    text = HEADER + (
        "g (float[4,6] t, int64[2] i) => (float[4,2] y) {\n  y = Gather<axis = 1>(t, i)\n}"
    )
    fused, _ = _wrap_single(next(iter(graph_from_text(text))))
    with pytest.raises(LoweringError, match="axis 0"):
        build_group(fused, TARGET)
