"""collect_ranges: observed ranges equal NumPy's, limits, fused bodies, progress and errors."""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator

import numpy as np
import pytest

from lepton_compiler.errors import InputError, LeptonError
from lepton_compiler.pass_manager import PassContext
from lepton_compiler.passes.fusion.group import GroupFusionPass
from lepton_compiler.passes.quant.calibrate import collect_ranges
from lepton_compiler.passes.quant.observers import MinMaxObserver, PercentileObserver
from lepton_compiler.testing import graph_from_text, op_list

HEADER = '<ir_version: 8, opset_import: ["" : 18]>\n'

# y = Relu(x) * 2 - x, with a second input t added to the product.
TWO_INPUTS = (
    HEADER
    + """
g (float["N",3] x, float["N",3] t) => (float["N",3] y) {
  two = Constant<value = float {2.0}>()
  r = Relu(x)
  m = Mul(r, two)
  p = Add(m, t)
  y = Sub(p, x)
}
"""
)

_W = ", ".join(f"{(i % 7 - 3) / 10}" for i in range(144))
CONV_BLOCK = (
    HEADER
    + """
g (float["N",4,6,6] x) => (float["N",4,6,6] y) {
  w = Constant<value = float[4,4,3,3] {"""
    + _W
    + """}>()
  c = Conv<pads = [1,1,1,1]>(x, w)
  y = Relu(c)
}
"""
)


def samples(n: int, batch: int = 2, seed: int = 0) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [
        {
            "x": rng.standard_normal((batch, 3)).astype(np.float32) * (i + 1),
            "t": rng.uniform(-5, 1, (batch, 3)).astype(np.float32),
        }
        for i in range(n)
    ]


