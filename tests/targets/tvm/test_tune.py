"""Opt-in MetaSchedule tuning (`targets.tvm.tune`).

The tuning run itself takes about a minute even on a small model, so it runs only with
``LEPTON_TEST_TUNING=1`` (never in CI); the argument checks always run."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tvm")

import lepton_compiler
from lepton_compiler.errors import LeptonError


def test_tune_needs_the_tvm_backend(tmp_path: Path) -> None:
    from benchmarks.models import build

    with pytest.raises(LeptonError, match="tvm backend only"):
        lepton_compiler.compile(build("small_cnn", cache_dir=tmp_path), tune=2)


@pytest.mark.slow
@pytest.mark.skipif(
    not os.environ.get("LEPTON_TEST_TUNING"), reason="tuning takes minutes; LEPTON_TEST_TUNING=1"
)
def test_tuning_persists_and_is_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from benchmarks.models import build
    from lepton_compiler.targets.tvm import build as kbuild
    from lepton_compiler.targets.tvm.tune import tuning_dir

    monkeypatch.setenv("LEPTON_CACHE_DIR", str(tmp_path / "cache"))
    kbuild.clear_cache()
    path = build("small_cnn", cache_dir=tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tuned = lepton_compiler.compile(path, backend="tvm", tune=4)
    assert any(n.startswith("tuning: ") for n in tuned.report.notes)
    folder = tuning_dir(tuned.executor.target_dict)
    assert folder is not None
    choices = json.loads((folder / "choices.json").read_text())
    conv_kernels = [k for k in tuned.executor.kernels if k.family == "conv"]
    assert {k.base_digest for k in conv_kernels} <= set(choices)
    assert all(c["used"] in ("tuned", "hand") and c["hand_ms"] > 0 for c in choices.values())
    # A later compile without tune uses the recorded winners.
    kbuild.clear_cache()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again = lepton_compiler.compile(path, backend="tvm")
    for k in again.executor.kernels:
        entry = choices.get(k.base_digest)
        assert (k.digest != k.base_digest) == bool(entry and entry["used"] == "tuned")
    feeds = again.random_inputs(seed=3)
    want = lepton_compiler.compile(path).run(feeds)
    for name, ref in want.items():
        np.testing.assert_allclose(again.run(feeds)[name], ref, rtol=1e-3, atol=1e-4)
