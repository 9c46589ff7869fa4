"""How much work a group is, and whether its kernel is worth running on several threads.

A kernel below `SMALL_WORK` is generated without ``parallel=True`` (its ``prange`` loops
run serially) and runs with one thread for Numba and OpenBLAS; the others get
``parallel=True`` and the target's thread count. For small kernels waking a second thread
costs more than it saves, and far more when other processes keep the cores busy (see
`threads`); a serial function also compiles in about a third of the time (a 64-channel 3x3
conv: 0.68 s against 1.8 s), which is what most of the ONNX node suite's 373 distinct
kernels are.
"""

from __future__ import annotations

import math

from lepton_compiler.ir import Node, TensorType, Value

__all__ = ["SMALL_WORK", "model_flops", "work"]

#: Below this much work (FLOPs, or 8 per output element for kernels without a product) a
#: kernel is serial. Interleaved runs with other jobs on the cores (load average 4-5):
#: MobileNetV2 26.4 ms with every kernel parallel, 18.6 ms with kernels below 16 MFLOP
#: serial, 16.6 ms below 64 MFLOP; lighter load (1.3-1.5), 16 / 32 / 64 MFLOP: MobileNetV2
#: 13.0 / 12.8 / 13.2 ms, BERT-base 212 / 195 / 208 ms (its attention is 50 MFLOP).
SMALL_WORK = 32_000_000

#: Ops whose FLOPs `model_flops` counts.
_FLOP_OPS = ("Conv", "MatMul", "Gemm")


def work(node: Node) -> int:
    """The node's work: its Conv/MatMul/Gemm/attention FLOPs, else 8 per output element."""
    flops = model_flops(node)
    if flops:
        return flops
    body = node.attrs["body"].nodes if node.op == "lepton.Fused" else [node]
    for n in body:
        if n.op == "lepton.Attention" and len(n.inputs) >= 3:
            q, v = _static_shape(n.inputs[0]), _static_shape(n.inputs[2])
            if q and v and len(q) >= 2 and len(v) >= 2:
                return 2 * math.prod(q) * v[-2] + 2 * math.prod(q[:-1]) * v[-2] * v[-1]
    out = _static_shape(node.outputs[0]) if node.outputs else None
    return 8 * math.prod(out) if out is not None else 0


def model_flops(node: Node) -> int:
    """FLOPs of the Conv/MatMul/Gemm ops in `node` (or its fused body), from static shapes;
    0 where a shape is unknown."""
    if node.op == "lepton.Fused":
        return sum(model_flops(n) for n in node.attrs["body"])
    if node.op not in _FLOP_OPS or not node.outputs:
        return 0
    out = _static_shape(node.outputs[0])
    if out is None:
        return 0
    if node.op == "Conv":
        w = _static_shape(node.inputs[1] if len(node.inputs) > 1 else None)
        return 2 * math.prod(out) * math.prod(w[1:]) if w is not None and len(w) >= 2 else 0
    a = _static_shape(node.inputs[0] if node.inputs else None)
    if not a:
        return 0
    k = a[0] if node.op == "Gemm" and node.attrs.get("transA") else a[-1]
    return 2 * math.prod(out) * k


def _static_shape(v: Value | None) -> tuple[int, ...] | None:
    if v is None or not isinstance(v.type, TensorType) or v.type.shape is None:
        return None
    if not all(isinstance(d, int) for d in v.type.shape):
        return None
    return tuple(int(d) for d in v.type.shape)  # type: ignore[arg-type]
