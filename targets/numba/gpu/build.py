"""`build_cuda_executor`: what ``compile(..., backend="numba", target="cuda:sm_XX")`` calls —
the `CudaExecutor`, its note in the compile report, and one warning naming the ops that run
on the host with reference kernels (as the CPU path reports them)."""

from __future__ import annotations

import warnings
from typing import Any

from lepton_compiler.ir import Graph

from .executor import CudaExecutor

__all__ = ["build_cuda_executor"]


def build_cuda_executor(graph: Graph, target: Any, report: Any = None) -> CudaExecutor:
    """Build the CUDA executor for `graph` and report its fallbacks.

    Args:
        graph: the optimized, verified graph.
        target: the CUDA target (`Target` or text such as ``"cuda:sm_80"``).
        report: the compile report (``fallbacks`` list and ``notes`` list), or None.

    Raises:
        LeptonError: neither a GPU nor the simulator is there, or the target is not CUDA.
    """
    executor = CudaExecutor(graph, target)
    share = f"{executor.native_flops_share:.1%}"
    if report is not None:
        report.fallbacks = list(executor.fallbacks)
        report.notes.append(
            f"numba-cuda: {executor.num_kernels} CUDA kernels ({len(executor.kernels)} "
            f"distinct, {executor.compile_s:.1f} s to build); {share} of Conv/MatMul/Gemm "
            "FLOPs run in CUDA kernels"
        )
    if executor.fallbacks:
        warnings.warn(
            f"numba-cuda backend: {len(executor.fallbacks)} op kind(s) run on the host with "
            f"reference kernels: {', '.join(executor.fallbacks)} ({share} of Conv/MatMul/Gemm "
            "FLOPs in CUDA kernels)",
            stacklevel=3,
        )
    return executor
