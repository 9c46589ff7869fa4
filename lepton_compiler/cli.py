"""``lepton-compile``: compile ONNX models into artifacts, run them, and inspect them.

Three forms share one entry point (`main`):

* ``lepton-compile MODEL.onnx -o OUT_DIR [options]`` compiles and saves an artifact;
* ``lepton-compile run ARTIFACT_OR_MODEL [--input NAME=FILE.npy ...]`` runs one;
* ``lepton-compile info ARTIFACT_OR_MODEL`` shows signatures, op counts and the report.

Because the compile form takes the model as its first positional argument, ``run`` and
``info`` are recognized by the first argument and dispatched to their own parsers. Every
`LeptonError` (and every bad file the CLI itself reads or writes) becomes ``error: <message>``
on stderr with exit status 1 and no traceback; ``--debug`` shows the traceback instead.
Usage errors exit with 2 (argparse), Ctrl-C with 130.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .errors import LeptonError

_COMMANDS = ("compile", "run", "info")

_EPILOG = """\
commands:
  lepton-compile MODEL.onnx -o OUT_DIR [options]   compile MODEL and save an artifact (this page)
  lepton-compile run ARTIFACT_OR_MODEL [options]   run an artifact (or a model, compiled on the
                                                   fly) on .npy inputs; see `run --help`
  lepton-compile info ARTIFACT_OR_MODEL            show signatures, op counts and the compile
                                                   report; see `info --help`

examples:
  lepton-compile model.onnx -o model.lepton
  lepton-compile model.onnx -o model.lepton --target x86:avx512,vnni -O3 --report
  lepton-compile model.onnx -o model.lepton --input-shape image=1,3,224,224
  lepton-compile model.onnx -o model.lepton --backend tvm --int8 --calibrate samples.npz
  lepton-compile run model.lepton --input image=image.npy --output-dir outputs/
  lepton-compile run model.onnx --benchmark
  lepton-compile info model.lepton

Errors print `error: <message>` and exit with status 1 (2 for usage errors); add --debug to
see the traceback.
"""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``lepton-compile`` command line.

    Args:
        argv: the arguments after the program name; ``sys.argv[1:]`` when None.

    Returns:
        The exit status: 0 on success, 1 on an error, 2 on a usage error, 130 on Ctrl-C.
    """
    args_list = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args_list
    try:
        if "--list-passes" in args_list:
            return _list_passes()
        parser, rest = _select_parser(args_list)
        args = parser.parse_args(rest)
        return int(args.handler(args))
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except LeptonError as e:
        if debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 1


# -- parsers ------------------------------------------------------------------------------------


def _select_parser(argv: list[str]) -> tuple[argparse.ArgumentParser, list[str]]:
    """The parser for the command named first (after any --debug), and the remaining args."""
    lead = 0
    while lead < len(argv) and argv[lead] == "--debug":
        lead += 1
    if lead < len(argv) and argv[lead] in _COMMANDS:
        command, rest = argv[lead], argv[:lead] + argv[lead + 1 :]
    else:
        command, rest = "compile", argv
    builders = {"compile": _compile_parser, "run": _run_parser, "info": _info_parser}
    return builders[command](), rest


