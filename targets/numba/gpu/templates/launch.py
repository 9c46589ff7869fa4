"""Launch configurations and the loops that go with them.

- *Flat* kernels (element-wise chains, pooling, depthwise conv) run one thread per output
  element in a grid-stride loop: blocks of up to 256 threads (fewer for tiny outputs, a
  multiple of the 32-thread warp), at most `MAX_BLOCKS` blocks; each thread steps by the
  whole grid, so any size is covered by any grid.
- *Tiled* kernels (matmul, conv) use ``TILE x TILE`` thread blocks, one output tile each, and
  loop over the third grid dim with a stride (batch items, images), so every thread of a
  block takes the same trip count and the barriers inside stay uniform.
- *Row* kernels (normalizations, attention) use one block per row, the row loop strided the
  same way.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..emit import Lines

__all__ = [
    "MAX_BLOCKS",
    "MAX_GRID_Z",
    "THREADS",
    "TILE",
    "flat_launch",
    "grid_stride",
    "unflatten",
]

#: Threads per block of a flat kernel.
THREADS = 256
#: Blocks of a flat kernel at most (enough to fill any current GPU several times over).
MAX_BLOCKS = 4096
#: Grid z (and row-grid x) at most: CUDA's limit for grid dims y and z.
MAX_GRID_Z = 65535
#: Tile edge of the tiled kernels (a 16 x 16 block, two 1 KiB shared tiles).
TILE = 16


def flat_launch(n: int) -> tuple[tuple[int], tuple[int]]:
    """(grid, block) of a grid-stride kernel over `n` elements."""
    block = min(THREADS, max(32, -(-n // 32) * 32))
    grid = max(1, min(MAX_BLOCKS, -(-n // block)))
    return (grid,), (block,)


def grid_stride(code: Lines, n: int, var: str = "t") -> None:
    """Open ``for t in range(cuda.grid(1), n, cuda.gridsize(1)):``; leaves `code` inside."""
    code(f"for {var} in range(cuda.grid(1), {n}, cuda.gridsize(1)):").indent()


def unflatten(code: Lines, flat: str, shape: Sequence[int], names: Sequence[str]) -> None:
    """Bind one index variable per dim of `shape` from the row-major flat index `flat`."""
    r = len(shape)
    for d in range(r):
        stride = 1
        for s in shape[d + 1 :]:
            stride *= s
        expr = flat if stride == 1 else f"{flat} // {stride}"
        if d > 0:
            expr = f"({expr}) % {shape[d]}" if stride != 1 else f"{flat} % {shape[d]}"
        code(f"{names[d]} = {expr}")
