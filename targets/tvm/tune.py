"""Opt-in MetaSchedule tuning of a model's kernels, kept in a persistent database.

`tune_executor(executor, trials)` takes every distinct kernel of a built `TvmExecutor` whose
family offers an unscheduled workload (`KernelPlan.workload`), times our hand schedule,
runs MetaSchedule on the workload, times the best schedule it found, and records the winner
per kernel. Records live in a folder per target (`tuning_dir`): MetaSchedule's JSON database
(``database_workload.json``, ``database_tuning_record.json``) and ``choices.json`` (kernel
digest -> hand and tuned times, and which one is used). Later compiles for the same target
read ``choices.json`` and build a kernel from the database only where tuning won; with no
database the hand schedules are used. Nothing here runs unless asked (``--tune TRIALS``,
``compile(tune=...)``); tuning never runs in CI.

Builder workers: MetaSchedule's default builder imports every tensor intrinsic in each worker
(about 20 s here) inside its 30 s timeout, so builds time out; ours builds with a plain
`tvm.compile` in one worker with a 120 s timeout.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tvm

__all__ = ["TuneRow", "choice_for", "tune_executor", "tuned_schedule", "tuning_dir"]

CHOICES = "choices.json"
#: Tuned schedules must beat the hand schedule by this factor to be used.
MARGIN = 0.97

_LOCK = threading.Lock()
_CHOICES: dict[str, tuple[float, dict[str, Any]]] = {}  # folder -> (mtime, choices)


@dataclass
class TuneRow:
    """One kernel's tuning result (milliseconds; ``tuned_ms`` None when nothing was found)."""

    digest: str
    family: str
    hand_ms: float
    tuned_ms: float | None
    used: str  # "tuned" or "hand"
    trials: int
    seconds: float


def tuning_dir(target: Mapping[str, Any]) -> Path | None:
    """The tuning folder for `target` (None when the kernel cache is off)."""
    from .build import kernel_cache_dir

    cache = kernel_cache_dir()
    if cache is None:
        return None
    key = hashlib.sha256(json.dumps(dict(target), sort_keys=True, default=str).encode())
    return cache.parent / "tuning" / key.hexdigest()[:16]


def _read_choices(folder: Path) -> dict[str, Any]:
    path = folder / CHOICES
    try:
        mtime = path.stat().st_mtime
    except OSError:
        return {}
    with _LOCK:
        hit = _CHOICES.get(str(folder))
        if hit is not None and hit[0] == mtime:
            return hit[1]
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = {}
    with _LOCK:
        _CHOICES[str(folder)] = (mtime, data)
    return data


def _write_choices(folder: Path, data: Mapping[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".choices-", suffix=".json")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, sort_keys=True)
    os.replace(tmp, folder / CHOICES)


def choice_for(digest: str, target: Mapping[str, Any]) -> str | None:
    """A token naming the tuned schedule to use for the kernel `digest`, or None (hand)."""
    folder = tuning_dir(target)
    if folder is None:
        return None
    entry = _read_choices(folder).get(digest)
    if not entry or entry.get("used") != "tuned":
        return None
    return str(entry.get("token", "tuned"))


def tuned_schedule(workload: Any, target: Mapping[str, Any]) -> Any | None:
    """The best schedule of `workload` in the target's database, or None."""
    folder = tuning_dir(target)
    if folder is None or not (folder / "database_workload.json").exists():
        return None
    from tvm.s_tir import meta_schedule as ms

    db = ms.database.JSONDatabase(work_dir=str(folder))
    mod = tvm.IRModule({"main": workload}) if isinstance(workload, tvm.tirx.PrimFunc) else workload
    return ms.tir_integration.compile_tir(db, mod, tvm.target.Target(dict(target)))


def _plain_build(mod: Any, target: Any, _params: Any) -> Any:
    """MetaSchedule's default build without its tensor-intrinsic import (see the module
    docstring)."""
    from tvm.driver import build as tvm_build
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
    return tvm_build(mod, target=target)