def _base_parser(prog: str, description: str, epilog: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    return p


def _add_compile_options(p: argparse.ArgumentParser, note: str = "") -> None:
    g = p.add_argument_group("compile options" + note)
    g.add_argument(
        "--target",
        default="host",
        metavar="TARGET",
        help="where the model will run: host (default), x86, x86:avx512,vnni, arm:neon,dotprod, "
        "cuda:sm_80",
    )
    g.add_argument(
        "--backend",
        default="reference",
        metavar="NAME",
        help="code generator: reference (default; the reference interpreter), tvm (TVM "
        "kernels with our x86 schedules, reference kernels for ops without one; needs "
        "pip install 'lepton-compiler[tvm]') or numba (generated Numba kernels, cached on "
        "disk, reference kernels for ops without a template; needs "
        "pip install 'lepton-compiler[numba]')",
    )
    g.add_argument(
        "-O",
        dest="opt_level",
        type=int,
        choices=range(4),
        default=2,
        metavar="LEVEL",
        help="optimization level: -O0 (no passes) to -O3; default -O2",
    )
    g.add_argument(
        "--no-simplify",
        dest="simplify",
        action="store_false",
        help="skip onnxsim simplification during import",
    )
    g.add_argument(
        "--input-shape",
        dest="input_shapes",
        action="append",
        type=_input_shape,
        default=[],
        metavar="NAME=D0,D1,...",
        help="override an input's shape; dims are integers or symbolic names, e.g. "
        "image=1,3,224,224 or tokens=batch,128 (repeatable)",
    )
    g.add_argument(
        "--passes",
        metavar="A,B,C",
        help="run exactly these passes, in this order, instead of the -O pipeline "
        "(see --list-passes)",
    )
    g.add_argument(
        "--disable-pass",
        dest="disabled_passes",
        action="append",
        default=[],
        metavar="NAME",
        help="never run this pass (repeatable)",
    )
    g.add_argument(
        "--dump-ir",
        metavar="DIR",
        help="write the IR as text to DIR before the first pass and after every pass that "
        "changed it (001_input.txt, 002_<pass>.txt, ...)",
    )
    g.add_argument("--time-passes", action="store_true", help="print how long each pass took")
    g.add_argument(
        "--trace-rules",
        action="store_true",
        help="print, for every pattern rule, how often it fired or the best partial match "
        "and why it did not fire",
    )
    g.add_argument(
        "--tune",
        type=int,
        default=0,
        metavar="TRIALS",
        help="tvm backend: tune every kernel with TRIALS MetaSchedule trials and keep tuned "
        "schedules that beat ours; results persist per target (~/.cache/lepton/tuning) and "
        "later compiles reuse them without --tune. Slow: minutes per kernel",
    )
    g.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="print one line per compile step to stderr (default: when stderr is a terminal)",
    )
    q = p.add_argument_group(
        "int8 quantization",
        "Quantize Conv/Gemm/MatMul layers to int8 (per-channel int8 weights, uint8 or int8 "
        "activations, int32 biases), calibrated on sample inputs. A per-layer accuracy report "
        "(SQNR, cosine) names the most sensitive layers.",
    )
    q.add_argument("--int8", action="store_true", help="quantize the model to int8")
    q.add_argument(
        "--calibrate",
        action="append",
        default=[],
        metavar="DATA",
        help="calibration inputs: a .npz file (one array per input name, samples along the "
        "first axis), a .npy file (single-input models) or a folder of them; repeatable. "
        "Required with --int8",
    )
    q.add_argument(
        "--int8-method",
        choices=("minmax", "percentile", "entropy", "mse"),
        default="percentile",
        help="how activation ranges are chosen (default: percentile)",
    )
    q.add_argument(
        "--int8-percentile",
        type=float,
        default=99.999,
        metavar="P",
        help="the percentile of --int8-method percentile (default 99.999)",
    )
    q.add_argument(
        "--int8-activations",
        choices=("auto", "uint8", "int8"),
        default="auto",
        help="activation type: uint8 asymmetric (x86 VNNI) or int8 symmetric (ARM); auto "
        "picks by target (default)",
    )
    q.add_argument(
        "--int8-per-tensor",
        action="store_true",
        help="one scale per weight tensor instead of one per output channel",
    )
    q.add_argument(
        "--int8-exclude",
        action="append",
        default=[],
        metavar="NAME_OR_OP",
        help="keep this node (by name) or every node of this op type (e.g. Gemm) in float; "
        "repeatable",
    )
    q.add_argument(
        "--int8-max-drop",
        type=float,
        default=None,
        metavar="ERROR",
        help="keep the most sensitive layers in float until the relative output error "
        "||int8 - fp32|| / ||fp32|| on the first samples is at most ERROR (e.g. 0.05)",
    )
    q.add_argument(
        "--int8-export",
        metavar="FILE.onnx",
        help="also write the quantized model as a QDQ ONNX model (standard QuantizeLinear/"
        "DequantizeLinear ops; ONNX Runtime runs it)",
    )
    q.add_argument(
        "--int8-samples",
        type=int,
        default=256,
        metavar="N",
        help="use at most N calibration samples (default 256)",
    )


def _compile_parser() -> argparse.ArgumentParser:
    p = _base_parser(
        "lepton-compile",
        "Compile an ONNX model into a Lepton artifact directory (manifest + compiled model),\n"
        "which `lepton-compile run` and lepton_compiler.load() use without recompiling.",
        _EPILOG,
    )
    p.add_argument("model", metavar="MODEL.onnx", help="the ONNX model to compile")
    p.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="OUT_DIR",
        help="artifact directory to write (created; an existing artifact there is replaced "
        "atomically)",
    )
    _add_compile_options(p)
    p.add_argument("--report", action="store_true", help="print the full compile report")
    p.add_argument(
        "--list-passes",
        action="store_true",
        help="list every pass (name and what it does) and the -O pipelines, then exit",
    )
    p.add_argument("--version", action="version", version=f"lepton-compile {__version__}")
    p.set_defaults(handler=_cmd_compile)
    return p