def numpy_values(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The values of TWO_INPUTS computed with NumPy."""
    x, t = feeds["x"], feeds["t"]
    r = np.maximum(x, 0)
    m = r * np.float32(2.0)
    p = m + t
    return {"x": x, "t": t, "r": r, "m": m, "p": p, "y": p - x}


def test_minmax_ranges_equal_numpy() -> None:
    g = graph_from_text(TWO_INPUTS)
    data = samples(4)
    names = ["x", "r", "m", "p", "y"]
    obs = collect_ranges(g, data, names)
    assert list(obs) == names
    for name in names:
        ref = np.concatenate([numpy_values(d)[name].ravel() for d in data])
        assert isinstance(obs[name], MinMaxObserver)
        assert obs[name].min == pytest.approx(float(ref.min()), rel=1e-6)
        assert obs[name].max == pytest.approx(float(ref.max()), rel=1e-6)
        assert obs[name].count == ref.size
    lo, hi = obs["r"].range(False, 0, 255)
    assert lo == 0.0 and hi == pytest.approx(obs["r"].max)


def test_histogram_method_and_constants() -> None:
    g = graph_from_text(TWO_INPUTS)
    const = next(n.inputs[1] for n in g if n.op == "Mul")
    assert const is not None
    obs = collect_ranges(g, samples(3), ["y", const.name], method="percentile", num_bins=128)
    assert isinstance(obs["y"], PercentileObserver) and obs["y"].num_bins == 128
    assert obs[const.name].count == 1  # observed once, not once per sample
    assert obs[const.name].max == 2.0


def test_duplicates_are_observed_once() -> None:
    g = graph_from_text(TWO_INPUTS)
    obs = collect_ranges(g, samples(2), ["x", "x"])
    assert list(obs) == ["x"] and obs["x"].count == 2 * 2 * 3


def test_limit_stops_early() -> None:
    g = graph_from_text(TWO_INPUTS)
    pulled = []

    def stream() -> Iterator[dict[str, np.ndarray]]:
        for i, d in enumerate(samples(10)):
            pulled.append(i)
            yield d

    obs = collect_ranges(g, stream(), ["x"], limit=3)
    assert obs["x"].count == 3 * 2 * 3
    assert len(pulled) <= 4
    first3 = np.concatenate([d["x"].ravel() for d in samples(3)])
    assert obs["x"].max == float(first3.max())


def test_symbolic_batch_may_vary_between_samples() -> None:
    g = graph_from_text(TWO_INPUTS)
    data = [samples(1, batch=1)[0], samples(1, batch=5)[0]]
    assert collect_ranges(g, data, ["y"])["y"].count == 6 * 3


def test_values_inside_fused_bodies() -> None:
    g = graph_from_text(CONV_BLOCK)
    plain = graph_from_text(CONV_BLOCK)
    GroupFusionPass()(g, PassContext(verify_each=True))
    assert op_list(g) == ["lepton.Fused"]
    body = g.nodes[0].attrs["body"]
    conv_out = next(v.name for n in body if n.op == "Conv" for v in n.outputs)
    assert g.find_value(conv_out) is None  # only inside the body
    rng = np.random.default_rng(1)
    data = [{"x": rng.standard_normal((1, 4, 6, 6)).astype(np.float32)} for _ in range(3)]
    fused = collect_ranges(g, data, [conv_out, "y"])
    ref = collect_ranges(plain, data, ["c", "y"])
    assert (fused[conv_out].min, fused[conv_out].max) == (ref["c"].min, ref["c"].max)
    assert fused["y"].min == 0.0 and fused["y"].max == ref["y"].max


def test_progress_without_tqdm(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "tqdm", None)  # import tqdm now raises ImportError
    g = graph_from_text(TWO_INPUTS)
    collect_ranges(g, samples(3), ["y"], progress=True)
    err = capsys.readouterr().err
    assert "calibrating: 1/3 samples" in err and "calibrating: 3/3 samples" in err


def test_progress_with_tqdm(monkeypatch: pytest.MonkeyPatch) -> None:
    bars: list[dict] = []

    class FakeBar:
        def __init__(self, **kw: object) -> None:
            self.state = {"kw": kw, "n": 0, "closed": False}
            bars.append(self.state)

        def update(self, n: int) -> None:
            self.state["n"] += n

        def close(self) -> None:
            self.state["closed"] = True

    monkeypatch.setitem(sys.modules, "tqdm", types.SimpleNamespace(tqdm=FakeBar))
    g = graph_from_text(TWO_INPUTS)
    collect_ranges(g, samples(5), ["y"], progress=True, limit=4)
    (bar,) = bars
    assert bar["kw"]["total"] == 4 and bar["kw"]["file"] is sys.stderr
    assert bar["n"] == 4 and bar["closed"]


def test_no_progress_by_default(capsys) -> None:
    g = graph_from_text(TWO_INPUTS)
    collect_ranges(g, samples(2), ["y"])
    assert capsys.readouterr().err == ""


# -- errors -------------------------------------------------------------------------------------


def test_unknown_value_name() -> None:
    g = graph_from_text(TWO_INPUTS)
    with pytest.raises(LeptonError, match=r"unknown value name.*'nope'"):
        collect_ranges(g, samples(1), ["y", "nope"])


def test_unknown_method() -> None:
    g = graph_from_text(TWO_INPUTS)
    with pytest.raises(LeptonError, match="minmax, percentile, entropy, mse"):
        collect_ranges(g, samples(1), ["y"], method="kl")


def test_empty_data() -> None:
    g = graph_from_text(TWO_INPUTS)
    with pytest.raises(LeptonError, match="calibration data is empty"):
        collect_ranges(g, [], ["y"])
    with pytest.raises(LeptonError, match="calibration data is empty"):
        collect_ranges(g, iter(()), ["y"])


def test_bad_limit() -> None:
    g = graph_from_text(TWO_INPUTS)
    with pytest.raises(LeptonError, match="at least 1"):
        collect_ranges(g, samples(1), ["y"], limit=0)


def _bad(**changes: object) -> list[dict]:
    data: list[dict] = samples(3)
    bad = dict(data[1])
    for k, v in changes.items():
        if v is None:
            bad.pop(k)
        else:
            bad[k] = v
    data[1] = bad
    return data


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_bad(t=None), r"sample 1: missing input\(s\) \['t'\]"),
        (_bad(z=np.zeros((2, 3), np.float32)), r"sample 1: unknown input name\(s\) \['z'\]"),
        (_bad(x=np.zeros((2, 3))), "sample 1: input 'x' has dtype float64, expected float32"),
        (_bad(x=np.zeros((2, 4), np.float32)), "sample 1: input 'x' .* dim 1 must be 3"),
        (_bad(x=np.zeros((3,), np.float32)), "sample 1: input 'x' .* expected rank 2"),
        (_bad(t=np.zeros((5, 3), np.float32)), "sample 1: input 't' .* dim 'N' is 2"),
        (_bad(x=[[1.0, 2.0, 3.0]]), "sample 1: input 'x' is a list"),
        ([{"x": np.zeros((1, 3), np.float32), "t": np.zeros((1, 3), np.float32)}, (1, 2)],
         "sample 1 is a tuple"),
    ],
)  # fmt: skip
def test_bad_samples(data: list, message: str) -> None:
    g = graph_from_text(TWO_INPUTS)
    with pytest.raises(InputError, match=message):
        collect_ranges(g, data, ["y"])
