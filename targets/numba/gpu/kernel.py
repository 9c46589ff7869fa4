"""A CUDA kernel: a `templates.CudaKernelSource` imported from the source cache and launched
with its own configuration.

The generated module is written to the same content-hashed cache folder as the CPU kernels
(`targets.numba.source_cache`), so ``@cuda.jit(cache=True)`` finds its machine code there in a
later process. On a GPU the kernel is compiled eagerly for its declared argument types (at
model compile time, not on the first run); under Numba's CUDA simulator there is nothing to
compile and launching runs every thread as Python.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lepton_compiler.errors import LeptonError

from ..source_cache import load_source, source_path
from .templates import CudaKernelSource

__all__ = ["CudaKernel", "arg_types", "build_kernel", "check_device", "simulator_enabled"]

_built: dict[str, CudaKernel] = {}


def simulator_enabled() -> bool:
    """True when Numba runs CUDA kernels on its simulator (``NUMBA_ENABLE_CUDASIM=1`` was set
    before ``numba`` was first imported)."""
    from numba import config

    return bool(config.ENABLE_CUDASIM)


def check_device() -> None:
    """Raise unless kernels can run: a CUDA driver with a GPU, or the simulator.

    Raises:
        LeptonError: neither is there; the message says how to get either.
    """
    if simulator_enabled():
        return
    from numba import cuda

    if not cuda.is_available():
        raise LeptonError(
            "the CUDA target needs an NVIDIA GPU and driver (numba.cuda.is_available() is "
            "False); to run the kernels on the CPU instead, set NUMBA_ENABLE_CUDASIM=1 before "
            "anything imports numba"
        )


def arg_types(plan: CudaKernelSource) -> tuple[Any, ...]:
    """Numba types of the kernel's arguments: C-contiguous arrays of the declared ranks."""
    from numba import from_dtype, types

    shapes = [*plan.param_shapes, *plan.output_shapes, *(s for s, _ in plan.scratch)]
    dtypes = [*plan.param_dtypes, *plan.output_dtypes, *(d for _, d in plan.scratch)]
    return tuple(
        types.Array(from_dtype(np.dtype(d)), len(s), "C")
        for s, d in zip(shapes, dtypes, strict=True)
    )


@dataclass(eq=False)
class CudaKernel:
    """A generated CUDA kernel, ready to launch.

    Attributes:
        plan: what the template wrote (source, launch configuration, declared arguments).
        func: the ``numba.cuda`` dispatcher.
        path: the generated source file.
        compile_s: seconds spent compiling (or loading from Numba's cache) in this process.
    """

    plan: CudaKernelSource
    func: Any
    path: Path
    compile_s: float

    @property
    def family(self) -> str:
        return self.plan.family

    @property
    def source(self) -> str:
        return self.plan.source

    def launch(self, *args: Any) -> None:
        """Launch on device arrays ``(*params, *outputs, *scratch)`` (asynchronous on a GPU)."""
        self.func[self.plan.grid, self.plan.block](*args)

    def __call__(self, *inputs: Any) -> list[np.ndarray]:
        """Run on host arrays, the fused node's inputs (all of them, in order); return the
        outputs on the host, in the kernel's output shapes. For tests: the executor launches
        on planned device buffers."""
        from numba import cuda

        p = self.plan
        params = []
        for k, i in enumerate(p.input_indices):
            x = np.asarray(inputs[i])
            x = p.packs[k](x) if k in p.packs else x
            x = np.ascontiguousarray(x, dtype=p.param_dtypes[k]).reshape(p.param_shapes[k])
            params.append(cuda.to_device(x))
        outs = [
            cuda.device_array(s, d) for s, d in zip(p.output_shapes, p.output_dtypes, strict=True)
        ]
        scratch = [cuda.device_array(s, d) for s, d in p.scratch]
        self.launch(*params, *outs, *scratch)
        return [o.copy_to_host() for o in outs]


def build_kernel(plan: CudaKernelSource) -> CudaKernel:
    """Import the plan's source (written to the cache folder first); on a GPU, compile it
    for its argument types now."""
    kernel = _built.get(plan.source)
    if kernel is not None:
        return CudaKernel(plan, kernel.func, kernel.path, 0.0)
    start = time.perf_counter()
    func = getattr(load_source(plan.source), plan.name)
    if not simulator_enabled():
        func.compile(arg_types(plan))
    kernel = CudaKernel(plan, func, source_path(plan.source), time.perf_counter() - start)
    _built[plan.source] = kernel
    return kernel
