"""Fixtures of the end-to-end model tests: a session-wide model cache and a timing table.

The models are built once per session into pytest's temporary folder (never into the
repository) and imported once per (model, arguments). The reference interpreter's and ONNX
Runtime's wall times collected by the tests are printed in a section at the end of the run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from benchmarks.models import build, cache_key
from lepton_compiler.frontend.onnx import import_model
from lepton_compiler.ir import Graph

#: (model, what, seconds) rows, printed by `pytest_terminal_summary`.
TIMINGS: list[tuple[str, str, float]] = []


class ModelCache:
    """Builds benchmark models into one folder and imports each at most once."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._graphs: dict[str, Graph] = {}

    def path(self, name: str, **kwargs: Any) -> Path:
        """The model file of ``name(**kwargs)``, built on first use."""
        return build(name, cache_dir=self.folder, **kwargs)

    def graph(self, name: str, **kwargs: Any) -> Graph:
        """The imported graph of ``name(**kwargs)`` (shared between tests: do not modify it)."""
        key = cache_key(name, **kwargs)
        if key not in self._graphs:
            self._graphs[key] = import_model(self.path(name, **kwargs))
        return self._graphs[key]


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> ModelCache:
    """The session's model cache, in a fresh temporary folder."""
    return ModelCache(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def timings() -> list[tuple[str, str, float]]:
    """Append ``(model, what, seconds)`` rows to print them at the end of the run."""
    return TIMINGS


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not TIMINGS:
        return
    terminalreporter.section("e2e model timings (wall clock)")
    for model, what, seconds in TIMINGS:
        terminalreporter.write_line(f"{model:>14} {what:<40} {seconds * 1000:10.1f} ms")
