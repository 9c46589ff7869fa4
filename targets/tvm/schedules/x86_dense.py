"""x86 schedule for dense groups (`kernels.dense`): a register-tiled GEMM with the epilogue
computed from the tile.

The lowering (`kernels.dense.lower_dense`) gives two kinds of stages: ``dense[M, Npad]``
(the reduction over K, reading A as ``[M, K]`` and the packed weights
``Bp[Npad / nb, K, nb]``, ``nb = nvec * lanes``) and one output stage per group output
(``[M, N]``: ``dense`` plus the fused epilogue, cropped to N).

Schedule:

- ``dense`` is split into register tiles of ``mb`` rows x ``nvec`` vectors of ``lanes``
  floats; inside a tile the loop order is ``k, row, vector, lane`` with rows and vectors
  unrolled and lanes vectorized, so every k step does ``nvec`` contiguous loads of the packed
  weights, ``mb`` broadcasts of A (``vbroadcastss``) and
  ``mb * nvec`` FMAs on accumulators that stay in zmm registers (``dense`` lives in a local
  buffer the size of one tile);
- the output stages run inside the tile loop, right after its reduction (the tile is still
  in registers or L1): epilogue and store cost one pass over the tile, no extra pass over
  memory; the store is vectorized when N is whole vectors;
- the tile loops ``(n block, m block)`` (or the other order) are fused and run in parallel;
  with n blocks outside, consecutive tiles of one thread share one weight panel
  (``K x nb``, L2-resident), and A (``M x K``) is re-read from L2.
- M = 1 (GEMV) uses a one-row tile with up to 8 vectors (8 independent FMA chains): the
  product is bound by streaming the weights, which the packed layout makes sequential;
- when no good tile height divides M (a prime sequence length), the lowering adds an
  ``a_pad`` stage copying A into rows padded to whole tiles (its own parallel loop): an
  ``M x K`` copy instead of a predicate in every FMA of the last tile.

K blocking (`DenseConfig.kc`, for weight panels ``K x nb`` above 512 KiB, e.g. K >= 3072):
the nest becomes (n block [parallel], k block, m block, k, tile): the ``kc x nb`` weight
micro-panel stays in cache across all m blocks, and the ``M x nb`` partial sums live in a
local buffer between k blocks (loaded into and stored from registers once per tile and k
block); the epilogue runs over the n block after its last k block. Smaller panels are not
blocked: each tile runs the whole reduction, its weight panel streaming from L2.

Measured (M x K x N; 2 threads, AVX-512 on an EPYC Zen 4 shared with other jobs, minimum
times, interleaved with ONNX Runtime): 128x768x768 0.65 ms (~230 GFLOP/s, 0.86-0.95x ORT's
time), 128x768x3072 + GELU 2.74 ms (0.83-0.86x), 128x3072x768 (kc = 512) 2.60 ms
(0.80-0.86x), GEMV 1x2048x1000 0.046 ms (0.42-0.77x).

`vectorize`/`parallel` come before `decompose_reduction` (the other order is a
ScheduleError in TVM 0.27).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import tvm
from tvm import s_tir

__all__ = ["A_PAD", "DENSE", "DenseConfig", "choose_dense_config", "schedule_dense"]

#: Name of the reduction stage (the schedule finds its block by this name).
DENSE = "dense"
#: Name of the optional stage copying A into rows padded to whole tiles.
A_PAD = "a_pad"


@dataclass(frozen=True)
class DenseConfig:
    """Tile sizes and loop order of the dense schedule.

    Attributes:
        lanes: fp32 lanes per vector (16 with AVX-512, 8 with AVX2).
        mb: rows of A per register tile (unrolled). When it does not divide M, A is first
            copied into zero-padded rows (`padded_m`), so the tile loop never has a tail.
        nvec: vectors of output columns per register tile (unrolled); also the packing
            block: weights are packed as ``[Npad / nb, K, nb]`` with ``nb = nvec * lanes``.
        n_outer: tile loop order (n block, m block) rather than (m block, n block).
        ku: unroll factor of the reduction loop (1: leave it to LLVM; measured neutral on
            the BERT shapes). Not used with ``kc``.
        kc: K block (0: none). With a block, the loop nest is (n block [parallel], k block,
            m block, k, tile): the ``kc x nb`` weight micro-panel stays in L1 across the m
            blocks, and the ``M x nb`` partial sums live in a local buffer between k blocks;
            the epilogue runs once per n block. Must divide K.
    """

    lanes: int
    mb: int
    nvec: int
    n_outer: bool = True
    ku: int = 1
    kc: int = 0

    def padded_m(self, m: int) -> int:
        """M rounded up to whole tiles of ``mb`` rows."""
        return -(-m // self.mb) * self.mb

    @property
    def nb(self) -> int:
        """Output columns per tile (and per packed weight panel)."""
        return self.lanes * self.nvec


def vector_registers(lanes: int) -> int:
    """Architectural vector registers: 32 zmm with AVX-512, else 16 (ymm/xmm). A tile's
    accumulators, its ``nvec`` weight vectors and one broadcast of A must fit, or LLVM
    spills accumulators to the stack inside the reduction loop."""
    return 32 if lanes >= 16 else 16


def choose_dense_config(m: int, n: int, k: int, lanes: int, threads: int = 2) -> DenseConfig:
    """Pick the register tile for an ``[M, K] x [K, N]`` product.

    Scored on: rows and columns wasted by padding M and N to whole tiles (a tile that does
    not divide M also costs a copy of A into padded rows),
    accumulators in flight (at least ~16 hide the FMA latency on two ports), loads per FMA
    (``(mb + nvec) / (mb * nvec)``), and enough tiles for every thread. M = 1 is a GEMV: one
    row, up to 8 vectors. Measured on the BERT shapes (M = 128): 8 x 3 vectors (24
    accumulators) beats 4 x 4 and 8 x 2.
    """
    if m == 1:
        best_nv, best_s = 1, -1.0
        for nvec in (8, 6, 4, 3, 2, 1):
            nb = nvec * lanes
            npad = -(-n // nb) * nb
            tiles = npad // nb
            s = (n / npad) * min(1.0, tiles / (4 * threads)) + 1e-3 * nvec
            if s > best_s + 1e-9:
                best_nv, best_s = nvec, s
        return DenseConfig(lanes, 1, best_nv)
    best: tuple[float, DenseConfig] | None = None
    for mb in range(1, min(m, 14) + 1):
        mpad = -(-m // mb) * mb
        for nvec in (4, 3, 2, 1):
            acc = mb * nvec
            if acc + nvec + 1 > vector_registers(lanes):
                continue
            nb = nvec * lanes
            npad = -(-n // nb) * nb
            tiles = (mpad // mb) * (npad // nb)
            useful = (n / npad) * (m / mpad) * (1.0 if mpad == m else 0.97)
            intensity = acc / (mb + nvec)
            score = (
                useful
                * min(1.0, acc / 16)
                * min(1.0, intensity / 2.2)
                * min(1.0, tiles / (2 * threads))
                + 1e-3 * acc
            )
            if best is None or score > best[0] + 1e-9:
                best = (score, DenseConfig(lanes, mb, nvec))
    assert best is not None
    return replace(best[1], kc=_k_block(m, n, k, best[1], threads))


#: Weight panels (``K x nb`` floats) above this size are blocked along K.
PANEL_BYTES_MAX = 512 << 10
#: Largest partial-sum panel (``M x nb`` floats) kept between K blocks.
PARTIALS_BYTES_MAX = 256 << 10


def _k_block(m: int, n: int, k: int, cfg: DenseConfig, threads: int) -> int:
    """The K block for `cfg` (0: none): used when the weight panel outgrows
    `PANEL_BYTES_MAX` (measured: 128x8192x768, 15.0 ms with kc=512 vs 20.0 ms unblocked;
    128x3072x768, 2.60 vs 2.66 ms), the partial sums stay small, and there are enough n
    blocks for every thread (the k-blocked nest is parallel over n blocks only)."""
    nblocks = -(-n // cfg.nb)
    if 4 * k * cfg.nb <= PANEL_BYTES_MAX or 4 * m * cfg.nb > PARTIALS_BYTES_MAX:
        return 0
    if nblocks < 2 * threads:
        return 0
    return next((kc for kc in (512, 384, 256, 128) if k % kc == 0 and kc < k), 0)


def schedule_dense(
    func: tvm.tirx.PrimFunc,
    cfg: DenseConfig,
    output_names: Sequence[str],
    vector_store: bool,
    pad_a: bool = False,
) -> s_tir.Schedule:
    """Apply the x86 dense schedule (see the module docstring).

    Args:
        func: the lowered PrimFunc: a ``dense`` stage and the output stages, nothing else.
        cfg: the tile; the weights must be packed by ``cfg.nb`` columns.
        output_names: the output stages' names.
        vector_store: vectorize the output stores (N is whole vectors).
        pad_a: the lowering has an ``a_pad`` stage (M padded to whole tiles): it becomes
            its own parallel loop, vectorized along K when K is whole vectors.

    Returns:
        The schedule; build ``sch.mod``.
    """
    sch = s_tir.Schedule(func)
    blk = sch.get_sblock(DENSE)
    m, n, k = sch.get_loops(blk)
    mo, mi = sch.split(m, [None, cfg.mb])
    no, nv, nl = sch.split(n, [None, cfg.nvec, cfg.lanes])
    if cfg.kc:
        ko, ki = sch.split(k, [None, cfg.kc])
        sch.reorder(no, ko, mo, ki, mi, nv, nl)
        sch.set_scope(blk, 0, "local")
        for name in output_names:
            fin = sch.get_sblock(name)
            sch.reverse_compute_at(fin, no)
            if vector_store:
                last = sch.get_loops(fin)[-1]
                _, lv = sch.split(last, [None, cfg.lanes])
                sch.vectorize(lv)
        sch.parallel(no)
        sch.unroll(mi)
        sch.unroll(nv)
        sch.vectorize(nl)
        sch.decompose_reduction(blk, ko)
        if pad_a:
            _schedule_pad(sch, cfg)
        return sch
    tiles = (no, mo) if cfg.n_outer else (mo, no)
    if cfg.ku > 1:
        ko, ki = sch.split(k, [None, cfg.ku])
        sch.reorder(*tiles, ko, ki, mi, nv, nl)
        red = ko
    else:
        sch.reorder(*tiles, k, mi, nv, nl)
        red = k
    sch.set_scope(blk, 0, "local")
    for name in output_names:
        fin = sch.get_sblock(name)
        sch.reverse_compute_at(fin, tiles[-1])
        if vector_store:
            last = sch.get_loops(fin)[-1]
            _, lv = sch.split(last, [None, cfg.lanes])
            sch.vectorize(lv)
    sch.parallel(sch.fuse(*tiles))
    sch.unroll(mi)
    sch.unroll(nv)
    sch.vectorize(nl)
    if cfg.ku > 1:
        sch.unroll(ki)
    sch.decompose_reduction(blk, red)
    if pad_a:
        _schedule_pad(sch, cfg)
    return sch


def _schedule_pad(sch: s_tir.Schedule, cfg: DenseConfig) -> None:
    """The ``a_pad`` copy: parallel over its outer loop, vectorized along the inner one."""
    pad = sch.get_sblock(A_PAD)
    outer, inner = sch.get_loops(pad)
    sch.parallel(outer)
    extent = sch.get(inner).extent
    if isinstance(extent, tvm.tirx.IntImm) and int(extent) % cfg.lanes == 0:
        _, lv = sch.split(inner, [None, cfg.lanes])
        sch.vectorize(lv)
