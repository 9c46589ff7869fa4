"""The CUDA half of the Numba backend: every fused group becomes one generated, readable
``@cuda.jit`` kernel (numba-cuda), launched in graph order by `executor.CudaExecutor`.

The package is named ``gpu``, not ``cuda``: numba-cuda installs an import hook that claims
every module whose dotted name contains ``numba.cuda`` (to redirect ``numba.cuda`` to its
own package), and importing ``lepton_compiler.targets.numba.cuda`` through it recurses
without end.

Layout of this package:

- `templates/`: one module per kernel family (element-wise chains, tiled matmul/Gemm, conv as
  an implicit GEMM or a direct depthwise loop, pooling, row normalizations, attention,
  transpose); each turns a ``lepton.Fused`` group into the source of one kernel and its
  launch configuration (`templates.CudaKernelSource`);
- `emit.py`: the module frame of a CUDA kernel and the shared-memory tree reduction;
- `kernel.py`: source -> `CudaKernel` (imported from the CPU path's content-hashed source
  cache, so Numba's on-disk cache works for CUDA kernels too);
- `executor.py`: device buffers planned once per input shape, kernels launched in order,
  reference kernels on the host for groups no template takes;
- `ptx.py`: PTX for a group without a GPU (`emit_ptx`).

The element-wise epilogue of every template is the CPU path's `epilogue.Chain`: its op table
writes ``math.*`` calls and arithmetic, which are valid CUDA device code as they are.

Running needs either an NVIDIA driver or Numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``
set before ``numba`` is first imported, which runs every thread as Python on the CPU).
"""
