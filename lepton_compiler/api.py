"""`compile`: the one call from an ONNX model to a runnable `CompiledModel`.

The steps are the data flow of the design, each timed in the compile report:

1. import: ONNX → IR (`frontend.onnx.import_model`: checker, opset conversion, onnxsim,
   shape inference);
2. optimize: the pass pipeline for the opt level (`pipeline.run_pipeline`);
3. verify: the IR's invariants (`ir.verify`);
4. compile: the backend builds an executor: ``reference`` (the reference interpreter),
   ``tvm`` (`targets.tvm.executor.TvmExecutor`: one TVM kernel per fused group, glued by a
   Relax module, reference kernels for ops no kernel family takes; needs ``apache-tvm``) or
   ``numba`` (`targets.numba.executor.NumbaExecutor`: one generated Numba function per fused
   group, reference kernels for ops no template takes; needs ``numba`` and ``scipy``). A
   backend whose package is not installed is refused with a clear error rather than silently
   replaced.

Arguments are validated before anything is imported, so a typo in a backend or target name
fails at once. Targets are parsed by `lepton_compiler.targets.target.parse_target` (standard
library only, so importing this module stays cheap).
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import LeptonError
from .pass_manager import (
    DumpIR,
    FixedPoint,
    Instrument,
    Pass,
    PassContext,
    PassResult,
    Sequential,
)
from .targets.target import Target, parse_target

if TYPE_CHECKING:
    from .ir import Graph
    from .quantization import Int8Config
    from .runtime.compiled_model import CompiledModel

#: Backends that can build models today (``tvm`` only where `tvm_available`, ``numba`` only
#: where `numba_available`).
AVAILABLE_BACKENDS = ("reference", "tvm", "numba")
#: Backends that are planned but not built yet.
PLANNED_BACKENDS: tuple[str, ...] = ()
#: The install hint for the TVM backend.
TVM_INSTALL_HINT = "pip install 'lepton-compiler[tvm]'"
#: The install hint for the Numba backend.
NUMBA_INSTALL_HINT = "pip install 'lepton-compiler[numba]'"
#: The install hint for the Numba backend on CUDA targets.
CUDA_INSTALL_HINT = "pip install 'lepton-compiler[cuda]'"


def tvm_available() -> bool:
    """True when ``import tvm`` can work (checked without importing it)."""
    try:
        return importlib.util.find_spec("tvm") is not None
    except (ImportError, ValueError):
        return False


def numba_available() -> bool:
    """True when ``import numba`` (and SciPy, which ``np.dot`` inside Numba kernels calls)
    can work (checked without importing them)."""
    try:
        return (
            importlib.util.find_spec("numba") is not None
            and importlib.util.find_spec("scipy") is not None
        )
    except (ImportError, ValueError):
        return False


def check_backend(backend: str) -> str:
    """Return `backend` if it can build models now.

    Raises:
        LeptonError: the backend is planned but not available yet, needs a package that is
            not installed (``tvm``), or is unknown.
    """
    if backend == "tvm" and not tvm_available():
        raise LeptonError(
            f"backend 'tvm' is not available: TVM is not installed; install it with "
            f"{TVM_INSTALL_HINT} (or use the 'reference' backend)"
        )
    if backend == "numba" and not numba_available():
        raise LeptonError(
            f"backend 'numba' is not available: Numba (or SciPy) is not installed; install "
            f"them with {NUMBA_INSTALL_HINT} (or use the 'reference' backend)"
        )
    if backend in AVAILABLE_BACKENDS:
        return backend
    if backend in PLANNED_BACKENDS:
        raise LeptonError(
            f"backend {backend!r} is not available yet in Lepton Compiler {_version()}; "
            f"use the 'reference' backend for now (available: {', '.join(AVAILABLE_BACKENDS)})"
        )
    planned = f" (planned: {', '.join(PLANNED_BACKENDS)})" if PLANNED_BACKENDS else ""
    raise LeptonError(
        f"unknown backend {backend!r}; available: {', '.join(AVAILABLE_BACKENDS)}{planned}"
    )


def check_opt_level(opt_level: int) -> int:
    """Return `opt_level` if it is 0..3.

    Raises:
        LeptonError: it is not an integer from 0 to 3.
    """
    if isinstance(opt_level, bool) or not isinstance(opt_level, int) or not 0 <= opt_level <= 3:
        raise LeptonError(f"opt_level must be 0, 1, 2 or 3, got {opt_level!r}")
    return opt_level


def compile(
    model: str | os.PathLike[str] | bytes | Any,
    target: str | Target = "host",
    backend: str = "reference",
    opt_level: int = 2,
    *,
    simplify: bool = True,
    input_shapes: Mapping[str, Sequence[int | str | None]] | None = None,
    progress: bool | None = None,
    passes: Sequence[str] | None = None,
    disabled_passes: Iterable[str] = (),
    pass_options: Mapping[str, Any] | None = None,
    dump_ir: str | os.PathLike[str] | None = None,
    trace_rules: bool = False,
    tune: int = 0,
    quantize: Int8Config | None = None,
) -> CompiledModel:
    """Compile an ONNX model into a runnable `CompiledModel`.

    Args:
        model: a path to an ``.onnx`` file, the serialized bytes, an ``onnx.ModelProto``, or
            an IR `Graph` (used as is, and edited by the passes).
        target: where the model will run: a `Target`, or a target text parsed by
            `parse_target`: ``"host"``, ``"x86"``, ``"x86:avx512,vnni"``,
            ``"arm:neon,dotprod"``, ``"cuda:sm_80"``, ``"x86:avx2@cpu=haswell/threads=4"``.
            The model records the text as given (spaces removed, lower case); passes see
            ``Target.to_dict()`` in `PassContext.target`.
        backend: ``"reference"`` (the reference interpreter) or ``"tvm"`` (one TVM kernel
            per fused group with our own x86 schedules, run by the Relax VM; ops no kernel
            family takes run their reference kernels and are listed in
            ``report.fallbacks``; needs apache-tvm) or ``"numba"`` (one generated Numba
            function per fused group, cached on disk; ops no template takes run their
            reference kernels and are listed in ``report.fallbacks``; needs numba and scipy).
        opt_level: 0 (no passes) to 3.
        simplify: run onnxsim during import.
        input_shapes: new shapes for some inputs, e.g. ``{"image": ["batch", 3, 224, 224]}``.
        progress: print one line per step to stderr (the CLI turns this on).
        passes: run exactly these passes (by registered name) instead of the opt level's
            pipeline (``lepton-compile --list-passes`` lists them).
        disabled_passes: pass names never to run.
        pass_options: options passes read from their context (e.g. ``fold_max_bytes``).
        dump_ir: a folder that receives the IR text before the first pass and after every
            pass that changed it.
        trace_rules: record, per pattern rule, why it did not fire (``report.rule_traces``).
        tune: ``tvm`` backend only: run this many MetaSchedule trials per kernel and keep a
            tuned schedule where it beats ours (`targets.tvm.tune`; results persist per
            target and later compiles reuse them). 0 (default): no tuning; the hand
            schedules, or earlier tuning results, are used. Slow: minutes per kernel.
        quantize: an `Int8Config`: int8 post-training quantization of the Conv, Gemm and
            MatMul layers, calibrated on its data (``report.int8`` holds the per-layer
            accuracy report). Needs opt_level >= 2. Pre-quantized models (QDQ or QOperator)
            get integer kernels without it.

    Returns:
        The compiled model; ``model.report`` says what each step did and how long it took.

    Raises:
        LeptonError: a bad argument (backend, target, opt level), or any error of a step:
            `ModelLoadError`, `UnsupportedOpError`, `ShapeInferenceError`, `PassError`,
            `VerificationError`, `LoweringError`.
    """
    backend = check_backend(backend)
    if isinstance(target, Target):
        spec, target_text = target, str(target)
    else:
        spec = parse_target(target)
        target_text = "".join(target.split()).lower()
    opt_level = check_opt_level(opt_level)
    if quantize is not None:
        from .quantization import Int8Config as _Config

        if not isinstance(quantize, _Config):
            raise LeptonError(f"quantize must be an Int8Config, got {type(quantize).__name__}")
        if opt_level < 2:
            raise LeptonError("int8 quantization needs opt_level 2 or 3")
    say = _progress_printer(bool(progress))
    timings: dict[str, float] = {}

    from .frontend.onnx import import_any
    from .ir import Graph, verify
    from .pipeline import run_pipeline
    from .runtime.compiled_model import CompiledModel
    from .runtime.report import CompileReport, fused_groups_summary

    if input_shapes and isinstance(model, Graph):
        raise LeptonError("input_shapes applies to ONNX models, not to an IR Graph")

    say(f"importing {_describe(model)}")
    start = time.perf_counter()
    graph = import_any(model, simplify=simplify, input_shapes=input_shapes)
    timings["import"] = time.perf_counter() - start
    before = graph.op_counts()

    say(f"optimizing (O{opt_level})")
    start = time.perf_counter()
    recorder = _PassRecorder()
    instruments: list[Instrument] = [recorder]
    if dump_ir is not None:
        instruments.append(DumpIR(Path(dump_ir)))
    ctx = PassContext(
        opt_level=opt_level,
        target=spec.to_dict(),
        instruments=instruments,
        disabled=set(disabled_passes),
        options=dict(pass_options or {}),
        trace_rules=trace_rules,
    )
    if backend == "numba":
        # Its integer kernels store one output: a requantizing QuantizeLinear whose float
        # input is read elsewhere too stays a kernel of its own.
        ctx.options.setdefault("fuse_requantize_outputs", False)
    if quantize is not None:
        ctx.options["int8"] = quantize
        ctx.options.setdefault("progress", bool(progress))
    if passes is not None or ctx.disabled:
        from .pass_manager import get_pass

        for name in [*(passes or ()), *ctx.disabled]:
            get_pass(name)  # an unknown name is a PassError that lists the known passes
    run_pipeline(graph, ctx, passes)
    timings["optimize"] = time.perf_counter() - start

    say("verifying")
    start = time.perf_counter()
    verify(graph)
    timings["verify"] = time.perf_counter() - start

    say(f"compiling for backend {backend}, target {spec}")
    start = time.perf_counter()
    report = CompileReport(
        model_name=_model_name(model, graph),
        backend=backend,
        target=target_text,
        opt_level=opt_level,
        passes=recorder.records,
        op_counts_before=before,
        op_counts_after=graph.op_counts(),
        num_nodes=len(graph),
        num_constants=len(graph.initializers),
        weights_bytes=_weights_bytes(graph),
        notes=list(graph.meta.get("import_notes", [])),
        rule_traces=list(ctx.traces),
        kernels_before=sum(before.values()),
        kernels_after=len(graph),
        fused_groups=fused_groups_summary(graph),
    )
    int8 = graph.meta.pop("int8_report", None)
    if int8 is not None:
        report.int8 = int8.format()
        report.int8_layers = [dict(vars(r)) for r in int8.layers]
        report.notes.append(int8.summary())
    executor = None
    if tune and backend != "tvm":
        raise LeptonError("tune applies to the tvm backend only")
    if backend == "tvm":
        say("building TVM kernels")
        executor = build_tvm_executor(graph, spec, report)
        if tune:
            executor = _tune(executor, graph, spec, report, int(tune), say)
    elif backend == "numba":
        say("building Numba kernels")
        executor = build_numba_executor(graph, spec, report)
    compiled = CompiledModel(
        graph, report, backend=backend, target=target_text, opt_level=opt_level, executor=executor
    )
    timings["compile"] = time.perf_counter() - start
    report.timings = timings
    say(f"done in {report.total_seconds:.2f} s")
    return compiled


def build_tvm_executor(
    graph: Graph, spec: Target, report: Any = None, stores: Sequence[Path] = ()
) -> Any:
    """Build the TVM executor for `graph` (kernels built now); record its fallbacks in
    `report` and warn once about them.

    Raises:
        LeptonError: TVM is not installed, or the target is not a CPU target.
    """
    check_backend("tvm")
    if not spec.is_cpu:
        raise LeptonError(f"the tvm backend runs on CPU targets only for now, got {spec}")
    from .targets.tvm.executor import TvmExecutor

    executor = TvmExecutor(graph, spec, stores=stores)
    share = f"{executor.native_flops_share:.1%}"
    if report is not None:
        report.fallbacks = list(executor.fallbacks)
        report.notes.append(
            f"tvm: {executor.num_kernels} TVM kernels; {share} of Conv/MatMul/Gemm FLOPs run "
            "in TVM kernels"
        )
    if executor.fallbacks:
        warnings.warn(
            f"tvm backend: {len(executor.fallbacks)} op kind(s) run with reference kernels: "
            f"{', '.join(executor.fallbacks)} ({share} of Conv/MatMul/Gemm FLOPs in TVM "
            "kernels)",
            stacklevel=3,
        )
    return executor


def build_numba_executor(graph: Graph, spec: Target, report: Any = None) -> Any:
    """Build the Numba executor for `graph` (kernels written and compiled now, or loaded from
    Numba's cache): `targets.numba.executor.NumbaExecutor` on CPU targets,
    `targets.numba.gpu.executor.CudaExecutor` on CUDA targets (a GPU, or Numba's simulator
    with ``NUMBA_ENABLE_CUDASIM=1``); record its fallbacks in `report` and warn once about
    them.

    Raises:
        LeptonError: Numba (or numba-cuda for a CUDA target) is not installed, there is no
            GPU or simulator for a CUDA target, or the target is neither CPU nor CUDA.
    """
    check_backend("numba")
    if spec.is_cuda:
        if importlib.util.find_spec("numba_cuda") is None:
            raise LeptonError(
                f"the numba backend on {spec} needs numba-cuda; install it with {CUDA_INSTALL_HINT}"
            )
        from .targets.numba.gpu.build import build_cuda_executor

        return build_cuda_executor(graph, spec, report)
    if not spec.is_cpu:
        raise LeptonError(f"the numba backend runs on CPU and CUDA targets, got {spec}")
    from .targets.numba.executor import NumbaExecutor

    executor = NumbaExecutor(graph, spec.threads)
    share = f"{executor.native_flops_share:.1%}"
    if report is not None:
        report.fallbacks = list(executor.fallbacks)
        report.notes.append(
            f"numba: {executor.num_kernels} Numba kernels ({len(executor.kernels)} distinct, "
            f"{executor.compile_s:.1f} s to compile or load); {share} of Conv/MatMul/Gemm FLOPs "
            "run in Numba kernels"
        )
    if executor.fallbacks:
        warnings.warn(
            f"numba backend: {len(executor.fallbacks)} op kind(s) run with reference kernels: "
            f"{', '.join(executor.fallbacks)} ({share} of Conv/MatMul/Gemm FLOPs in Numba "
            "kernels)",
            stacklevel=3,
        )
    return executor


def _tune(executor: Any, graph: Graph, spec: Target, report: Any, trials: int, say: Any) -> Any:
    """Tune the executor's kernels, then rebuild it with the winners (see `compile`'s
    ``tune``)."""
    from .targets.tvm.tune import tune_executor

    rows = tune_executor(getattr(executor, "_current", executor), trials, progress=say)
    won = [r for r in rows if r.used == "tuned"]
    hand = sum(r.hand_ms for r in rows)
    best = sum(r.tuned_ms if r.used == "tuned" and r.tuned_ms else r.hand_ms for r in rows)
    report.notes.append(
        f"tuning: {len(rows)} kernels x {trials} trials in "
        f"{sum(r.seconds for r in rows):.0f} s; tuned schedules won on {len(won)} "
        f"(kernel time {hand:.3f} -> {best:.3f} ms)"
    )
    return build_tvm_executor(graph, spec)


class _PassRecorder(Instrument):
    """Records ``(pass, ms, modified)`` for every leaf pass run.

    Composite passes (sequences, fixed points) are left out, as their inner passes are
    recorded; start times are kept on a stack so that nested runs are timed correctly.
    """

    def __init__(self) -> None:
        self.records: list[tuple[str, float, bool]] = []
        self._starts: list[float] = []

    def before(self, p: Pass, graph: Graph, ctx: PassContext) -> None:
        self._starts.append(time.perf_counter())

    def after(self, p: Pass, graph: Graph, ctx: PassContext, result: PassResult) -> None:
        start = self._starts.pop()
        if not isinstance(p, (Sequential, FixedPoint)):
            self.records.append((p.name, (time.perf_counter() - start) * 1e3, result.modified))


def _progress_printer(enabled: bool) -> Callable[[str], None]:
    def say(message: str) -> None:
        if enabled:
            print(f"lepton: {message}...", file=sys.stderr, flush=True)

    return say


def _describe(model: Any) -> str:
    if isinstance(model, (str, os.PathLike)):
        return os.fspath(model)
    if isinstance(model, (bytes, bytearray)):
        return f"a model from {len(model)} bytes"
    return f"a {type(model).__name__}"


def _model_name(model: Any, graph: Graph) -> str:
    if isinstance(model, (str, os.PathLike)):
        return Path(os.fspath(model)).stem
    return str(graph.meta.get("model_name") or graph.name or "model")


def _weights_bytes(graph: Graph) -> int:
    total = 0
    for g in [graph, *graph.subgraphs_recursive()]:
        for c in g.initializers.values():
            total += int(getattr(c.const, "nbytes", 0) or 0)
    return total


def _version() -> str:
    from . import __version__

    return __version__
