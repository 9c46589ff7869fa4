"""Counts ONNX backend-suite results per group and prints them at the end of the run."""

from __future__ import annotations

import warnings
from collections import Counter
from functools import cache

import pytest

_GROUPS = ("node", "simple", "real", "pytorch-converted", "pytorch-operator")
_results: dict[str, str] = {}


@cache
def _group_of() -> dict[str, str]:
    from onnx.backend.test.loader import load_model_tests

    table: dict[str, str] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for group in _GROUPS:
            for case in load_model_tests(kind=group):
                table[case.name] = group
    return table


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if "test_onnx_backend.py" not in report.nodeid:
        return
    name = report.nodeid.rsplit("::", 1)[-1].removesuffix("_cpu")
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        _results[name] = report.outcome


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _results:
        return
    table = _group_of()
    totals = Counter(table.values())
    passed = Counter(table[n] for n, o in _results.items() if o == "passed" and n in table)
    ran = Counter(table[n] for n in _results if n in table)
    terminalreporter.section("ONNX backend conformance (reference interpreter)")
    for group in _GROUPS:
        terminalreporter.write_line(
            f"{group:>18}: {passed[group]:5d} passed of {totals[group]:5d} "
            f"({ran[group]} run, {totals[group] - ran[group]} excluded)"
        )
