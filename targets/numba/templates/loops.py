"""Loop-nest helpers shared by the templates."""

from __future__ import annotations

import math
from collections.abc import Sequence

from ..emit import Lines

__all__ = ["BLOCK", "parallel_nest", "row_tiles"]

#: Elements per parallel chunk of a flat loop (large enough to amortize the scheduling).
BLOCK = 4096


def parallel_nest(code: Lines, shape: Sequence[int], names: Sequence[str]) -> None:
    """Open a loop nest over `shape` binding one variable per dim (`names`), parallel over
    everything but the last dim (flattened, so a leading batch of 1 still splits), the last
    dim innermost and serial (vectorized). A rank-1 nest runs in chunks of `BLOCK`. Leaves
    `code` indented inside the innermost loop."""
    if len(shape) == 1:
        n = shape[0]
        chunks = -(-n // BLOCK)
        code(f"for blk in prange({chunks}):").indent()
        code(f"for {names[0]} in range(blk * {BLOCK}, min(blk * {BLOCK} + {BLOCK}, {n})):")
        code.indent()
        return
    outer = math.prod(shape[:-1])
    code(f"for t in prange({outer}):").indent()
    for d in range(len(shape) - 1):
        stride = math.prod(shape[d + 1 : -1])
        expr = "t" if stride == 1 else f"t // {stride}"
        code(f"{names[d]} = {expr}" if d == 0 else f"{names[d]} = {expr} % {shape[d]}")
    code(f"for {names[-1]} in range({shape[-1]}):").indent()


def row_tiles(code: Lines, rows: int, tiles: int) -> None:
    """Open ``for t in prange(...)`` over `rows` rows split into `tiles` tiles (one per
    thread; ``step`` rows each, a multiple of 8); leaves `code` inside the loop with ``t``
    and ``step`` bound. Every tile's ``np.dot`` runs on 1-thread OpenBLAS
    (`threads.product_tiles`)."""
    per_tile = math.ceil(rows / max(1, tiles))
    step = math.ceil(per_tile / 8) * 8
    code(f"step = {step}")
    code(f"for t in prange({math.ceil(rows / step)}):").indent()
