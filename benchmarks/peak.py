"""Measure the machine's practical fp32 peak: NumPy's float32 matrix multiply (sgemm).

The "% of peak" column divides a configuration's achieved GFLOP/s by this figure. It is a
measured, practical peak (OpenBLAS/MKL sgemm with the benchmark's thread count), not the
datasheet's FMA peak, which no real model reaches: on the 2-core AVX-512 reference machine
the FMA peak is about 450 GFLOP/s and sgemm 4096³ about 315 GFLOP/s (TVM-NOTES.md).

It is measured once per benchmark run, after the thread variables are set, and stored in
the results JSON; absolute speeds drift between runs on shared machines, so a figure from
the same run is the fairer denominator. ``--peak GFLOPS`` skips the measurement.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np


def measure_peak(n: int = 4096, repeat: int = 3) -> dict[str, Any]:
    """Time ``a @ b`` for float32 ``n x n`` matrices; report the best of `repeat` runs.

    Args:
        n: the matrix size (4096 for the full run, 2048 for ``--quick``).
        repeat: timed runs after one untimed warm-up.

    Returns:
        ``gflops`` (best run), ``median_gflops``, ``n``, ``repeat``, ``method`` and the BLAS
        NumPy uses (``blas``, when NumPy says).
    """
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    out = np.empty((n, n), dtype=np.float32)
    np.matmul(a, b, out=out)  # warm-up: thread pool start, page faults
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        np.matmul(a, b, out=out)
        times.append(time.perf_counter() - start)
    flops = 2.0 * n**3
    times.sort()
    return {
        "gflops": flops / times[0] / 1e9,
        "median_gflops": flops / times[len(times) // 2] / 1e9,
        "n": n,
        "repeat": repeat,
        "method": f"numpy float32 matmul {n}x{n}x{n}, best of {repeat} after 1 warm-up",
        "blas": _blas_name(),
    }


def _blas_name() -> str | None:
    """The BLAS library NumPy was built with, e.g. ``scipy-openblas 0.3.29``, if it says."""
    try:
        config = np.show_config(mode="dicts")
    except Exception:  # older NumPy, or a build without the information
        return None
    blas = (config or {}).get("Build Dependencies", {}).get("blas", {})
    if not blas:
        return None
    return " ".join(str(blas[k]) for k in ("name", "version") if blas.get(k)) or None