def _run_parser() -> argparse.ArgumentParser:
    p = _base_parser(
        "lepton-compile run",
        "Run an artifact directory, or an ONNX model compiled on the fly, on .npy inputs and\n"
        "print each output's shape, dtype and a short summary.",
        "examples:\n"
        "  lepton-compile run model.lepton --input image=image.npy\n"
        "  lepton-compile run model.lepton --input a=a.npy --input b=b.npy --output-dir out/\n"
        "  lepton-compile run model.onnx --benchmark      # random inputs from the signature\n",
    )
    p.add_argument("model", metavar="ARTIFACT_OR_MODEL", help="artifact directory or .onnx file")
    p.add_argument(
        "--input",
        "-i",
        dest="inputs",
        action="append",
        default=[],
        metavar="NAME=FILE.npy",
        help="an input from a .npy file (repeatable; NAME= may be left out when the model has "
        "one input). Without any, random inputs are generated from the signature",
    )
    p.add_argument("--output-dir", metavar="DIR", help="save every output as DIR/<name>.npy")
    p.add_argument("--benchmark", action="store_true", help="also time the model")
    p.add_argument(
        "--profile",
        action="store_true",
        help="tvm and numba backends: time every step and print where the time goes "
        "(kernel family, reference fallback or view), slowest first",
    )
    p.add_argument("--warmup", type=int, default=3, help="untimed runs before timing (default 3)")
    p.add_argument("--repeat", type=int, default=20, help="timed runs (default 20)")
    _add_compile_options(p, " (used when given an .onnx model)")
    p.set_defaults(handler=_cmd_run)
    return p


def _info_parser() -> argparse.ArgumentParser:
    p = _base_parser(
        "lepton-compile info",
        "Show an artifact's (or an ONNX model's) input/output signatures, op counts and\n"
        "compile report.",
        "examples:\n  lepton-compile info model.lepton\n  lepton-compile info model.onnx -O0\n",
    )
    p.add_argument("model", metavar="ARTIFACT_OR_MODEL", help="artifact directory or .onnx file")
    _add_compile_options(p, " (used when given an .onnx model)")
    p.set_defaults(handler=_cmd_info)
    return p


def _input_shape(text: str) -> tuple[str, list[int | str]]:
    name, sep, dims = text.partition("=")
    if not sep or not name or not dims:
        raise argparse.ArgumentTypeError(f"expected NAME=D0,D1,..., got {text!r}")
    shape: list[int | str] = []
    for d in dims.split(","):
        d = d.strip()
        if re.fullmatch(r"\d+", d):
            shape.append(int(d))
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", d):
            shape.append(d)
        else:
            raise argparse.ArgumentTypeError(
                f"bad dim {d!r} in {text!r}: use non-negative integers or symbolic names"
            )
    return name, shape


# -- commands -----------------------------------------------------------------------------------


