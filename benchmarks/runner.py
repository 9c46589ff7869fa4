"""The benchmark runner: every configuration on every model, interleaved, in one process.

For each model the runner

1. builds the model (`benchmarks.models.build`), counts its FLOPs (`benchmarks.flops`) and
   makes one set of seeded random inputs that every configuration runs on;
2. prepares each configuration in turn (`benchmarks.configs`): compiles it, runs the warm-up,
   and keeps the first run's outputs to compare with the baseline's (the int8 QDQ model the
   ONNX Runtime and OpenVINO int8 peers share is made once per model, before that);
3. times the prepared configurations interleaved: for each round, one run of each
   configuration, the order rotated by one every round (A B C, B C A, C A B...), so slow
   drifts of the machine (other load, thermal state) hit every configuration alike; before
   each timed run a short pause (``settle_s``) and an untimed run (``lead_in``) of the same
   configuration let the previous runtime's spinning threads stop;
4. reports per configuration the median and p90 latency and the **median of paired ratios**
   ``t(config, round r) / t(baseline, round r)``. Ratios come only from runs interleaved in
   this one process, never from separate runs: absolute times drift by up to 25 % between
   runs on shared machines, ratios far less.

Robustness: a configuration whose software is missing or not built yet is recorded as
``unavailable`` with the reason, one that raises as ``failed`` with the error, and the run
goes on. Time limits (``timeout_s`` per configuration) are enforced in this process, with no
worker thread or subprocess (a compiled model cannot move between processes, and a thread
cannot be stopped): a ``SIGALRM`` timer raises `DeadlineExceeded` in the main thread, which
interrupts Python code at the next bytecode. A long call into C (one ONNX Runtime or TVM run,
one LLVM compile) finishes first, so a limit can be overshot by the length of one such call;
off the main thread, or where SIGALRM does not exist, the limits are only checked between
runs. The limit applies twice per configuration: once to compile + warm-up (``timeout``), once
to its total timed runs (``partial`` if it ran out after at least one round).

Memory: ``peak_mib`` is the highest resident set size (RSS) sampled every 5 ms during the
configuration's compile and warm-up, minus the RSS just before it; ``retained_mib`` is the
RSS after minus before (what the prepared configuration keeps: weights, code, arenas). Both
are approximations in one process: freed heap memory is handed back to the OS first
(glibc ``malloc_trim``), but memory an earlier configuration freed may still be reused
without showing up. RSS comes from psutil when installed, else ``/proc/self/statm``.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import math
import os
import platform
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from . import configs as configs_mod
from .configs import BASELINE, BenchConfig
from .flops import count_flops
from .models import build
from .peak import measure_peak

#: The thread-related environment variables the runner records (``__main__`` sets them).
THREAD_ENV_VARS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "TVM_NUM_THREADS",
    "NUMBA_NUM_THREADS",
    "NUMBA_THREADING_LAYER",
    "OPENBLAS_THREAD_TIMEOUT",
)

#: Calibration samples for the int8 QDQ model: enough for min/max on random data, and cheap.
CALIBRATION_SAMPLES = 4
#: Names the cached int8 file: change it whenever `int8_model`'s recipe changes.
INT8_TAG = "int8-qdq-u8s8-pc"

Outputs = list[np.ndarray]
RunFn = Callable[[], Outputs]


# -- settings and results ---------------------------------------------------------------------
@dataclass
class BenchSettings:
    """How to run the matrix.

    Attributes:
        threads: threads every configuration may use (ORT intra-op; the environment variables
            for the rest are set by ``__main__`` before NumPy is imported).
        warmup: untimed runs per configuration after compiling it (at least one: its
            outputs are compared with the baseline's).
        warmup_max_s: no further warm-up run starts after this many seconds of warm-up (a
            model that takes seconds per run is warm after one).
        rounds: interleaved timed rounds (one run of each configuration per round).
        lead_in: untimed runs of a configuration right before each of its timed runs, so
            every timed run starts in that runtime's steady state: the previous
            configuration's thread pool (ONNX Runtime's and TVM's workers keep spinning
            after a run) has gone quiet and this one's workers are awake. Without it the
            runtime timed after another one pays for it (measured here: ONNX Runtime's
            ResNet-50 doubled right after a TVM run).
        settle_s: a pause before each configuration's lead-in, so the previous
            configuration's spinning threads have stopped: ONNX Runtime's workers spin for
            about 30 ms after a run, longer than one lead-in of a fast model (measured here:
            its int8 ResNet-50 ran 22 ms right after its own fp32 session's run even after a
            lead-in, 12.5 ms after a 10 ms pause and a lead-in, as alone).
        timeout_s: limit per configuration for compile + warm-up, and again for its timed runs
            (None: no limit).
        progress: show a progress bar on stderr.
        cache_dir: where models (and their int8 versions) are built; the models' default
            cache when None.
        model_kwargs: per model name, keyword arguments for its builder (``{"bert": {"seq":
            64}}``).
        peak_gflops: the machine's fp32 peak, if known; measured (NumPy sgemm) when None.
        peak_n: matrix size for that measurement.
        quick: recorded in the results (the CLI's ``--quick`` sets fewer warm-ups and rounds).
        thread_env_set_early: whether the thread variables were set before NumPy was imported.
    """

    threads: int = 2
    warmup: int = 5
    warmup_max_s: float = 10.0
    rounds: int = 30
    lead_in: int = 1
    settle_s: float = 0.05
    timeout_s: float | None = 600.0
    progress: bool = True
    cache_dir: str | os.PathLike[str] | None = None
    model_kwargs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    peak_gflops: float | None = None
    peak_n: int = 4096
    quick: bool = False
    thread_env_set_early: bool | None = None


@dataclass
class ConfigResult:
    """One cell of the matrix: one configuration on one model."""

    model: str
    config: str
    kind: str
    options: dict[str, Any]
    status: str = "pending"  # ok | partial | timeout | failed | unavailable
    message: str = ""
    compile_s: float | None = None
    warmup_runs: int = 0
    times_ms: list[float | None] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)
    median_ms: float | None = None
    p90_ms: float | None = None
    min_ms: float | None = None
    ratio_vs_baseline: float | None = None
    gflops: float | None = None
    pct_of_peak: float | None = None
    peak_mib: float | None = None
    retained_mib: float | None = None
    max_abs_diff: float | None = None
    max_rel_diff: float | None = None
    cosine: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data."""
        return dict(self.__dict__)


class Unavailable(Exception):
    """The configuration cannot run here (software missing or not built yet)."""


class DeadlineExceeded(BaseException):
    """A time limit ran out. A BaseException so that libraries' ``except Exception`` let it
    through."""


# -- time limits --------------------------------------------------------------------------------
@contextlib.contextmanager
def deadline(seconds: float | None) -> Iterator[None]:
    """Raise `DeadlineExceeded` in the body once `seconds` have passed (see module docstring).

    Does nothing when `seconds` is None, off the main thread, or without SIGALRM.
    """
    usable = (
        seconds is not None
        and hasattr(signal, "setitimer")
        and threading.current_thread() is threading.main_thread()
    )
    if not usable:
        yield
        return
    assert seconds is not None
    if seconds <= 0:
        raise DeadlineExceeded

    def on_alarm(signum: int, frame: Any) -> None:
        raise DeadlineExceeded

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# -- memory -------------------------------------------------------------------------------------
def rss_bytes() -> int | None:
    """The current resident set size of this process, or None where it cannot be read."""
    try:
        import psutil  # type: ignore[import-untyped]

        return int(psutil.Process().memory_info().rss)
    except ImportError:
        pass
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _malloc_trim() -> None:
    """Hand freed heap memory back to the OS (glibc only), so that RSS deltas measure this
    configuration rather than what earlier ones left in the allocator."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class MemorySampler:
    """Sample RSS every `interval` seconds on a daemon thread while active."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.before: int | None = None
        self.after: int | None = None
        self.peak: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> MemorySampler:
        gc.collect()
        _malloc_trim()
        self.before = self.peak = rss_bytes()
        if self.before is not None:
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.after = rss_bytes()
        self._update(self.after)

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self._update(rss_bytes())

    def _update(self, value: int | None) -> None:
        if value is not None and (self.peak is None or value > self.peak):
            self.peak = value

    @property
    def peak_mib(self) -> float | None:
        """Peak RSS above the RSS before, in MiB."""
        if self.before is None or self.peak is None:
            return None
        return (self.peak - self.before) / 2**20

    @property
    def retained_mib(self) -> float | None:
        """RSS after minus RSS before, in MiB."""
        if self.before is None or self.after is None:
            return None
        return (self.after - self.before) / 2**20


# -- inputs -------------------------------------------------------------------------------------
_ONNX_TO_NUMPY = {
    onnx.TensorProto.FLOAT: np.float32,
    onnx.TensorProto.DOUBLE: np.float64,
    onnx.TensorProto.FLOAT16: np.float16,
    onnx.TensorProto.INT64: np.int64,
    onnx.TensorProto.INT32: np.int32,
    onnx.TensorProto.INT8: np.int8,
    onnx.TensorProto.UINT8: np.uint8,
    onnx.TensorProto.BOOL: np.bool_,
}


def input_specs(model: onnx.ModelProto) -> list[tuple[str, tuple[int, ...], type]]:
    """``(name, shape, numpy dtype)`` per graph input that is not an initializer.

    Symbolic or unknown dims become 1.
    """
    weights = {i.name for i in model.graph.initializer}
    specs = []
    for value in model.graph.input:
        if value.name in weights:
            continue
        tensor = value.type.tensor_type
        dtype = _ONNX_TO_NUMPY.get(tensor.elem_type)
        if dtype is None:
            raise ValueError(f"input {value.name!r}: unsupported element type {tensor.elem_type}")
        shape = tuple(d.dim_value if d.HasField("dim_value") else 1 for d in tensor.shape.dim)
        specs.append((value.name, shape, dtype))
    return specs


def make_inputs(
    specs: Sequence[tuple[str, tuple[int, ...], type]], seed: int = 0
) -> dict[str, np.ndarray]:
    """Seeded random inputs: floats standard normal, integers 0 or 1 (valid token ids and
    mask values for any vocabulary), booleans random."""
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    for name, shape, dtype in specs:
        if dtype is np.bool_:
            feeds[name] = rng.random(shape) < 0.5
        elif np.issubdtype(dtype, np.integer):
            feeds[name] = rng.integers(0, 2, shape).astype(dtype)
        else:
            feeds[name] = rng.standard_normal(shape).astype(dtype)
    return feeds


# -- preparing each kind ------------------------------------------------------------------------
@dataclass
class Prepared:
    """A configuration ready to time: `run` does one inference on the benchmark inputs."""

    run: RunFn
    compile_s: float
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class ModelContext:
    """What the preparers need to know about the model being benchmarked."""

    name: str
    path: Path
    specs: list[tuple[str, tuple[int, ...], type]]
    feeds: dict[str, np.ndarray]
    output_names: list[str]
    threads: int
    int8: tuple[Path, float | None] | None = None  # (path, seconds quantizing) once made

    def int8_path(self) -> Path:
        """The int8 QDQ model (see `int8_model`), made on first use."""
        if self.int8 is None:
            self.int8 = int8_model(self)
        return self.int8[0]


def prepare(config: BenchConfig, ctx: ModelContext) -> Prepared:
    """Make `config` runnable on `ctx`'s model.

    Raises:
        Unavailable: the software is missing or does not support the configuration yet.
        Exception: anything the compile raised (recorded as ``failed``).
    """
    preparers: dict[str, Callable[[BenchConfig, ModelContext], Prepared]] = {
        "lepton": _prepare_lepton,
        "onnxruntime": _prepare_onnxruntime,
        "tvm-stock": _prepare_tvm_stock,
        "openvino": _prepare_openvino,
    }
    return preparers[config.kind](config, ctx)


def _prepare_lepton(config: BenchConfig, ctx: ModelContext) -> Prepared:
    import lepton_compiler
    from lepton_compiler.api import check_backend

    options = dict(config.options)
    backend = str(options.pop("backend", "reference"))
    precision = str(options.pop("precision", "fp32"))
    try:
        check_backend(backend)
    except lepton_compiler.LeptonError as e:
        raise Unavailable(str(e)) from e
    if precision == "int8":
        # The same calibration as ONNX Runtime's int8 model (`int8_model`): MinMax on
        # CALIBRATION_SAMPLES seeded random inputs; a speed statement, not an accuracy one.
        samples = [make_inputs(ctx.specs, seed=s) for s in range(1, CALIBRATION_SAMPLES + 1)]
        options["quantize"] = lepton_compiler.Int8Config(
            calibration=samples, method="minmax", eval_samples=1
        )
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = lepton_compiler.compile(str(ctx.path), backend=backend, progress=False, **options)
    compile_s = time.perf_counter() - start
    report = model.report
    extra: dict[str, Any] = {
        "compile_timings": dict(report.timings),
        "kernels_before": report.kernels_before,
        "kernels_after": report.kernels_after,
        "fused_groups": len(report.fused_groups),
        "fallbacks": list(report.fallbacks),
    }
    messages = list(dict.fromkeys(f"{w.category.__name__}: {w.message}" for w in caught))
    if messages:
        extra["warnings"] = messages[:5]
    feeds = model.check_inputs(ctx.feeds)  # converted once, as the other runtimes' inputs are
    names = ctx.output_names

    def run() -> Outputs:
        out = model.run(feeds)
        return [out[n] for n in names] if all(n in out for n in names) else list(out.values())

    return Prepared(run, compile_s, extra)


def _settle(seconds: float) -> None:
    """Pause before a configuration's lead-in (`BenchSettings.settle_s`)."""
    if seconds > 0:
        time.sleep(seconds)


def _ort_session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _prepare_onnxruntime(config: BenchConfig, ctx: ModelContext) -> Prepared:
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise Unavailable(f"onnxruntime not installed ({e})") from e
    extra: dict[str, Any] = {"onnxruntime": ort.__version__}
    path = ctx.path
    if config.precision == "int8":
        path = ctx.int8_path()
        extra["int8_model"] = str(path)
    start = time.perf_counter()
    session = _ort_session(path, ctx.threads)
    compile_s = time.perf_counter() - start
    extra["providers"] = session.get_providers()
    feeds = dict(ctx.feeds)

    def run() -> Outputs:
        return list(session.run(None, feeds))

    return Prepared(run, compile_s, extra)


def int8_model(ctx: ModelContext) -> tuple[Path, float | None]:
    """The int8 QDQ version of `ctx`'s model, made once and cached beside the fp32 file.

    ONNX Runtime's recipe for x86: ``quant_pre_process`` (ONNX shape inference and ORT's
    basic graph optimizations, which fold BatchNormalization into Conv), then
    ``quantize_static`` in QDQ format with per-channel int8 weights, uint8 activations
    ("U8S8", the fast path of ORT's x86 int8 kernels; signed activations measured slower than
    fp32 here) and MinMax calibration on `CALIBRATION_SAMPLES` seeded random inputs. With
    random inputs the scales are not an accuracy statement, only a speed one.

    Returns:
        The path, and the seconds quantizing took (None when the cached file was reused).

    Raises:
        Unavailable: onnxruntime's quantization tools cannot be imported.
    """
    try:
        from onnxruntime.quantization import (
            CalibrationDataReader,
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_static,
        )
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError as e:
        raise Unavailable(f"onnxruntime.quantization not importable ({e})") from e
    target = ctx.path.with_name(f"{ctx.path.stem}.{INT8_TAG}.onnx")
    if target.exists():
        return target, None

    class RandomReader(CalibrationDataReader):
        def __init__(self) -> None:
            self._seeds = iter(range(1, CALIBRATION_SAMPLES + 1))

        def get_next(self) -> dict[str, np.ndarray] | None:
            seed = next(self._seeds, None)
            return None if seed is None else make_inputs(ctx.specs, seed=seed)

    start = time.perf_counter()
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)  # "consider pre-processing" and similar advice
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        pre = tmp_dir / "preprocessed.onnx"
        # Static shapes everywhere here, so ONNX's own shape inference is enough (the
        # symbolic one needs sympy).
        quant_pre_process(str(ctx.path), str(pre), skip_symbolic_shape=True)
        tmp = tmp_dir / target.name
        quantize_static(
            str(pre),
            str(tmp),
            RandomReader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
        os.replace(tmp, target)
    finally:
        logger.setLevel(level)
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return target, time.perf_counter() - start


def _prepare_tvm_stock(config: BenchConfig, ctx: ModelContext) -> Prepared:
    if config.precision != "fp32":
        raise Unavailable("the stock TVM path is benchmarked in fp32 only")
    try:
        import tvm
        from tvm import relax
        from tvm.relax.frontend.onnx import from_onnx
    except ModuleNotFoundError as e:
        raise Unavailable(f"apache-tvm not installed ({e})") from e
    except ImportError as e:
        raise Unavailable(f"import tvm failed: {e}") from e
    from tvm.target import codegen

    start = time.perf_counter()
    model = onnx.load(str(ctx.path))
    shapes = {name: list(shape) for name, shape, _ in ctx.specs}
    dtypes = {name: np.dtype(dtype).name for name, _, dtype in ctx.specs}
    mod = from_onnx(model, shape_dict=shapes, dtype_dict=dtypes, keep_params_in_input=False)
    del model
    cpu = codegen.llvm_get_system_cpu()
    target = tvm.target.Target({"kind": "llvm", "mcpu": cpu, "num-cores": ctx.threads})
    executable = tvm.compile(mod, target=target, relax_pipeline=relax.get_default_pipeline(target))
    device = tvm.cpu()
    vm = relax.VirtualMachine(executable, device)
    compile_s = time.perf_counter() - start
    args = [tvm.runtime.tensor(ctx.feeds[name], device) for name, _, _ in ctx.specs]
    main = vm["main"]

    def run() -> Outputs:
        out = main(*args)
        items = out if isinstance(out, tvm.ir.Array | list | tuple) else [out]
        return [item.numpy() for item in items]

    extra = {"tvm": tvm.__version__, "target": {"kind": "llvm", "mcpu": cpu}, "tuned": False}
    return Prepared(run, compile_s, extra)


def _prepare_openvino(config: BenchConfig, ctx: ModelContext) -> Prepared:
    try:
        import openvino as ov
    except ImportError as e:
        raise Unavailable(f"openvino not installed ({e})") from e
    path = ctx.path
    extra: dict[str, Any] = {"openvino": ov.get_version()}
    if config.precision == "int8":  # the same QDQ model as ONNX Runtime int8
        path = ctx.int8_path()
        extra["int8_model"] = str(path)
    start = time.perf_counter()
    core = ov.Core()
    properties = {
        "INFERENCE_PRECISION_HINT": "f32",  # its default on AMX machines is bf16
        "INFERENCE_NUM_THREADS": ctx.threads,
        "PERFORMANCE_HINT": "LATENCY",
        "NUM_STREAMS": 1,
    }
    compiled = core.compile_model(core.read_model(str(path)), "CPU", properties)
    request = compiled.create_infer_request()
    compile_s = time.perf_counter() - start
    extra["properties"] = {k: str(v) for k, v in properties.items()}
    feeds = dict(ctx.feeds)
    outputs = list(compiled.outputs)

    def run() -> Outputs:
        result = request.infer(feeds)
        return [np.array(result[o]) for o in outputs]

    return Prepared(run, compile_s, extra)


# -- progress -----------------------------------------------------------------------------------
class Progress:
    """A progress bar over the matrix: tqdm when importable, else one stderr line per step."""

    def __init__(self, total: int, enabled: bool) -> None:
        self._bar: Any = None
        self._done = 0
        self._total = total
        self._enabled = enabled
        if enabled:
            try:
                from tqdm import tqdm

                self._bar = tqdm(total=total, unit="step", file=sys.stderr, dynamic_ncols=True)
            except ImportError:
                self._bar = None

    def step(self, label: str, n: int = 1) -> None:
        """Count `n` steps done, `label` describing the current one."""
        self._done += n
        if not self._enabled:
            return
        if self._bar is not None:
            self._bar.set_description_str(label, refresh=False)
            self._bar.update(n)
        else:
            print(f"[{self._done}/{self._total}] {label}", file=sys.stderr, flush=True)

    def note(self, text: str) -> None:
        """Print a line without breaking the bar."""
        if not self._enabled:
            return
        if self._bar is not None:
            self._bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        """Finish the bar."""
        if self._bar is not None:
            self._bar.close()


# -- the matrix ---------------------------------------------------------------------------------
def run_matrix(
    models: Sequence[str],
    configs: Sequence[BenchConfig | str] | None = None,
    settings: BenchSettings | None = None,
    *,
    command: str | None = None,
    on_model_done: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Benchmark every configuration on every model.

    Args:
        models: model names (keys of `benchmarks.models.MODELS`).
        configs: configurations (records, or names from `benchmarks.configs.CONFIGS`); all
            when None. The baseline (ONNX Runtime fp32) is always added, first.
        settings: how to run; defaults when None.
        command: the command line, recorded in the results.
        on_model_done: called with the results so far after each model (to save them).

    Returns:
        The results document (see `benchmarks.report` for its use): ``machine``, ``threads``,
        ``peak``, ``settings``, ``models`` and one entry per (model, configuration) in
        ``results``.
    """
    settings = settings or BenchSettings()
    chosen = configs_mod.select(configs)
    doc: dict[str, Any] = {
        "schema": 1,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command,
        "machine": machine_info(),
        "threads": thread_info(settings),
        "settings": {
            "quick": settings.quick,
            "warmup": settings.warmup,
            "warmup_max_s": settings.warmup_max_s,
            "rounds": settings.rounds,
            "lead_in": settings.lead_in,
            "settle_s": settings.settle_s,
            "timeout_s": settings.timeout_s,
            "baseline": BASELINE,
            "interleaving": "one timed run per config per round, order rotated by one each "
            f"round, each timed run preceded by a {settings.settle_s * 1e3:.0f} ms pause and "
            f"{settings.lead_in} untimed run(s) of the same config",
            "ratio": "median over rounds of t(config) / t(baseline) in the same round",
            "memory": "peak_mib: max RSS sampled every 5 ms during compile + warm-up minus "
            "RSS before (after gc and malloc_trim); retained_mib: RSS after minus before",
            "configs": [c.to_dict() for c in chosen],
        },
        "peak": None,
        "models": [],
        "results": [],
    }
    unknown = [m for m in models if m not in known_models()]
    if unknown:  # fail on a bad name before minutes of work
        raise KeyError(
            f"unknown model(s) {', '.join(unknown)}; known models: {', '.join(known_models())}"
        )
    if settings.peak_gflops is not None:
        doc["peak"] = {"gflops": settings.peak_gflops, "method": "given (--peak)"}
    else:
        doc["peak"] = measure_peak(settings.peak_n)
    progress = Progress(len(models) * (len(chosen) + settings.rounds), settings.progress)
    try:
        for model_name in models:
            try:
                model_doc, results = _run_model(model_name, chosen, settings, doc["peak"], progress)
            except Exception as e:  # the model itself could not be built: record, go on
                why = f"model: {type(e).__name__}: {_one_line(str(e))}"
                progress.note(f"{model_name}: {why}")
                progress.step(f"{model_name}: failed", len(chosen) + settings.rounds)
                model_doc = {"name": model_name, "error": why}
                results = [
                    ConfigResult(model_name, c.name, c.kind, dict(c.options), "failed", why)
                    for c in chosen
                ]
            doc["models"].append(model_doc)
            doc["results"].extend(r.to_dict() for r in results)
            if on_model_done is not None:
                on_model_done(doc)
    finally:
        progress.close()
    doc["machine"]["loadavg_end"] = _loadavg()
    return doc


def known_models() -> list[str]:
    """The names `benchmarks.models.build` knows."""
    from .models import MODELS

    return list(MODELS)


def _run_model(
    name: str,
    chosen: Sequence[BenchConfig],
    settings: BenchSettings,
    peak: Mapping[str, Any],
    progress: Progress,
) -> tuple[dict[str, Any], list[ConfigResult]]:
    progress.note(f"{name}: building the model and counting FLOPs")
    kwargs = dict(settings.model_kwargs.get(name, {}))
    path = build(name, cache_dir=settings.cache_dir, **kwargs)
    model = onnx.load(str(path), load_external_data=False)
    specs = input_specs(model)
    output_names = [o.name for o in model.graph.output]
    flops = count_flops(model)
    del model
    ctx = ModelContext(name, path, specs, make_inputs(specs), output_names, settings.threads)
    model_doc = {
        "name": name,
        "path": str(path),
        "builder_kwargs": kwargs,
        "flops": flops.to_dict(),
        "inputs": {n: {"shape": list(s), "dtype": np.dtype(d).name} for n, s, d in specs},
        "loadavg_start": _loadavg(),  # other load on the machine skews everything
    }

    results: list[ConfigResult] = []
    runners: dict[str, RunFn] = {}
    reference: Outputs | None = None
    for config in chosen:
        progress.step(f"{name}: prepare {config.name}")
        result = ConfigResult(name, config.name, config.kind, dict(config.options))
        results.append(result)
        run = _prepare_one(config, ctx, settings, result)
        if run is None:
            progress.note(f"{name}: {config.name}: {result.status}: {result.message}")
            continue
        runners[config.name] = run
        first = result.extra.pop("_first_outputs")
        if config.name == BASELINE:
            reference = first
        elif reference is not None:
            result.max_abs_diff, result.max_rel_diff = _compare(first, reference)
            result.cosine = _cosine(first, reference)

    by_name = {r.config: r for r in results}
    spent = dict.fromkeys(runners, 0.0)
    order = list(runners)
    gc_was_enabled = gc.isenabled()
    try:
        for r in range(settings.rounds):
            progress.step(f"{name}: round {r + 1}/{settings.rounds}")
            gc.collect()
            gc.disable()  # a collection inside a timed run would land on one config only
            shift = r % len(order) if order else 0
            for config_name in order[shift:] + order[:shift]:
                run = runners.get(config_name)
                result = by_name[config_name]
                result.times_ms.extend([None] * (r - len(result.times_ms)))
                if run is None:
                    continue
                _settle(settings.settle_s)
                for _ in range(settings.lead_in):
                    with contextlib.suppress(Exception):  # a failing run fails when timed
                        run()
                elapsed = _timed_run(run, result, settings, spent[config_name], r)
                if elapsed is None:
                    del runners[config_name]
                    continue
                spent[config_name] += elapsed
                result.times_ms.append(elapsed * 1e3)
            gc.enable()
    finally:
        if gc_was_enabled:
            gc.enable()
        else:
            gc.disable()

    model_doc["loadavg_end"] = _loadavg()
    if ctx.int8 is not None:
        model_doc["int8_model"] = {"path": str(ctx.int8[0]), "quantize_s": ctx.int8[1]}
    baseline = by_name.get(BASELINE)
    for result in results:
        if result.status not in ("ok", "partial") and not result.times_ms:
            continue
        result.times_ms.extend([None] * (settings.rounds - len(result.times_ms)))
        _summarize(result, baseline, flops.total, peak)
    return model_doc, results


def _prepare_one(
    config: BenchConfig, ctx: ModelContext, settings: BenchSettings, result: ConfigResult
) -> RunFn | None:
    """Compile and warm up `config`; fill `result`; return its run function, or None."""
    phase = "int8 model"
    try:
        with deadline(settings.timeout_s):
            if config.precision == "int8" and config.kind in ("onnxruntime", "openvino"):
                ctx.int8_path()  # made once per model, outside the memory and compile figures
            phase = "compile"
            with MemorySampler() as memory:
                prepared = prepare(config, ctx)
                result.compile_s = prepared.compile_s
                result.extra.update(prepared.extra)
                phase = "warm-up"
                start = time.perf_counter()
                first = prepared.run()  # a warm-up run whose outputs meet the baseline's
                result.warmup_runs = 1
                while (
                    result.warmup_runs < settings.warmup
                    and time.perf_counter() - start < settings.warmup_max_s
                ):
                    prepared.run()
                    result.warmup_runs += 1
        result.peak_mib = memory.peak_mib
        result.retained_mib = memory.retained_mib
    except Unavailable as e:
        result.status, result.message = "unavailable", str(e)
        return None
    except DeadlineExceeded:
        result.status = "timeout"
        result.message = f"{phase} exceeded the {settings.timeout_s:g} s limit"
        return None
    except Exception as e:
        result.status = "failed"
        result.message = f"{phase}: {type(e).__name__}: {_one_line(str(e))}"
        return None
    result.status = "ok"
    result.extra["_first_outputs"] = first
    return prepared.run


def _timed_run(
    run: RunFn, result: ConfigResult, settings: BenchSettings, spent: float, round_index: int
) -> float | None:
    """One timed run; its seconds, or None when the configuration drops out (status set)."""
    left = None if settings.timeout_s is None else settings.timeout_s - spent
    try:
        with deadline(left):
            start = time.perf_counter()
            run()
            elapsed = time.perf_counter() - start
    except DeadlineExceeded:
        done = round_index
        result.status = "partial" if done else "timeout"
        result.message = (
            f"timed runs exceeded the {settings.timeout_s:g} s limit after {done} of "
            f"{settings.rounds} rounds"
        )
        return None
    except Exception as e:
        result.status = "failed"
        result.message = f"round {round_index + 1}: {type(e).__name__}: {_one_line(str(e))}"
        return None
    if left is not None and elapsed > left:  # limits only checked between runs off-main
        result.times_ms.append(elapsed * 1e3)
        result.status = "partial"
        result.message = f"timed runs exceeded the {settings.timeout_s:g} s limit"
        return None
    return elapsed


def _summarize(
    result: ConfigResult, baseline: ConfigResult | None, flops: int, peak: Mapping[str, Any]
) -> None:
    times = [t for t in result.times_ms if t is not None]
    if not times:
        return
    result.median_ms = statistics.median(times)
    result.p90_ms = float(np.percentile(times, 90))
    result.min_ms = min(times)
    if baseline is not None and baseline.times_ms:
        result.ratios = [
            t / b
            for t, b in zip(result.times_ms, baseline.times_ms, strict=False)
            if t is not None and b is not None and b > 0
        ]
        if result.ratios:
            result.ratio_vs_baseline = statistics.median(result.ratios)
    if flops and result.median_ms > 0:
        result.gflops = flops / (result.median_ms / 1e3) / 1e9
        peak_gflops = peak.get("gflops") if peak else None
        # int8 runs are not measured against the fp32 peak: the units differ.
        if peak_gflops and str(result.options.get("precision", "fp32")) == "fp32":
            result.pct_of_peak = 100.0 * result.gflops / float(peak_gflops)


def _compare(outputs: Outputs, reference: Outputs) -> tuple[float | None, float | None]:
    """Largest absolute difference over all outputs, and that over the reference's largest
    magnitude; None when the outputs cannot be compared."""
    try:
        worst = 0.0
        scale = 0.0
        for got, want in zip(outputs, reference, strict=True):
            got_a = np.asarray(got, dtype=np.float64)
            want_a = np.asarray(want, dtype=np.float64)
            if got_a.shape != want_a.shape:
                return None, None
            if want_a.size:
                worst = max(worst, float(np.max(np.abs(got_a - want_a))))
                scale = max(scale, float(np.max(np.abs(want_a))))
        return worst, (worst / scale if scale > 0 else None)
    except (ValueError, TypeError):
        return None, None


def _cosine(outputs: Outputs, reference: Outputs) -> float | None:
    """Cosine similarity of all outputs (flattened, concatenated) to the reference's: the
    int8 accuracy bar (>= 0.99); None when the outputs cannot be compared."""
    try:
        got = np.concatenate([np.asarray(o, np.float64).reshape(-1) for o in outputs])
        want = np.concatenate([np.asarray(o, np.float64).reshape(-1) for o in reference])
        if got.shape != want.shape:
            return None
        norm = float(np.linalg.norm(got) * np.linalg.norm(want))
        return float(np.dot(got, want) / norm) if norm > 0 else None
    except (ValueError, TypeError):
        return None


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -- environment --------------------------------------------------------------------------------
def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (the platform's processor string elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_flags() -> list[str]:
    wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    have = set(line.split(":", 1)[1].split())
                    return [w for w in wanted if w in have]
    except OSError:
        pass
    return []


def _memory_total_gib() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except (OSError, ValueError):
        pass
    return None


def _versions() -> dict[str, str | None]:
    from importlib import metadata

    versions: dict[str, str | None] = {}
    for dist in ("lepton-compiler", "numpy", "onnx", "onnxruntime", "apache-tvm", "openvino"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return versions


def machine_info() -> dict[str, Any]:
    """CPU model, core counts, relevant ISA flags, memory, OS, Python and package versions."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "cpu_model": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
        "cpu_flags": _cpu_flags(),
        "memory_gib": _memory_total_gib(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": _versions(),
        "loadavg_start": _loadavg(),
    }


def thread_info(settings: BenchSettings) -> dict[str, Any]:
    """The thread settings every configuration ran under."""
    return {
        "threads": settings.threads,
        "env": {k: os.environ.get(k) for k in THREAD_ENV_VARS},
        "env_set_before_numpy": settings.thread_env_set_early,
        "onnxruntime": {
            "intra_op_num_threads": settings.threads,
            "inter_op_num_threads": 1,
            "execution_mode": "sequential",
        },
    }


def fmt_float(value: float | None, digits: int = 2) -> str:
    """`value` with `digits` decimals, or an em dash for None/NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.{digits}f}"
