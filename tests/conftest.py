"""Suite-wide hooks: counts ONNX backend-suite results per group and prints them at the end.

Lives at the top of tests/ so the counting also works under pytest-xdist (the controller loads
only the root conftest)."""

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
    outcomes = {o: Counter(table[n] for n, x in _results.items() if x == o and n in table)
                for o in ("passed", "failed", "skipped")}  # fmt: skip
    terminalreporter.section("ONNX backend conformance (reference interpreter)")
    for group in _GROUPS:
        passed, failed = outcomes["passed"][group], outcomes["failed"][group]
        excluded = outcomes["skipped"][group]
        not_run = totals[group] - passed - failed - excluded
        terminalreporter.write_line(
            f"{group:>18}: {passed:5d} passed of {totals[group]:5d}  ({failed} failed, "
            f"{excluded} excluded" + (f", {not_run} not run)" if not_run else ")")
        )
