"""The shared-memory tiled product that the matmul and conv templates share.

``out[q, i, j] = sum_k A[q, i, k] * B[q, k, j]`` with one ``TILE x TILE`` thread block per
output tile: thread ``(tx, ty)`` owns output ``(i, j) = (by*T + ty, bx*T + tx)``. The K axis is
walked a tile at a time; each step every thread loads one element of the A tile and one of
the B tile into shared memory (zero outside the matrix, so sizes need not be multiples of
the tile), the block waits at a barrier, each thread accumulates its dot product over the
tile from shared memory, and waits again before the tiles are overwritten. The store is
bounds-checked and runs the template's epilogue on the accumulator in registers.

Loads are written by the caller: the matmul's are plain array reads, the conv's B load is the
im2col gather (input pixel under filter tap ``k`` for output position ``j``, zero in the
padding), so the column matrix never exists in memory.
"""

from __future__ import annotations

from collections.abc import Callable

from lepton_compiler.errors import LoweringError

from ..emit import Constants, Lines
from .launch import MAX_GRID_Z, TILE

__all__ = ["tiled_launch", "write_tiled"]

#: Writes statements needed for a load (may be none) and returns the loaded expression.
Loader = Callable[[Lines], str]


def tiled_launch(m: int, n: int, batches: int) -> tuple[tuple[int, int, int], tuple[int, int]]:
    """(grid, block) of a tiled product: one block per output tile, batches along grid z
    (at most `MAX_GRID_Z` blocks; the kernel strides over the rest).

    Raises:
        LoweringError: more row tiles than grid y allows (`MAX_GRID_Z`).
    """
    if -(-m // TILE) > MAX_GRID_Z:
        raise LoweringError(f"a product of {m} rows exceeds the grid ({MAX_GRID_Z} row tiles)")
    return (-(-n // TILE), -(-m // TILE), max(1, min(batches, MAX_GRID_Z))), (TILE, TILE)


def write_tiled(
    code: Lines,
    consts: Constants,
    m: int,
    n: int,
    k: int,
    batches: int,
    bind: Callable[[Lines], None],
    load_a: Loader,
    load_b: Loader,
    store: Callable[[Lines], None],
) -> None:
    """Write the tiled product's body (see the module docstring).

    Args:
        code: the kernel body (at its top level).
        consts: the module's constants.
        m, n, k: the product's sizes per batch item.
        batches: batch items (the kernel loops ``q`` over them along grid z).
        bind: writes the statements that derive batch coordinates from ``q``.
        load_a: the A element at row ``i``, reduction index ``ka`` (called where
            ``i < m and ka < k`` holds).
        load_b: the B element at reduction index ``kb``, column ``j`` (called where
            ``kb < k and j < n`` holds).
        store: writes the store of ``acc`` at ``(i, j)`` (called where both are in range).
    """
    t, zero = TILE, consts(0.0)
    code(f"sa = cuda.shared.array(({t}, {t}), float32)  # A tile: rows i, reduction k")
    code(f"sb = cuda.shared.array(({t}, {t}), float32)  # B tile: reduction k, columns j")
    code("tx = cuda.threadIdx.x", "ty = cuda.threadIdx.y")
    code(f"i = cuda.blockIdx.y * {t} + ty", f"j = cuda.blockIdx.x * {t} + tx")
    code(f"for q in range(cuda.blockIdx.z, {batches}, cuda.gridDim.z):").indent()
    bind(code)
    code(f"acc = {zero}")
    code(f"for k0 in range(0, {k}, {t}):").indent()
    code("ka = k0 + tx")
    code(f"if i < {m} and ka < {k}:").indent()
    code(f"sa[ty, tx] = {load_a(code)}").dedent()
    code("else:").indent()
    code(f"sa[ty, tx] = {zero}").dedent()
    code("kb = k0 + ty")
    code(f"if kb < {k} and j < {n}:").indent()
    code(f"sb[ty, tx] = {load_b(code)}").dedent()
    code("else:").indent()
    code(f"sb[ty, tx] = {zero}").dedent()
    code("cuda.syncthreads()")
    code(f"for kk in range({t}):").indent()
    code("acc += sa[ty, kk] * sb[kk, tx]").dedent()
    code("cuda.syncthreads()").dedent()
    code(f"if i < {m} and j < {n}:").indent()
    store(code)
    code.dedent().dedent()