def _time_ms(func: Callable[..., Any], args: list[Any], repeat: int = 15) -> float:
    """Median time of one call, from samples of at least about 2 ms each."""
    func(*args)
    t0 = time.perf_counter()
    func(*args)
    number = max(1, min(1000, int(0.002 / max(time.perf_counter() - t0, 1e-7))))
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(number):
            func(*args)
        times.append((time.perf_counter() - t0) / number)
    return float(np.median(times)) * 1e3


def _random_args(kernel: Any) -> list[Any]:
    rng = np.random.default_rng(0)
    args = []
    for shape, dtype in zip(kernel.param_shapes, kernel.param_dtypes, strict=True):
        if "float" in dtype:
            arr = rng.standard_normal(shape).astype(dtype)
        else:
            arr = rng.integers(0, 4, shape).astype(dtype)
        args.append(tvm.runtime.tensor(arr, kernel.device))
    return [*args, *kernel.empty_outputs()]


def tune_executor(
    executor: Any,
    trials: int,
    progress: Callable[[str], None] | None = None,
    strategy: str = "evolutionary",
) -> list[TuneRow]:
    """Tune every distinct kernel of `executor` with `trials` MetaSchedule trials each.

    Returns one row per kernel tried; ``choices.json`` is updated after each kernel, so an
    interrupted run keeps what it finished.
    """
    from tvm.s_tir import meta_schedule as ms

    from .build import _plans

    tdict = executor.target_dict
    folder = tuning_dir(tdict)
    if folder is None:
        raise RuntimeError("tuning needs the kernel cache (LEPTON_CACHE_DIR is off)")
    folder.mkdir(parents=True, exist_ok=True)
    tgt = tvm.target.Target(dict(tdict))
    rows: list[TuneRow] = []
    kernels = [k for k in executor.kernels if _plans.get(k.base_digest) is not None]
    for i, kernel in enumerate(kernels):
        plan = _plans[kernel.base_digest]
        if plan.workload is None:
            continue
        if progress:
            progress(f"tuning kernel {i + 1}/{len(kernels)} ({kernel.family}, {trials} trials)")
        start = time.perf_counter()
        args = _random_args(kernel)
        hand_ms = _time_ms(tvm.compile(_mod(plan.make()), target=tgt)["main"], args)
        mod = tvm.IRModule({"main": plan.workload()})
        try:
            ms.tune_tir(
                mod,
                tgt,
                str(folder),
                max_trials_global=trials,
                num_trials_per_iter=min(64, max(1, trials)),
                builder=ms.builder.LocalBuilder(
                    max_workers=1, timeout_sec=120, f_build=_plain_build
                ),
                cost_model=_cost_model(),
                strategy=strategy,
                num_tuning_cores=1,
            )
            sch = tuned_schedule(mod["main"], tdict)
        except Exception:  # a failed search keeps the hand schedule
            sch = None
        tuned_ms = None
        if sch is not None:
            tuned_ms = _time_ms(tvm.compile(sch.mod, target=tgt)["main"], args)
        used = "tuned" if tuned_ms is not None and tuned_ms < hand_ms * MARGIN else "hand"
        token = hashlib.sha256(str(sch.trace if sch is not None else "").encode()).hexdigest()
        choices = dict(_read_choices(folder))
        choices[kernel.base_digest] = {
            "family": kernel.family,
            "hand_ms": hand_ms,
            "tuned_ms": tuned_ms,
            "used": used,
            "token": token[:16],
        }
        _write_choices(folder, choices)
        rows.append(
            TuneRow(
                kernel.base_digest,
                kernel.family,
                hand_ms,
                tuned_ms,
                used,
                trials,
                time.perf_counter() - start,
            )
        )
    return rows


def _mod(sch: Any) -> Any:
    return getattr(sch, "mod", sch)


def _cost_model() -> str:
    try:
        import xgboost  # noqa: F401
    except ImportError:
        return "random"
    return "xgb"