def _cmd_compile(args: argparse.Namespace) -> int:
    model = _compile(args.model, args)
    path = model.save(args.output)
    print(_summary(args.model, path, model))
    if model.report.int8:
        print(model.report.int8 if args.report else model.report.int8.splitlines()[0])
    if getattr(args, "int8_export", None):
        from .export.qdq import quantize

        shapes = dict(args.input_shapes) or None
        quantize(
            args.model,
            _int8_config(args),
            args.int8_export,
            target=args.target,
            simplify=args.simplify,
            input_shapes=shapes,
        )
        print(f"wrote the int8 QDQ model to {args.int8_export}")
    if args.report:
        print()
        print(model.report)
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    model = _open(args.model, args)
    profile = getattr(model.executor, "profile", None) if args.profile else None
    if args.profile and profile is None:
        raise LeptonError(
            f"--profile needs the tvm backend or the numba backend (this model runs on "
            f"{model.backend})"
        )
    feeds = _read_inputs(args.inputs, model)
    if not feeds:
        print(
            "note: no --input given; running on random inputs from the signature "
            "(symbolic dims set to 1)",
            file=sys.stderr,
        )
        feeds = model.random_inputs()
    outputs = model.run(feeds)
    print(f"outputs of {model.name}:")
    width = max((len(n) for n in outputs), default=0)
    for name, value in outputs.items():
        print(f"  {name:<{width}}  {_describe_output(value)}")
    if args.output_dir:
        for line in _save_outputs(Path(args.output_dir), outputs):
            print(line)
    if args.benchmark:
        stats = model.benchmark(feeds, warmup=args.warmup, repeat=args.repeat)
        print(
            f"benchmark ({stats['repeat']} runs after {stats['warmup']} warmup): "
            f"median {stats['median_ms']:.3f} ms, p90 {stats['p90_ms']:.3f} ms, "
            f"mean {stats['mean_ms']:.3f} ms"
        )
    if profile is not None:
        rows = profile(model.check_inputs(feeds), repeat=args.repeat)
        total = sum(r["ms"] for r in rows)
        print(f"profile ({args.repeat} runs, median per run; steps sum to {total:.3f} ms):")
        for r in rows:
            print(
                f"  {r['label'][:40]:<40} {r['kind']:<18} x{r['count']:<4} {r['ms']:9.3f} ms "
                f"{100 * r['share']:5.1f} %"
            )
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    model = _open(args.model, args)
    meta = model.metadata
    if meta:
        print(
            f"artifact {args.model}: format {meta.get('format_version')}, written by Lepton "
            f"Compiler {meta.get('lepton_version')} (onnx {meta.get('onnx_version')}) at "
            f"{meta.get('created')}"
        )
    else:
        print(f"model {args.model} (compiled on the fly, not saved)")
    print(f"backend {model.backend}, target {model.target}, O{model.opt_level}")
    print("inputs:")
    for s in model.input_signature:
        print(f"  {s}")
    print("outputs:")
    for s in model.output_signature:
        print(f"  {s}")
    counts = sorted(model.graph.op_counts().items(), key=lambda kv: (-kv[1], kv[0]))
    print("ops: " + (", ".join(f"{op} {n}" for op, n in counts) or "none"))
    print()
    print(model.report)
    return 0


def _list_passes() -> int:
    from .pass_manager import list_passes
    from .pipeline import PIPELINES

    classes = list_passes()
    width = max(len(c.name) for c in classes)
    print("passes:")
    for c in classes:
        print(f"  {c.name:<{width}}  {c.description()}")
    print("pipelines (-O LEVEL):")
    for level, stages in PIPELINES.items():
        text = "; ".join(f"{st.name}: " + " -> ".join(st.passes) for st in stages)
        print(f"  -O{level}: " + (text or "(no passes)"))
    return 0


# -- helpers ------------------------------------------------------------------------------------


def _compile(model_path: str, args: argparse.Namespace) -> Any:
    from .api import compile as compile_model

    shapes: dict[str, list[int | str]] = {}
    for name, shape in args.input_shapes:
        if name in shapes:
            raise LeptonError(f"--input-shape given twice for input {name!r}")
        shapes[name] = shape
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        model = compile_model(
            model_path,
            target=args.target,
            backend=args.backend,
            opt_level=args.opt_level,
            simplify=args.simplify,
            input_shapes=shapes or None,
            progress=progress,
            passes=[p.strip() for p in args.passes.split(",") if p.strip()]
            if args.passes is not None
            else None,
            disabled_passes=args.disabled_passes,
            dump_ir=args.dump_ir,
            trace_rules=args.trace_rules,
            tune=args.tune,
            quantize=_int8_config(args),
        )
    for w in caught:
        if issubclass(w.category, UserWarning):
            print(f"warning: {w.message}", file=sys.stderr)
    if args.time_passes:
        print("pass timings:")
        for name, ms, modified in model.report.passes:
            print(f"  {name:<36} {ms:9.2f} ms{'  (changed the graph)' if modified else ''}")
    if args.trace_rules:
        print("pattern rules:")
        for line in model.report.rule_traces or ["(no pattern-rule pass ran)"]:
            print(f"  {line}")
    return model


def _int8_config(args: argparse.Namespace) -> Any:
    """The `Int8Config` the int8 options ask for, or None without ``--int8``."""
    if not getattr(args, "int8", False):
        if getattr(args, "calibrate", None) or getattr(args, "int8_export", None):
            raise LeptonError("--calibrate and --int8-export are used with --int8")
        return None
    if not args.calibrate:
        raise LeptonError(
            "--int8 needs calibration inputs: --calibrate DATA.npz (one array per input "
            "name, samples along the first axis), a .npy file or a folder of them"
        )
    from .quantization import Int8Config

    return Int8Config(
        calibration=list(args.calibrate),
        method=args.int8_method,
        percentile=args.int8_percentile,
        per_channel=not args.int8_per_tensor,
        activations=args.int8_activations,
        exclude=tuple(args.int8_exclude),
        max_drop=args.int8_max_drop,
        samples=args.int8_samples,
    )


