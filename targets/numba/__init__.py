"""The Numba backend: every fused group becomes one generated, readable Python function
compiled by Numba (``@njit(parallel=True, fastmath=True, error_model="numpy", cache=True)``;
without ``parallel`` for kernels with little work, see `work`), run in graph order by
`executor.NumbaExecutor`.

Layout of this package:

- `templates/`: one module per kernel template (element-wise chains, conv, dense, pooling,
  normalization, attention, transpose); each turns a ``lepton.Fused`` group into the source
  of one function (`templates.KernelSource`);
- `epilogue.py`: the element-wise op table and the epilogue fused into a template's store;
- `source_cache.py`: generated source written to content-hashed files and imported from
  there, so Numba's on-disk cache works across processes;
- `kernel.py`: source -> compiled `NumbaKernel`;
- `threads.py`: Numba and OpenBLAS thread counts;
- `work.py`: how much work a group is (serial or parallel kernel, thread count);
- `executor.py`: the static memory plan and the step loop.

Only this package imports ``numba`` (ruff's banned-api enforces it), and only when a model is
compiled for the backend: importing `lepton_compiler` never imports it.
"""
