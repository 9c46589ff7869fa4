"""Kernel unit tests run with guarded memory (`targets.tvm.guard`): every kernel argument
ends right before an inaccessible page, so a kernel that reads or writes past one of its
buffers fails its own test (the worker dies with SIGSEGV) instead of corrupting memory that
some later, unrelated run trips over. The executor and tuning tests, which check the Relax
VM and timing paths, run unguarded."""

from __future__ import annotations

import pytest

_UNGUARDED = ("test_executor.py", "test_tune.py")


@pytest.fixture(autouse=True)
def _guarded_memory(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if request.node.path.name not in _UNGUARDED:
        monkeypatch.setenv("LEPTON_TVM_GUARD", "after")
