"""Observers: per-tensor statistics collected during calibration, turned into a clip range.

An observer sees a tensor once per calibration batch (`update`) and then answers which real
interval ``[lo, hi]`` to map onto an integer grid (`range`). Four methods (`METHODS`):

- ``minmax``: the running minimum and maximum; keeps every outlier.
- ``percentile``: clips at a percentile of ``|x|`` (symmetric grids) or at the
  ``(100 - p, p)`` percentiles of ``x`` (asymmetric grids).
- ``entropy``: the clip threshold whose quantized distribution is closest to the observed one
  in KL divergence (TensorRT's calibrator; for asymmetric grids both ends are searched).
- ``mse``: the range that minimizes the expected squared error of quantizing the observed
  distribution on the given grid: rounding error inside the range plus clipping error
  outside it.

The last three keep a *streaming* histogram with a fixed number of bins, so a calibration set
of any size costs O(num_bins) memory: when a batch exceeds the covered range, the range grows
by an integer factor and old bins merge exactly into the new, wider ones (as PyTorch's
HistogramObserver does). The searches run on the histogram only, never on the data.

A range always holds 0.0 (``lo <= 0 <= hi``, so zero padding and ReLU's floor are exact) and is
never empty: a tensor that is all zeros gets a tiny range (scale of float32's epsilon).
Range-to-grid arithmetic follows ``real = (q - zero_point) * scale``: symmetric grids use
``scale = 2 * hi / (qmax - qmin)`` with the zero point in the middle of the grid, asymmetric
grids ``scale = (hi - lo) / (qmax - qmin)`` and ``zero_point = rint(qmin - lo / scale)``
(see `grid_params`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TypeAlias

import numpy as np

from lepton_compiler.errors import LeptonError

#: The calibration methods `make_observer` knows.
METHODS = ("minmax", "percentile", "entropy", "mse")

#: A real interval ``(lo, hi)``.
RangeT: TypeAlias = tuple[float, float]

#: Smallest scale a range may imply; a range narrower than that is widened.
_MIN_SCALE = float(np.finfo(np.float32).eps)


class Observer:
    """Statistics of one tensor over the calibration set.

    Attributes:
        count: number of finite elements seen.
        zeros: how many of them were exactly 0.0.
        nonfinite: number of NaN/inf elements seen (ignored by every statistic).
        min: smallest finite value seen (``inf`` before any).
        max: largest finite value seen (``-inf`` before any).
    """

    def __init__(self) -> None:
        self.count = 0
        self.zeros = 0
        self.nonfinite = 0
        self.min = math.inf
        self.max = -math.inf

    def update(self, x: np.ndarray) -> None:
        """Add one batch of values (any shape; integer arrays are read as floats)."""
        x = np.asarray(x)
        if x.dtype.kind not in "f":
            x = x.astype(np.float64)
        x = x.reshape(-1)
        finite = np.isfinite(x)
        if not finite.all():
            self.nonfinite += int(x.size - np.count_nonzero(finite))
            x = x[finite]
        if x.size == 0:
            return
        self.count += int(x.size)
        self.zeros += int(x.size - np.count_nonzero(x))
        self.min = min(self.min, float(x.min()))
        self.max = max(self.max, float(x.max()))
        self._update(x)

    def _update(self, x: np.ndarray) -> None:
        """Subclass hook: `x` is a non-empty flat array of finite floats."""

    def range(self, symmetric: bool, qmin: int, qmax: int) -> tuple[float, float]:
        """The real interval ``[lo, hi]`` to map onto the integer grid ``[qmin, qmax]``.

        Args:
            symmetric: the grid is symmetric around zero (then ``lo == -hi``), e.g. int8
                ``[-127, 127]`` or ``[-128, 127]``; otherwise asymmetric, e.g. uint8
                ``[0, 255]``.
            qmin: smallest integer of the grid.
            qmax: largest integer of the grid.

        Returns:
            ``(lo, hi)`` with ``lo <= 0 <= hi`` and ``lo < hi``; a tiny range when nothing
            (or only zeros) was seen.

        Raises:
            LeptonError: ``qmin >= qmax``.
        """
        if not qmin < qmax:
            raise LeptonError(f"an integer grid needs qmin < qmax, got [{qmin}, {qmax}]")
        if self.count == 0 or (self.min == 0.0 and self.max == 0.0):
            return _finish(0.0, 0.0, symmetric, qmin, qmax)
        lo, hi = self._range(symmetric, qmin, qmax)
        return _finish(lo, hi, symmetric, qmin, qmax)

    def _range(self, symmetric: bool, qmin: int, qmax: int) -> tuple[float, float]:
        """Subclass hook: the raw range (made valid by the caller); some data was seen."""
        return self.min, self.max

    def state_nbytes(self) -> int:
        """Bytes of array state kept (histograms); independent of how many batches were seen."""
        return 0

    def __repr__(self) -> str:
        return f"{type(self).__name__}(count={self.count}, min={self.min:g}, max={self.max:g})"


class MinMaxObserver(Observer):
    """The running minimum and maximum (every outlier is kept in range)."""


class HistogramObserver(Observer):
    """A streaming histogram of the values with a fixed number of bins per sign.

    ``pos[i]`` counts values ``x >= 0`` with ``x / width`` in ``[i, i + 1)``, ``neg[i]`` the
    values ``x < 0`` with ``-x / width`` in ``[i, i + 1)``; together they cover
    ``[-num_bins * width, num_bins * width]``. When a batch goes beyond that, `width` grows by
    the smallest integer factor that covers it and old bins are summed into the new ones,
    which is exact because each new bin is a union of whole old bins.
    """

    def __init__(self, num_bins: int) -> None:
        super().__init__()
        self.num_bins = num_bins
        self.width = 0.0
        self.pos = np.zeros(num_bins, np.int64)
        self.neg = np.zeros(num_bins, np.int64)

    def _update(self, x: np.ndarray) -> None:
        amax = float(max(-x.min(), x.max()))
        if amax == 0.0:
            self.pos[0] += x.size  # zeros fall into bin 0 whatever the width
            return
        covered = self.width * self.num_bins
        if self.width == 0.0:
            self.width = amax / self.num_bins
        elif amax > covered:
            self._widen(math.ceil(amax / covered))
        mag = np.abs(x).astype(np.float64, copy=False) / self.width
        idx = np.minimum(mag.astype(np.int64), self.num_bins - 1)
        neg = x < 0
        self.neg += np.bincount(idx[neg], minlength=self.num_bins)
        self.pos += np.bincount(idx[~neg], minlength=self.num_bins)

    def _widen(self, factor: int) -> None:
        """Make bins `factor` times wider, merging old bins into the new ones."""
        n = self.num_bins
        for name in ("pos", "neg"):
            old = getattr(self, name)
            if factor >= n:
                merged = old.sum(keepdims=True)
            else:
                old = np.concatenate([old, np.zeros((-n) % factor, np.int64)])
                merged = old.reshape(-1, factor).sum(axis=1)
            new = np.zeros(n, np.int64)
            new[: merged.size] = merged
            setattr(self, name, new)
        self.width *= factor

    def state_nbytes(self) -> int:
        return int(self.pos.nbytes + self.neg.nbytes)

    def abs_hist(self, zeros: bool = True) -> np.ndarray:
        """Counts of ``|x|`` over ``[i * width, (i + 1) * width)``, ``num_bins`` bins;
        without the exact zeros when `zeros` is False."""
        return self._pos(zeros) + self.neg

    def signed_hist(self, zeros: bool = True) -> np.ndarray:
        """Counts of ``x`` over ``2 * num_bins`` bins from ``-num_bins * width`` upwards;
        without the exact zeros when `zeros` is False."""
        return np.concatenate([self.neg[::-1], self._pos(zeros)])

    def _pos(self, zeros: bool) -> np.ndarray:
        if zeros:
            return self.pos
        pos = self.pos.copy()
        pos[0] -= self.zeros
        return pos


class PercentileObserver(HistogramObserver):
    """Clips at a percentile of ``|x|`` (symmetric) or at ``(100 - p, p)`` (asymmetric)."""

    def __init__(self, num_bins: int, percentile: float) -> None:
        super().__init__(num_bins)
        self.percentile = percentile

    def _range(self, symmetric: bool, qmin: int, qmax: int) -> tuple[float, float]:
        q = self.percentile / 100.0
        if symmetric:
            t = min(_quantile(self.abs_hist(), q, 0.0, self.width), max(-self.min, self.max))
            return -t, t
        start = -self.num_bins * self.width
        hist = self.signed_hist()
        lo = _quantile(hist, 1.0 - q, start, self.width)
        hi = _quantile(hist, q, start, self.width)
        return max(lo, self.min), min(hi, self.max)


class EntropyObserver(HistogramObserver):
    """The range with the least KL divergence between observed and quantized distributions."""

    def _range(self, symmetric: bool, qmin: int, qmax: int) -> tuple[float, float]:
        return _entropy_range(self, symmetric, qmin, qmax)


class MSEObserver(HistogramObserver):
    """The range with the least expected squared error (rounding inside, clipping outside)."""

    def _range(self, symmetric: bool, qmin: int, qmax: int) -> tuple[float, float]:
        return _mse_range(self, symmetric, qmin, qmax)


def make_observer(method: str, *, percentile: float = 99.999, num_bins: int = 2048) -> Observer:
    """A fresh observer for `method` (one of `METHODS`).

    Args:
        method: ``"minmax"``, ``"percentile"``, ``"entropy"`` or ``"mse"``.
        percentile: for ``"percentile"``: the percentile kept in range, in ``(50, 100]``.
        num_bins: histogram bins per sign for the histogram methods (memory is O(num_bins)).

    Raises:
        LeptonError: an unknown method or an invalid parameter.
    """
    if method not in METHODS:
        raise LeptonError(
            f"unknown calibration method {method!r}; known methods: {', '.join(METHODS)}"
        )
    if method == "minmax":
        return MinMaxObserver()
    if not (isinstance(num_bins, int) and num_bins >= 16):
        raise LeptonError(f"num_bins must be an integer >= 16, got {num_bins!r}")
    if method == "percentile":
        if not 50.0 < percentile <= 100.0:
            raise LeptonError(f"percentile must be in (50, 100], got {percentile!r}")
        return PercentileObserver(num_bins, float(percentile))
    if method == "entropy":
        return EntropyObserver(num_bins)
    return MSEObserver(num_bins)


def grid_params(lo: float, hi: float, symmetric: bool, qmin: int, qmax: int) -> tuple[float, int]:
    """``(scale, zero_point)`` for mapping ``[lo, hi]`` onto ``[qmin, qmax]``; the arithmetic
    the ``mse`` search assumes (see the module docstring)."""
    if symmetric:
        return 2.0 * max(-lo, hi) / (qmax - qmin), (qmin + qmax + 1) // 2
    scale = (hi - lo) / (qmax - qmin)
    return scale, int(np.clip(np.rint(qmin - lo / scale), qmin, qmax))


def _quantile(hist: np.ndarray, q: float, start: float, width: float) -> float:
    """The `q` quantile of a histogram with bins ``[start + i * width, ...)``, interpolated
    linearly within the bin where the cumulative count reaches it."""
    cum = np.cumsum(hist, dtype=np.float64)
    target = q * cum[-1]
    i = int(np.searchsorted(cum, target, side="left"))
    i = min(i, hist.size - 1)
    before = cum[i - 1] if i > 0 else 0.0
    frac = (target - before) / hist[i] if hist[i] > 0 else 1.0
    return start + (i + min(max(frac, 0.0), 1.0)) * width


def _finish(lo: float, hi: float, symmetric: bool, qmin: int, qmax: int) -> tuple[float, float]:
    """Make a raw range valid: holds 0, symmetric when asked, at least `_MIN_SCALE` per step."""
    lo = min(float(lo), 0.0) + 0.0 if math.isfinite(lo) else 0.0  # + 0.0: no -0.0
    hi = max(float(hi), 0.0) if math.isfinite(hi) else 0.0
    if symmetric:
        lo, hi = -max(-lo, hi), max(-lo, hi)
    min_width = _MIN_SCALE * (qmax - qmin)
    if hi - lo < min_width:
        if symmetric:
            lo, hi = -min_width / 2, min_width / 2
        elif lo < 0.0 and hi == 0.0:
            lo = -min_width
        else:
            hi = lo + min_width
    return lo, hi


# -- histogram searches -------------------------------------------------------------------------

#: Candidates evaluated one by one in a 1-D search before it goes coarse-to-fine.
_SEARCH_BUDGET = 256
#: Candidates per axis of the coarse 2-D grid of the asymmetric MSE search.
_GRID_BUDGET = 128


def _extent(counts: np.ndarray) -> int:
    """Number of bins up to and including the last non-empty one."""
    nz = np.flatnonzero(counts)
    return int(nz[-1]) + 1 if nz.size else 0


def _search_1d(cost: Callable[[int], float], candidates: np.ndarray) -> int:
    """The candidate of least cost: all of them when few, else every k-th and then every one
    around the best of those."""
    if candidates.size <= _SEARCH_BUDGET:
        costs = [cost(int(c)) for c in candidates]
        return int(candidates[int(np.argmin(costs))])
    stride = -(-candidates.size // _SEARCH_BUDGET)
    coarse = candidates[::stride]
    at = int(np.argmin([cost(int(c)) for c in coarse])) * stride
    near = candidates[max(at - stride, 0) : at + stride + 1]
    return int(near[int(np.argmin([cost(int(c)) for c in near]))])


def _kl(hist: np.ndarray, cum: np.ndarray, start: int, stop: int, levels: int) -> float:
    """TensorRT's divergence for the window ``hist[start:stop]`` on a grid of `levels` steps.

    P is the window with the clipped counts added to its edge bins; Q is the window merged
    into `levels` equal chunks and spread back evenly over each chunk's non-empty bins.
    """
    window = hist[start:stop].astype(np.float64)
    p = window.copy()
    p[0] += cum[start]
    p[-1] += cum[-1] - cum[stop]
    chunk = np.minimum(np.arange(window.size) // (window.size // levels), levels - 1)
    full = p > 0
    sums = np.bincount(chunk, weights=window, minlength=levels)
    filled = np.bincount(chunk, weights=full, minlength=levels)
    q = np.where(full, sums[chunk] / np.maximum(filled[chunk], 1.0), 0.0)
    if not q.any():
        return math.inf  # everything clipped: nothing left to compare
    q = np.where(full & (q == 0.0), 1e-4, q)  # mass Q cannot express: heavily penalized
    p, q = p[full] / p.sum(), q[full] / q.sum()
    return float(np.sum(p * np.log(p / q)))


def _entropy_range(obs: HistogramObserver, symmetric: bool, qmin: int, qmax: int) -> RangeT:
    """The KL-optimal range: a threshold on ``|x|`` (symmetric), or both ends searched in
    turns (asymmetric), clipped to the observed extremes.

    Exact zeros are left out (they are exact on every grid; the spike ReLU leaves at zero
    would otherwise dominate the divergence). As in TensorRT, the narrowest window tried is
    one histogram bin per grid step.
    """
    w = obs.width
    if symmetric:
        hist = obs.abs_hist(zeros=False)
        levels = (qmax - qmin) // 2 + 1
        last = _extent(hist)
        cum = np.concatenate([[0], np.cumsum(hist)])
        if last > levels:
            last = _search_1d(lambda i: _kl(hist, cum, 0, i, levels), np.arange(levels, last + 1))
        t = min(last * w, max(-obs.min, obs.max))
        return -t, t
    n = obs.num_bins
    hist = obs.signed_hist(zeros=False)
    cum = np.concatenate([[0], np.cumsum(hist)])
    levels = qmax - qmin + 1
    a_max, b_max = _extent(obs.neg), _extent(obs.pos)
    a, b = a_max, b_max
    if a + b > levels:
        for _ in range(3):
            prev = (a, b)
            b = _search_1d(
                lambda j, a=a: _kl(hist, cum, n - a, n + j, levels),
                np.arange(max(levels - a, 0), b_max + 1),
            )
            a = _search_1d(
                lambda j, b=b: _kl(hist, cum, n - j, n + b, levels),
                np.arange(max(levels - b, 0), a_max + 1),
            )
            if (a, b) == prev:
                break
    return max(-a * w, obs.min), min(b * w, obs.max)


class _Tail:
    """Clipping error of one sign's ``|x|`` histogram beyond any threshold, with values
    spread evenly within each bin."""

    def __init__(self, counts: np.ndarray, width: float) -> None:
        c = counts.astype(np.float64)
        lo = np.arange(c.size) * width
        hi = lo + width
        self.c, self.w, self.n = c, width, c.size
        self.s0 = _suffix(c)
        self.s1 = _suffix(c * (lo + hi) / 2)
        self.s2 = _suffix(c * (lo * lo + lo * hi + hi * hi) / 3)

    def error(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(sum of (|x| - t)^2 over |x| > t, count of |x| > t)`` for each threshold."""
        k = np.clip(np.floor(t / self.w), 0, self.n).astype(np.int64)
        kk = np.minimum(k, self.n - 1)
        b = (kk + 1) * self.w
        part = np.where(k < self.n, self.c[kk] * np.clip((b - t) / self.w, 0.0, 1.0), 0.0)
        rest = np.minimum(k + 1, self.n)
        s0 = self.s0[rest] + part
        s1 = self.s1[rest] + part * (t + b) / 2
        s2 = self.s2[rest] + part * (t * t + t * b + b * b) / 3
        return np.maximum(s2 - 2 * t * s1 + t * t * s0, 0.0), s0


