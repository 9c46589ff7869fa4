"""Thread counts of Numba's parallel loops and of OpenBLAS (inside ``np.dot``), never
running at the same time.

Default (``LEPTON_NUMBA_PRODUCTS`` unset or ``blas``): a conv or dense kernel calls one
``np.dot`` outside any ``prange`` loop, on OpenBLAS with the target's thread count, then its
parallel epilogue on Numba's threads; kernels with little work (`work.SMALL_WORK`) are serial
and run everything on one thread. ``LEPTON_NUMBA_PRODUCTS=tiles`` (read at compile time)
splits every product into one tile of output rows per Numba thread instead, each tile on
1-thread OpenBLAS with its epilogue right after, so that only Numba's pool ever wakes.

Measured on this machine (2 cores, AMD EPYC, float32, medians of 20-40 calls; other work
kept the cores busy to varying degrees, so each comparison was taken back to back in one
process):

- with a core free, one 2-thread ``np.dot`` beats 2 tiles on 1-thread BLAS, which gain
  little over one thread (concurrent OpenBLAS calls partly serialize): ``[256, 64] @ [64,
  3136]`` 0.57 ms against 1.26 ms (1.08 ms on one thread), ``[768, 768] @ [768, 128]``
  (BERT-base) 0.80 against 1.96 ms (1.63), ``[256, 2304] @ [2304, 196]`` 1.52 against
  1.41 ms (2.72); whole models: ResNet-50 at 1.70-1.86x ONNX Runtime against 2.06x;
- with both cores taken by other processes, 2-thread OpenBLAS stalls for whole scheduler
  time slices: ``[256, 64] @ [64, 3136]`` 8.0 ms against 1.16 ms as tiles, ``[64, 576] @
  [576, 3136]`` 16.0 against 3.4 ms; ResNet-50 then ran about 440 ms for whole stretches
  of runs (140 ms with 1-thread OpenBLAS) and reached 2.97x ONNX Runtime, against 1.07x
  with tiles. Hence the default for a machine the model has to itself, and the switch (or
  ``threads=1`` in the target) for a shared one;
- BLAS inside ``prange`` on more than one BLAS thread oversubscribes the cores: BERT-base's
  attention (12 heads, 128 x 64) took 18.2 ms with its products inside ``prange`` on
  2-thread BLAS, 1.95 ms on 1-thread BLAS, 1.55 ms with the products outside ``prange``
  (how the attention kernel is written);
- Numba's default OpenMP threading layer made every 2-thread product stall for 8 ms after
  a parallel loop (its workers spin-wait); the ``workqueue`` layer does not.

Defaults set here before Numba is imported (the environment wins): the ``workqueue``
threading layer; ``OPENBLAS_THREAD_TIMEOUT=4`` for the OpenBLAS copy SciPy loads for Numba
(see ``../shared/TVM-NOTES.md``, "Measuring on these machines"); and on x86 CPUs with
AVX-512, ``NUMBA_CPU_FEATURES=-prefer-256-bit``, which lets Numba's loops use 512-bit
registers (LLVM prefers 256-bit vectors on these CPUs; a fused multiply-add + Relu loop over
65,536 floats: 8.0 us against 11.1 us). CPU features are part of the key of Numba's cache.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
from collections.abc import Callable, Iterator

__all__ = [
    "blas_threads",
    "configure",
    "product_tiles",
    "set_numba_threads",
    "use_threads",
]

_configured = False


def configure() -> None:
    """Set the environment defaults of the module docstring; call before importing numba."""
    global _configured
    if _configured:
        return
    os.environ.setdefault("NUMBA_THREADING_LAYER", "workqueue")
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
    if _has_avx512():
        os.environ.setdefault("NUMBA_CPU_FEATURES", "-prefer-256-bit")
    import numba
    import scipy.linalg.cython_blas  # noqa: F401  (loads the OpenBLAS np.dot calls, see _blas_setters)

    # numba may have been imported before: its config is read again at the first compile
    numba.config.THREADING_LAYER = os.environ["NUMBA_THREADING_LAYER"]
    if os.environ.get("NUMBA_CPU_FEATURES"):
        numba.config.CPU_FEATURES = os.environ["NUMBA_CPU_FEATURES"]
    _configured = True


def _has_avx512() -> bool:
    """True on an x86-64 CPU with AVX-512F (Linux: from /proc/cpuinfo)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return any(line.startswith("flags") and " avx512f" in line for line in f)
    except OSError:
        return False


def set_numba_threads(threads: int) -> int:
    """Use `threads` Numba threads (at most ``NUMBA_NUM_THREADS``) in this thread; returns
    the count used."""
    import numba

    n = max(1, min(int(threads), int(numba.config.NUMBA_NUM_THREADS)))
    if numba.get_num_threads() != n:
        numba.set_num_threads(n)
    return n


def product_tiles(threads: int) -> int:
    """Row tiles per matrix product in a parallel kernel: `threads` with
    ``LEPTON_NUMBA_PRODUCTS=tiles``, else 1 (one product on multi-threaded OpenBLAS)."""
    return threads if os.environ.get("LEPTON_NUMBA_PRODUCTS", "blas") == "tiles" else 1


def use_threads(n: int, blas: int, current: tuple[int, int] | None) -> tuple[int, int]:
    """Switch Numba to `n` threads and every loaded OpenBLAS to `blas` (from `current`, None
    when unknown); returns the new pair. Called between kernels, inside `blas_threads`."""
    if current is None or n != current[0]:
        set_numba_threads(n)
    if current is None or blas != current[1]:
        for _, put in _blas_setters():
            put(blas)
    return n, blas


_setters: list[tuple[Callable[[], int], Callable[[int], None]]] | None = None
_PREFIXES = ("scipy_openblas", "scipy_openblas64_", "openblas", "openblas64_")


def _blas_setters() -> list[tuple[Callable[[], int], Callable[[int], None]]]:
    """(get, set) thread-count functions of every OpenBLAS loaded in this process (NumPy's
    and SciPy's are separate copies; `configure` has loaded SciPy's), looked up once."""
    global _setters
    if _setters is not None:
        return _setters
    found = []
    try:
        with open("/proc/self/maps", encoding="utf-8") as f:
            paths = sorted({ln.split()[-1] for ln in f if "openblas" in ln.lower()})
    except OSError:
        paths = []
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for pre in _PREFIXES:
            for suf in ("", "64_"):
                get = getattr(lib, f"{pre}_get_num_threads{suf}", None)
                put = getattr(lib, f"{pre}_set_num_threads{suf}", None)
                if get is not None and put is not None:
                    get.restype, put.argtypes = ctypes.c_int, [ctypes.c_int]
                    found.append((get, put))
                    break
            else:
                continue
            break
    _setters = found
    return found


@contextlib.contextmanager
def blas_threads(n: int) -> Iterator[None]:
    """Run the block with every loaded OpenBLAS on `n` threads (restored afterwards)."""
    setters = _blas_setters()
    before = [int(get()) for get, _ in setters]
    for (_, put), b in zip(setters, before, strict=True):
        if b != n:
            put(n)
    try:
        yield
    finally:  # always: `use_threads` may have changed them inside the block
        for (_, put), b in zip(setters, before, strict=True):
            put(b)
