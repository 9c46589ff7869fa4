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

from lepton_compiler.ir import Node

from ..graph_steps import model_flops
from ..graph_steps import static_shape as _static_shape

__all__ = ["SMALL_WORK", "model_flops", "work"]

#: Below this much work (FLOPs, or 8 per output element for kernels without a product) a
#: kernel is serial. Interleaved runs with other jobs on the cores (load average 4-5):
#: MobileNetV2 26.4 ms with every kernel parallel, 18.6 ms with kernels below 16 MFLOP
#: serial, 16.6 ms below 64 MFLOP; lighter load (1.3-1.5), 16 / 32 / 64 MFLOP: MobileNetV2
#: 13.0 / 12.8 / 13.2 ms, BERT-base 212 / 195 / 208 ms (its attention is 50 MFLOP).
SMALL_WORK = 32_000_000


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