def _suffix(x: np.ndarray) -> np.ndarray:
    """``out[i] = x[i:].sum()``, with ``out[len(x)] = 0``."""
    return np.concatenate([np.cumsum(x[::-1])[::-1], [0.0]])


def _mse_range(obs: HistogramObserver, symmetric: bool, qmin: int, qmax: int) -> RangeT:
    """The range of least expected squared error: ``scale^2 / 12`` per value kept in range
    (exact zeros excluded: they are exact on every grid) plus the squared distance of every
    clipped value to the grid's end; thresholds are searched over the bin edges."""
    w = obs.width
    pos = obs._pos(zeros=False)
    up, down = _Tail(pos, w), _Tail(obs.neg, w)
    total = float(pos.sum() + obs.neg.sum())
    steps = qmax - qmin

    def cost(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Expected error of the range ``[-a, b]`` (broadcast)."""
        a, b = np.broadcast_arrays(a, b)
        span = a + b
        scale = np.where(span > 0, span, 1.0) / steps
        if symmetric:
            zp = np.full(scale.shape, (qmin + qmax + 1) // 2)
        else:
            zp = np.clip(np.rint(qmin + a / scale), qmin, qmax)
        e_up, n_up = up.error((qmax - zp) * scale)
        e_down, n_down = down.error((zp - qmin) * scale)
        err = (total - n_up - n_down) * scale * scale / 12 + e_up + e_down
        return np.where(span > 0, err, np.inf)

    a_top, b_top = -obs.min if obs.min < 0 else 0.0, max(obs.max, 0.0)
    if symmetric:
        amax = max(a_top, b_top)
        cands = np.minimum(np.arange(1, _extent(obs.abs_hist()) + 1) * w, amax)
        t = float(cands[int(np.argmin(cost(cands, cands)))])
        return -t, t
    lows = np.minimum(np.arange(_extent(obs.neg) + 1) * w, a_top)
    highs = np.minimum(np.arange(_extent(obs.pos) + 1) * w, b_top)
    sa = -(-lows.size // _GRID_BUDGET)
    sb = -(-highs.size // _GRID_BUDGET)
    grid = cost(lows[::sa, None], highs[None, ::sb])
    ia, ib = np.unravel_index(int(np.argmin(grid)), grid.shape)
    ia, ib = int(ia) * sa, int(ib) * sb
    for _ in range(8):
        prev = (ia, ib)
        ib = int(np.argmin(cost(lows[ia], highs)))
        ia = int(np.argmin(cost(lows, highs[ib])))
        if (ia, ib) == prev:
            break
    return -float(lows[ia]), float(highs[ib])
