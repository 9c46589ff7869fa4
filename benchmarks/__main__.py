"""Run the benchmarks: ``python -m benchmarks`` (from the repository root).

    python -m benchmarks --models resnet50,mobilenetv2,bert --quick
    python -m benchmarks                                  # the full run (30 rounds)
    python -m benchmarks --models mlp --configs lepton-ref --threads 1 --out /tmp/bench
    python -m benchmarks --list

Every configuration runs beside ONNX Runtime fp32, interleaved in this one process, with the
same thread count; results go to ``benchmarks/results/<timestamp>/`` (``results.json``,
``results.md``, ``ratios.png``) and the markdown table is printed. See `benchmarks.runner`
for the method (interleaving, ratios, time limits, memory).

The thread variables (OMP, OpenBLAS, MKL, TVM, Numba) must be set before NumPy or any
runtime is imported, or the thread pools are already sized: this module therefore parses its
arguments and sets them before importing anything heavy. ``OPENBLAS_THREAD_TIMEOUT=4`` and
``NUMBA_THREADING_LAYER=workqueue`` keep idle pools from spinning into the next
configuration's runs (TVM-NOTES.md, "Measuring on these machines"); those two are only set
when not already set.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from datetime import datetime
from pathlib import Path

#: Models run when ``--models`` is not given: the standard ones (the small ones are for tests).
DEFAULT_MODELS = ("resnet50", "mobilenetv2", "bert")
#: Where results go unless ``--out`` says otherwise (git-ignored).
RESULTS_DIR = Path(__file__).resolve().parent / "results"

_THREAD_COUNT_VARS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "TVM_NUM_THREADS",
    "NUMBA_NUM_THREADS",
)
_THREAD_DEFAULTS = {"OPENBLAS_THREAD_TIMEOUT": "4", "NUMBA_THREADING_LAYER": "workqueue"}


def set_thread_env(threads: int) -> bool:
    """Set the thread variables for `threads`; True when NumPy was not imported yet (so
    they take effect), False when it was (the pools may already be sized)."""
    for name in _THREAD_COUNT_VARS:
        os.environ[name] = str(threads)
    for name, value in _THREAD_DEFAULTS.items():
        os.environ.setdefault(name, value)
    return "numpy" not in sys.modules


def _csv(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Benchmark Lepton configurations against ONNX Runtime (and other peers), "
        "interleaved in one process.",
        epilog="The full run: python -m benchmarks (all configs on resnet50, mobilenetv2 and "
        "bert; 5 warm-up runs, 30 rounds).",
    )
    p.add_argument(
        "--models",
        type=_csv,
        default=list(DEFAULT_MODELS),
        help=f"comma-separated models, or 'all' (default: {','.join(DEFAULT_MODELS)})",
    )
    p.add_argument(
        "--configs",
        type=_csv,
        default=None,
        help="comma-separated configurations (default: all; ort-fp32, the baseline "
        "of every ratio, is always added)",
    )
    p.add_argument(
        "--threads", type=int, default=2, help="threads for every configuration (default: 2)"
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="2 warm-up runs and 5 rounds (default: 5 and 30); peak from a 2048³ sgemm",
    )
    p.add_argument("--warmup", type=int, default=None, help="warm-up runs (overrides --quick)")
    p.add_argument(
        "--rounds", type=int, default=None, help="interleaved timed rounds (overrides --quick)"
    )
    p.add_argument(
        "--lead-in",
        type=int,
        default=1,
        metavar="N",
        help="untimed runs of a configuration right before each of its timed runs, so no "
        "runtime pays for the previous one's spinning thread pool (default 1)",
    )
    p.add_argument(
        "--settle-ms",
        type=float,
        default=50.0,
        metavar="MS",
        help="pause before each configuration's lead-in, until the previous one's threads "
        "stop spinning (ONNX Runtime's spin about 30 ms after a run; default 50)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="limit per configuration for compile + warm-up, and again for its timed "
        "runs; 0 for none (default: 600)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="results folder (default: benchmarks/results/<timestamp>/)",
    )
    p.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="where models are built (default: benchmarks/.cache)",
    )
    p.add_argument(
        "--peak",
        type=float,
        default=None,
        metavar="GFLOPS",
        help="the machine's fp32 peak, instead of measuring it",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--list", action="store_true", help="list models and configurations, exit")
    return p  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks as the command line says; return the exit status.

    Configurations that fail, time out or are unavailable are recorded in the results and do
    not change the exit status; 2 means bad arguments, 130 an interrupt (results so far are
    saved after each model).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error("--threads must be at least 1")
    early = set_thread_env(args.threads)

    from . import configs as configs_mod
    from .models import MODELS

    if args.list:
        print("models:")
        for name in MODELS:
            print(f"  {name}")
        print("configs:")
        for config in configs_mod.CONFIGS.values():
            print(f"  {config.name:<18} {config.description}")
        return 0

    models = list(MODELS) if args.models == ["all"] else args.models
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(MODELS)}")
    try:
        chosen = configs_mod.select(args.configs)
    except KeyError as e:
        parser.error(str(e.args[0]))

    from .report import markdown_report, write_all, write_json
    from .runner import BenchSettings, run_matrix

    settings = BenchSettings(
        threads=args.threads,
        warmup=args.warmup if args.warmup is not None else (2 if args.quick else 5),
        rounds=args.rounds if args.rounds is not None else (5 if args.quick else 30),
        lead_in=max(0, args.lead_in),
        settle_s=max(0.0, args.settle_ms) / 1e3,
        timeout_s=args.timeout or None,
        progress=not args.no_progress,
        cache_dir=args.cache_dir,
        peak_gflops=args.peak,
        peak_n=2048 if args.quick else 4096,
        quick=args.quick,
        thread_env_set_early=early,
    )
    if settings.warmup < 0 or settings.rounds < 1:
        parser.error("need --warmup >= 0 and --rounds >= 1")
    out = args.out or RESULTS_DIR / datetime.now().strftime("%Y%m%d-%H%M%S")
    command = shlex.join(["python", "-m", "benchmarks", *argv])
    if not early:
        print("warning: NumPy was imported before the thread variables were set; "
              "its thread pool may not honour --threads", file=sys.stderr)  # fmt: skip
    try:
        doc = run_matrix(models, chosen, settings, command=command,
                         on_model_done=lambda d: write_json(d, out))  # fmt: skip
    except KeyboardInterrupt:
        print(f"\ninterrupted; results of the finished models are in {out}", file=sys.stderr)
        return 130
    paths = write_all(doc, out)
    print(markdown_report(doc, png_written=paths["png"] is not None))
    for kind, path in paths.items():
        if path is not None:
            print(f"{kind}: {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
