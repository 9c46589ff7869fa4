"""Observers: ranges on known distributions, streaming, bounded memory, degenerate tensors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lepton_compiler.errors import LeptonError
from lepton_compiler.passes.quant.observers import (
    METHODS,
    HistogramObserver,
    MinMaxObserver,
    Observer,
    grid_params,
    make_observer,
)

HISTOGRAM = ("percentile", "entropy", "mse")
#: (symmetric, qmin, qmax): int8 symmetric both ways, uint8 asymmetric.
GRIDS = [(True, -127, 127), (True, -128, 127), (False, 0, 255)]


def observe(method: str, x: np.ndarray, batches: int = 1, **kw: float) -> Observer:
    """An observer for `method` that saw `x` in `batches` pieces."""
    obs = make_observer(method, **kw)  # type: ignore[arg-type]
    for part in np.array_split(x, batches):
        obs.update(part)
    return obs


def qdq_mse(x: np.ndarray, lo: float, hi: float, symmetric: bool, qmin: int, qmax: int) -> float:
    """Mean squared error of quantizing `x` on the grid that `[lo, hi]` defines."""
    scale, zp = grid_params(lo, hi, symmetric, qmin, qmax)
    q = np.clip(np.rint(x / scale) + zp, qmin, qmax)
    return float(np.mean(((q - zp) * scale - x) ** 2))


@pytest.fixture(scope="module")
def gauss() -> np.ndarray:
    return np.random.default_rng(0).standard_normal(400_000)


@pytest.fixture(scope="module")
def outliers() -> np.ndarray:
    """Gaussian data with three huge outliers (one in a million: rare enough that clipping
    them costs less squared error than the coarser grid that keeping them needs)."""
    x = np.random.default_rng(5).standard_normal(3_000_000).astype(np.float32)
    x[[10, 20_000, 2_000_000]] = [100.0, -90.0, 120.0]
    return x


def check_valid(lo: float, hi: float, symmetric: bool) -> None:
    assert math.isfinite(lo) and math.isfinite(hi)
    assert lo <= 0.0 <= hi and lo < hi
    if symmetric:
        assert lo == -hi


def test_unknown_method_lists_methods() -> None:
    with pytest.raises(LeptonError, match="minmax, percentile, entropy, mse"):
        make_observer("kl")


@pytest.mark.parametrize("kw", [{"percentile": 30.0}, {"percentile": 100.5}, {"num_bins": 4}])
def test_bad_parameters(kw: dict) -> None:
    with pytest.raises(LeptonError):
        make_observer("percentile", **kw)


def test_bad_grid() -> None:
    obs = observe("minmax", np.ones(3))
    with pytest.raises(LeptonError, match="qmin < qmax"):
        obs.range(True, 5, 5)


def test_make_observer_kinds() -> None:
    assert isinstance(make_observer("minmax"), MinMaxObserver)
    for m in HISTOGRAM:
        obs = make_observer(m, num_bins=64)
        assert isinstance(obs, HistogramObserver) and obs.num_bins == 64


def test_minmax_is_running_min_max() -> None:
    x = np.random.default_rng(1).uniform(-2.0, 5.0, size=(50, 7)).astype(np.float32)
    obs = observe("minmax", x, batches=5)
    assert obs.range(False, 0, 255) == (float(x.min()), float(x.max()))
    assert obs.range(True, -127, 127) == (-float(x.max()), float(x.max()))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("grid", GRIDS)
def test_uniform_keeps_nearly_everything(method: str, grid: tuple) -> None:
    x = np.random.default_rng(2).uniform(-1.0, 1.0, 200_000)
    lo, hi = observe(method, x, batches=4).range(*grid)
    check_valid(lo, hi, grid[0])
    assert -1.0 <= lo <= -0.97 and 0.97 <= hi <= 1.0


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("grid", GRIDS)
def test_gaussian_ranges_are_a_few_sigma(method: str, grid: tuple, gauss: np.ndarray) -> None:
    lo, hi = observe(method, gauss, batches=8).range(*grid)
    check_valid(lo, hi, grid[0])
    amax = np.abs(gauss).max() + 1e-9
    assert 3.0 < hi <= amax and -amax <= lo < -3.0


def test_percentile_matches_numpy(gauss: np.ndarray) -> None:
    obs = observe("percentile", gauss, percentile=99.9)
    width = obs.width  # type: ignore[attr-defined]
    _, hi = obs.range(True, -127, 127)
    assert abs(hi - np.percentile(np.abs(gauss), 99.9)) <= width
    lo, hi = obs.range(False, 0, 255)
    assert abs(lo - np.percentile(gauss, 0.1)) <= width
    assert abs(hi - np.percentile(gauss, 99.9)) <= width


@pytest.mark.parametrize("grid", GRIDS)
def test_outliers_clipped_except_by_minmax(grid: tuple, outliers: np.ndarray) -> None:
    lo, hi = observe("minmax", outliers).range(*grid)
    assert hi == 120.0 and lo == (-120.0 if grid[0] else -90.0)
    for method in HISTOGRAM:
        lo, hi = observe(method, outliers, batches=3).range(*grid)
        check_valid(lo, hi, grid[0])
        assert hi < 80.0 and lo > -80.0, method


@pytest.mark.parametrize("grid", GRIDS)
def test_mse_beats_minmax_on_outliers(grid: tuple, outliers: np.ndarray) -> None:
    chosen = observe("mse", outliers).range(*grid)
    naive = observe("minmax", outliers).range(*grid)
    assert qdq_mse(outliers, *chosen, *grid) < qdq_mse(outliers, *naive, *grid)


def test_mse_matches_a_brute_force_search(gauss: np.ndarray) -> None:
    lo, hi = observe("mse", gauss).range(True, -127, 127)
    ts = np.linspace(2.0, gauss.max(), 200)
    best = min(qdq_mse(gauss, -t, t, True, -127, 127) for t in ts)
    assert qdq_mse(gauss, lo, hi, True, -127, 127) <= best * 1.05


@pytest.mark.parametrize("method", METHODS)
def test_relu_data_asymmetric_lo_is_zero(method: str, gauss: np.ndarray) -> None:
    x = np.maximum(gauss, 0.0)
    lo, hi = observe(method, x, batches=4).range(False, 0, 255)
    assert lo == 0.0 and not math.copysign(1.0, lo) < 0
    assert 1.0 < hi <= x.max()


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("grid", GRIDS)
def test_all_zero_gets_tiny_range(method: str, grid: tuple) -> None:
    obs = observe(method, np.zeros((4, 4), np.float32), batches=2)
    lo, hi = obs.range(*grid)
    check_valid(lo, hi, grid[0])
    assert hi - lo < 1e-3
    scale, _ = grid_params(lo, hi, *grid)
    assert scale > 0


@pytest.mark.parametrize("method", METHODS)
def test_nothing_seen_gets_tiny_range(method: str) -> None:
    obs = make_observer(method)
    obs.update(np.zeros((0, 3), np.float32))
    lo, hi = obs.range(False, 0, 255)
    check_valid(lo, hi, False)
    assert obs.count == 0


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("value", [3.0, -2.5])
def test_constant_tensor(method: str, value: float) -> None:
    obs = observe(method, np.full(1000, value, np.float32), batches=3)
    lo, hi = obs.range(False, 0, 255)
    check_valid(lo, hi, False)
    if value > 0:
        assert lo == 0.0 and hi == pytest.approx(value, rel=2e-3)
    else:
        assert hi == 0.0 and lo == pytest.approx(value, rel=2e-3)
    lo, hi = obs.range(True, -127, 127)
    assert hi == pytest.approx(abs(value), rel=2e-3)


@pytest.mark.parametrize("method", METHODS)
def test_nonfinite_values_are_ignored(method: str, gauss: np.ndarray) -> None:
    x = gauss[:10_000].copy()
    x[[1, 2, 3]] = [np.nan, np.inf, -np.inf]
    obs = observe(method, x, batches=2)
    assert obs.nonfinite == 3 and obs.count == x.size - 3
    for grid in GRIDS:
        check_valid(*obs.range(*grid), grid[0])


@pytest.mark.parametrize("method", METHODS)
def test_integer_input(method: str) -> None:
    obs = observe(method, np.arange(-5, 11, dtype=np.int32))
    lo, hi = obs.range(False, 0, 255)
    assert -5.0 <= lo < 0.0 < hi <= 10.0


@pytest.mark.parametrize("method", HISTOGRAM)
@pytest.mark.parametrize("grid", GRIDS)
def test_streaming_equals_one_shot(method: str, grid: tuple) -> None:
    rng = np.random.default_rng(3)
    # The first batch is narrow, so the histogram has to widen (and merge bins) later.
    parts = [rng.standard_normal(40_000) * s for s in (0.05, 1.0, 1.0, 1.0, 1.0, 1.0)]
    x = np.concatenate(parts)
    streamed = make_observer(method)
    for p in parts:
        streamed.update(p)
    once = observe(method, x)
    assert streamed.count == once.count == x.size
    assert streamed.width > once.width  # type: ignore[attr-defined]
    (lo_s, hi_s), (lo_o, hi_o) = streamed.range(*grid), once.range(*grid)
    if method == "entropy":
        # The divergence is flat near its minimum: the coarser merged histogram may pick
        # another point of the valley, of equal quality.
        assert lo_s == pytest.approx(lo_o, rel=0.1) and hi_s == pytest.approx(hi_o, rel=0.1)
        err_s, err_o = qdq_mse(x, lo_s, hi_s, *grid), qdq_mse(x, lo_o, hi_o, *grid)
        assert err_s == pytest.approx(err_o, rel=0.25)
    else:
        width = streamed.width  # type: ignore[attr-defined]
        assert abs(lo_s - lo_o) <= width and abs(hi_s - hi_o) <= width


def test_histogram_widening_is_exact() -> None:
    obs = make_observer("percentile", num_bins=64)
    assert isinstance(obs, HistogramObserver)
    obs.update(np.array([1.0, -0.5, 0.0]))
    obs.update(np.array([3.5, -7.0]))
    assert obs.pos.sum() + obs.neg.sum() == obs.count == 5
    assert obs.width * obs.num_bins >= 7.0
    assert obs.pos[0] >= 1  # the zero stays in the first bin


def test_histogram_widening_by_a_huge_factor() -> None:
    obs = make_observer("mse", num_bins=64)
    assert isinstance(obs, HistogramObserver)
    obs.update(np.array([1e-30, -1e-30]))
    obs.update(np.array([1.0, 0.5, -0.25]))
    assert obs.pos.sum() == 3 and obs.neg.sum() == 2 and obs.pos[0] == 1 and obs.neg[0] == 1
    lo, hi = obs.range(False, 0, 255)
    assert -0.25 <= lo < 0.0 < hi <= 1.0


@pytest.mark.parametrize("method", METHODS)
def test_memory_does_not_grow_with_batches(method: str) -> None:
    rng = np.random.default_rng(4)
    obs = make_observer(method, num_bins=256)
    obs.update(rng.standard_normal(1000))
    size = obs.state_nbytes()
    for i in range(200):
        obs.update(rng.standard_normal(1000) * (1 + i / 10))
    assert obs.state_nbytes() == size
    if isinstance(obs, HistogramObserver):
        assert obs.pos.shape == obs.neg.shape == (256,)


def test_grid_params_follow_the_scheme() -> None:
    assert grid_params(-2.54, 2.54, True, -127, 127) == pytest.approx((0.02, 0))
    assert grid_params(-1.0, 1.0, True, 0, 255)[1] == 128
    scale, zp = grid_params(-1.0, 3.0, False, 0, 255)
    assert scale == pytest.approx(4.0 / 255) and zp == round(255 / 4)
    assert grid_params(0.0, 2.0, False, 0, 255)[1] == 0
