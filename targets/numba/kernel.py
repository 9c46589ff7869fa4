"""A compiled kernel: a `templates.KernelSource` imported from the source cache and compiled
by Numba for its declared argument types.

Compilation is eager (at model compile time, not on the first run): the dispatcher is
compiled for exactly the argument types the executor passes (C-contiguous, writable arrays
of the declared shapes' ranks), which Numba loads from its disk cache when the same source
was compiled before. Kernels are kept per process by source file, so layers of the same
shape share one compiled function.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .source_cache import load_source, source_path
from .templates import KernelSource

__all__ = ["NumbaKernel", "build_kernel"]

_built: dict[str, NumbaKernel] = {}


@dataclass(eq=False)
class NumbaKernel:
    """A generated function compiled for its declared argument types.

    Attributes:
        plan: what the template wrote.
        func: the Numba dispatcher, called as ``func(*params, *outputs, *scratch)``.
        path: the generated source file.
        compile_s: seconds spent compiling (or loading from Numba's cache) in this process.
    """

    plan: KernelSource
    func: Any
    path: Path
    compile_s: float

    @property
    def family(self) -> str:
        return self.plan.family

    def convert(self, pos: int, value: Any) -> np.ndarray:
        """Parameter `pos` as the kernel declares it (packed when the template packs it)."""
        pack = self.plan.packs.get(pos)
        arr = pack(np.asarray(value)) if pack is not None else np.asarray(value)
        arr = np.ascontiguousarray(arr, dtype=self.plan.param_dtypes[pos])
        arr = arr.reshape(self.plan.param_shapes[pos])
        return arr if arr.flags.writeable else arr.copy()

    def __call__(self, *inputs: Any) -> list[np.ndarray]:
        """Run on the fused node's inputs (all of them, in order); return fresh outputs in
        the kernel's output shapes. For tests: the executor calls `func` on planned buffers."""
        p = self.plan
        params = [self.convert(k, inputs[i]) for k, i in enumerate(p.input_indices)]
        outs = [np.empty(s, d) for s, d in zip(p.output_shapes, p.output_dtypes, strict=True)]
        scratch = [np.empty(s, d) for s, d in p.scratch]
        self.func(*params, *outs, *scratch)
        return outs


def build_kernel(plan: KernelSource) -> NumbaKernel:
    """Import the plan's source (written to the cache folder first) and compile it."""
    import time

    from numba import typeof

    key = str(source_path(plan.source))  # per cache folder: LEPTON_CACHE_DIR may change
    kernel = _built.get(key)
    if kernel is not None:
        return NumbaKernel(plan, kernel.func, kernel.path, 0.0)
    start = time.perf_counter()
    module = load_source(plan.source)
    func = getattr(module, plan.name)
    shapes = [*plan.param_shapes, *plan.output_shapes, *(s for s, _ in plan.scratch)]
    dtypes = [*plan.param_dtypes, *plan.output_dtypes, *(d for _, d in plan.scratch)]
    sig = tuple(
        typeof(np.empty((1,) * len(s) if math.prod(s) else s, d))
        for s, d in zip(shapes, dtypes, strict=True)
    )
    func.compile(sig)
    kernel = NumbaKernel(plan, func, source_path(plan.source), time.perf_counter() - start)
    _built[key] = kernel
    return kernel
