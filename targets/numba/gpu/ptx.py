"""PTX for a fused group without a GPU: the group's generated kernel compiled by
``numba.cuda.compile_ptx`` for a compute capability.

Compiling needs NVIDIA's NVVM/NVRTC libraries (a CUDA toolkit, or the ``nvidia-cuda-nvrtc``
wheel), not a driver; it cannot run under the simulator, which has no compiler. Tests ask
`ptx_unavailable` first and skip with its reason.
"""

from __future__ import annotations

import functools

from lepton_compiler.errors import LeptonError, LoweringError
from lepton_compiler.ir import Node

from ..source_cache import load_source
from .kernel import arg_types, simulator_enabled
from .templates import CudaKernelSource, plan_group

__all__ = ["emit_ptx", "plan_ptx", "ptx_unavailable"]


def plan_ptx(plan: CudaKernelSource, cc: tuple[int, int] = (8, 0)) -> str:
    """PTX of a planned kernel for compute capability `cc`.

    Raises:
        LeptonError: running under the simulator, or the CUDA compiler is missing.
        LoweringError: NVVM rejected the generated kernel.
    """
    if simulator_enabled():
        raise LeptonError("PTX cannot be emitted under the CUDA simulator (NUMBA_ENABLE_CUDASIM)")
    from numba import cuda
    from numba.core.errors import NumbaError
    from numba.cuda.cudadrv.error import NvrtcSupportError, NvvmSupportError

    func = getattr(load_source(plan.source), plan.name)
    try:
        ptx, _ = cuda.compile_ptx(func.py_func, arg_types(plan), cc=cc)
    except (NvvmSupportError, NvrtcSupportError, OSError) as e:
        raise LeptonError(f"no CUDA compiler for PTX: {e}") from e
    except NumbaError as e:
        raise LoweringError(f"{plan.name}: NVVM rejected the kernel: {str(e)[:500]}") from e
    except Exception as e:
        # cuda-pathfinder's DynamicLibNotFoundError (libnvrtc, libnvvm missing) is neither
        if type(e).__name__ == "DynamicLibNotFoundError":
            raise LeptonError(f"no CUDA compiler for PTX: {e}") from e
        raise
    return str(ptx)


def emit_ptx(fused: Node, cc: tuple[int, int] = (8, 0)) -> str:
    """PTX of the group's CUDA kernel for compute capability `cc` (no GPU needed).

    Raises:
        LoweringError: no template takes the group.
        LeptonError: as `plan_ptx`.
    """
    return plan_ptx(plan_group(fused), cc)


@functools.cache
def ptx_unavailable() -> str | None:
    """Why PTX cannot be emitted here (None when it can): the simulator is on, numba-cuda is
    missing, or its compiler libraries are."""
    try:
        from numba import cuda  # noqa: F401
    except ImportError as e:
        return f"numba-cuda is not installed: {e}"
    if simulator_enabled():
        return "the CUDA simulator is on (NUMBA_ENABLE_CUDASIM=1)"

    probe = CudaKernelSource(
        name="probe",
        source=(
            "import math\n\nfrom numba import cuda, float32\n\n\n@cuda.jit\ndef probe(x):\n"
            "    s = cuda.shared.array(16, float32)\n    s[cuda.threadIdx.x] = math.exp(x[0])\n"
            "    cuda.syncthreads()\n    x[0] = s[0]\n"
        ),
        grid=(1,),
        block=(1,),
        input_indices=[],
        param_shapes=[],
        param_dtypes=[],
        output_shapes=[(1,)],
        output_dtypes=["float32"],
    )
    try:
        plan_ptx(probe)
    except LeptonError as e:
        return str(e)
    return None