def _open(path: str, args: argparse.Namespace) -> Any:
    """An artifact directory is loaded; a file is compiled on the fly."""
    if os.path.isdir(path):
        from .runtime.artifact import load

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UserWarning)
            model = load(path)
        for w in caught:
            if issubclass(w.category, UserWarning):
                print(f"warning: {w.message}", file=sys.stderr)
        return model
    if not os.path.exists(path):
        raise LeptonError(f"no such artifact or model: {path}")
    return _compile(path, args)


def _read_inputs(specs: list[str], model: Any) -> dict[str, np.ndarray]:
    names = [s.name for s in model.input_signature]
    feeds: dict[str, np.ndarray] = {}
    for spec in specs:
        name, sep, file = spec.partition("=")
        if not sep:
            if len(names) != 1:
                raise LeptonError(
                    f"--input {spec!r} has no NAME=; the model has {len(names)} inputs "
                    f"({', '.join(names)}), so write --input NAME=FILE.npy"
                )
            name, file = names[0], spec
        if name in feeds:
            raise LeptonError(f"--input given twice for input {name!r}")
        feeds[name] = _load_npy(name, file)
    return feeds


def _load_npy(name: str, file: str) -> np.ndarray:
    path = Path(file)
    if not path.exists():
        raise LeptonError(f"input file for {name!r} not found: {file}")
    if path.is_dir():
        raise LeptonError(f"input file for {name!r} is a directory: {file}")
    if path.suffix.lower() != ".npy":
        raise LeptonError(
            f"input file for {name!r} is not a .npy file: {file} (save arrays with numpy.save)"
        )
    try:
        return np.load(path, allow_pickle=False)
    except OSError as e:
        raise LeptonError(f"cannot read input file {file}: {e.strerror or e}") from e
    except (ValueError, EOFError) as e:
        raise LeptonError(f"input file {file} is not a valid .npy array: {e}") from e


def _describe_output(value: Any) -> str:
    if not isinstance(value, np.ndarray):
        if isinstance(value, list):
            return f"sequence of {len(value)} tensor(s)"
        return f"{type(value).__name__}"
    text = f"shape {tuple(value.shape)}  {value.dtype}"
    if value.size == 0 or value.dtype.kind not in "biuf":
        return text
    data = value.astype(np.float64) if value.dtype.kind == "b" else value
    text += f"  min {data.min():.6g}  max {data.max():.6g}  mean {data.mean(dtype=np.float64):.6g}"
    if value.ndim == 1 or (value.ndim == 2 and value.shape[0] == 1):
        text += f"  argmax {int(np.argmax(value))}"
    return text


def _save_outputs(folder: Path, outputs: dict[str, Any]) -> list[str]:
    lines = []
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for name, value in outputs.items():
            if not isinstance(value, np.ndarray):
                lines.append(f"note: output {name!r} is not a tensor; not saved")
                continue
            file = folder / (re.sub(r"[^A-Za-z0-9._-]", "_", name) + ".npy")
            np.save(file, value, allow_pickle=False)
            lines.append(f"saved {name} to {file}")
    except OSError as e:
        raise LeptonError(f"cannot write outputs to {folder}: {e.strerror or e}") from e
    return lines


def _summary(source: str, path: Path, model: Any) -> str:
    from .runtime.report import format_bytes

    r = model.report
    before = sum(r.op_counts_before.values())
    ins = ", ".join(str(s) for s in model.input_signature)
    outs = ", ".join(str(s) for s in model.output_signature)
    example = " ".join(f"--input {s.name}=FILE.npy" for s in model.input_signature)
    return (
        f"compiled {source} into {path} (backend {r.backend}, target {r.target}, "
        f"O{r.opt_level}) in {r.total_seconds:.2f} s: {r.num_nodes} nodes ({before} before "
        f"optimization), {r.num_constants} constants holding {format_bytes(r.weights_bytes)} "
        f"of weights; fallbacks: {len(r.fallbacks) or 'none'}. Inputs: {ins}. Outputs: {outs}. "
        f"Run it with: lepton-compile run {path} {example}".rstrip()
    )


if __name__ == "__main__":
    sys.exit(main())
