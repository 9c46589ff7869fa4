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


_tvm_results: dict[str, tuple[str, bool, bool]] = {}
_numba_results: dict[str, tuple[str, bool]] = {}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> object:
    """Attach "ran natively in TVM" to the reports of the TVM conformance cases (in the
    worker process, where the backend recorded it; xdist ships user_properties home)."""
    outcome = yield
    if call.when == "call" and "test_onnx_backend_tvm.py" in item.nodeid:
        from lepton_compiler.backend import LeptonTvmBackend

        report = outcome.get_result()
        report.user_properties.append(("tvm_native", bool(LeptonTvmBackend.last_native)))
        report.user_properties.append(("tvm_vm", bool(LeptonTvmBackend.last_vm)))
        LeptonTvmBackend.last_native = LeptonTvmBackend.last_vm = None
    if call.when == "call" and "test_onnx_backend_numba.py" in item.nodeid:
        from lepton_compiler.backend import LeptonNumbaBackend

        report = outcome.get_result()
        report.user_properties.append(("numba_native", bool(LeptonNumbaBackend.last_native)))
        LeptonNumbaBackend.last_native = None
    return None


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if "test_onnx_backend_numba.py" in report.nodeid:
        name = report.nodeid.rsplit("::", 1)[-1].removesuffix("_cpu")
        if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
            props = dict(report.user_properties)
            _numba_results[name] = (report.outcome, bool(props.get("numba_native", False)))
        return
    if "test_onnx_backend_tvm.py" in report.nodeid:
        name = report.nodeid.rsplit("::", 1)[-1].removesuffix("_cpu")
        if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
            props = dict(report.user_properties)
            _tvm_results[name] = (
                report.outcome,
                bool(props.get("tvm_native", False)),
                bool(props.get("tvm_vm", False)),
            )
        return
    if "test_onnx_backend.py" not in report.nodeid:
        return
    name = report.nodeid.rsplit("::", 1)[-1].removesuffix("_cpu")
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        _results[name] = report.outcome


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _tvm_results:
        ran = {n: r for n, r in _tvm_results.items() if r[0] != "skipped"}
        passed = [n for n, (o, _, _) in ran.items() if o == "passed"]
        native = [n for n in passed if _tvm_results[n][1]]
        vm = [n for n in passed if _tvm_results[n][2]]
        terminalreporter.section("ONNX backend conformance (TVM backend, node tests)")
        terminalreporter.write_line(
            f"{len(passed)} passed of {len(ran)} run ({len(ran) - len(passed)} failed); "
            f"{len(native)} of the passing ran every op in TVM kernels (no reference fallback); "
            f"the Relax VM ran {len(vm)} of them (the rest: the executor's Python step loop)"
        )
    if _numba_results:
        ran = {n: r for n, r in _numba_results.items() if r[0] != "skipped"}
        passed = [n for n, (o, _) in ran.items() if o == "passed"]
        native = [n for n in passed if _numba_results[n][1]]
        terminalreporter.section("ONNX backend conformance (Numba backend, node tests)")
        terminalreporter.write_line(
            f"{len(passed)} passed of {len(ran)} run ({len(ran) - len(passed)} failed); "
            f"{len(native)} of the passing ran every op in Numba kernels (no reference fallback)"
        )
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
