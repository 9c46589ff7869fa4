"""TVM batched MatMul of two activations (`kernels.bmm`, `schedules.x86_bmm`): broadcasting
leading dims, odd sizes (partial row blocks, overlapping column chunks, N below a vector),
an epilogue (scale, then a broadcast mask add), match the reference kernels."""

from __future__ import annotations

import os

import numpy as np
import pytest

pytest.importorskip("tvm")
os.environ.setdefault("TVM_NUM_THREADS", "2")

from lepton_compiler.ir import DType, Graph, Node, TensorType, Value
from lepton_compiler.targets.tvm.build import build_group
from lepton_compiler.targets.tvm.executor import _wrap_single
from lepton_compiler.targets.tvm.te_ops import LoweringError

from .test_x86_attention import TARGET, check_lone

CASES = {
    # name: (A, B, out)
    "attention_scores": ((1, 12, 128, 64), (1, 12, 64, 128), (1, 12, 128, 128)),
    "attention_values": ((2, 4, 37, 45), (2, 4, 45, 20), (2, 4, 37, 20)),
    "broadcast_b": ((3, 5, 9, 16), (1, 16, 33), (3, 5, 9, 33)),
    "broadcast_a": ((7, 8), (4, 8, 70), (4, 7, 70)),
    "narrow_n": ((2, 13, 11), (2, 11, 5), (2, 13, 5)),
    "one_row": ((6, 1, 32), (6, 32, 48), (6, 1, 48)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_batched_matmul_matches_reference(name: str) -> None:
    a, b, out = CASES[name]
    check_lone("MatMul", [a, b], out, {}, rtol=1e-5)


def test_batched_matmul_with_epilogue() -> None:
    """MatMul -> Div by a scalar -> Add of a [B, 1, 1, S] mask, as one kernel."""
    g = Graph(opset_imports={"": 18})
    q = g.add_input(Value("q", TensorType(DType.FLOAT32, (2, 3, 17, 8))))
    kt = g.add_input(Value("kt", TensorType(DType.FLOAT32, (2, 3, 8, 19))))
    mask = g.add_input(Value("mask", TensorType(DType.FLOAT32, (2, 1, 1, 19))))
    scale = Value("scale", TensorType(DType.FLOAT32, ()), const=np.array(8.0, np.float32))
    s = Value("s", TensorType(DType.FLOAT32, (2, 3, 17, 19)))
    d = Value("d", TensorType(DType.FLOAT32, (2, 3, 17, 19)))
    y = Value("y", TensorType(DType.FLOAT32, (2, 3, 17, 19)))
    body = Graph(opset_imports={"": 18})
    bq, bk, bm, bs = (body.add_input(Value(f"b{n}", v.type, const=v.const))
                      for n, v in (("q", q), ("k", kt), ("m", mask), ("s", scale)))  # fmt: skip
    body.append(Node("MatMul", [bq, bk], {}, outputs=[s], name="mm"))
    body.append(Node("Div", [s, bs], {}, outputs=[d], name="div"))
    body.append(Node("Add", [d, bm], {}, outputs=[y], name="add"))
    body.outputs = [y]
    fused = Node("lepton.Fused", [q, kt, mask, scale],
                 {"body": body, "anchor": "MatMul", "epilogue": ["Div", "Add"]},
                 outputs=[Value("out", y.type)], name="f")  # fmt: skip
    rng = np.random.default_rng(0)
    qv, kv = rng.standard_normal((2, 3, 17, 8)), rng.standard_normal((2, 3, 8, 19))
    mv = np.where(rng.random((2, 1, 1, 19)) < 0.3, -1e4, 0.0)
    want = (qv @ kv) / 8.0 + mv
    kernel = build_group(fused, TARGET)
    assert kernel.family == "dense"
    (got,) = kernel(*[x.astype(np.float32) for x in (qv, kv, mv, np.array(8.0))])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-3)


def test_one_d_operand_is_refused() -> None:
    g = Graph(opset_imports={"": 18})
    a = g.add_input(Value("a", TensorType(DType.FLOAT32, (5,))))
    b = g.add_input(Value("b", TensorType(DType.FLOAT32, (2, 5, 3))))
    node = Node("MatMul", [a, b], {}, outputs=[Value("y", TensorType(DType.FLOAT32, (2, 3)))])
    g.append(node)
    fused, _ = _wrap_single(node)
    with pytest.raises(LoweringError, match="1-D"):
        build_group(fused, TARGET)
