"""Time our fused Conv+bias+ReLU kernel against ONNX Runtime on the ResNet-50 conv shapes
and MobileNetV2's pointwise convs.

Run as ``python -m lepton_compiler.targets.tvm.bench_conv [--threads 2] [--repeat 200]
[--set resnet50,mobilenetv2] [--only TEXT] [--form auto|cvec|other]``; ``--form`` forces the
channel-vector form (`schedules.x86_conv1x1`) on or off to compare it with the
position-vector forms. ``TVM_NUM_THREADS`` is set to ``--threads`` when unset (before tvm is
imported).

How it measures (each choice fixed a measured artefact on the 2-core machine):

- ours and ORT run interleaved in one process, in alternating blocks of 10 timed calls, each
  block after 3 untimed ones, so drift in machine load hits both alike; call-by-call
  alternation measured the other side's thread pool, not the kernel (up to 9x off).
- interleaved, ORT runs with ``session.intra_op.allow_spinning = 0``: its default spinning
  worker keeps a core busy after ``run`` returns and halved our median on some shapes. ORT's
  default (spinning) configuration is then timed alone, and the ratio uses the faster of the
  two ORT medians, so ORT is never handicapped.
- medians and minima are both printed (other processes on 2 cores can slow either side).

Our time is the kernel call on prepared device tensors; ORT's is ``session.run`` on numpy
arrays (its per-call overhead is a few µs). Ratio = ours / ORT: below 1 means we are faster.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Shape:
    """One conv layer: channels in/out, square input size, kernel, stride, padding."""

    name: str
    c: int
    m: int
    hw: int
    k: int
    stride: int
    pad: int

    @property
    def out_hw(self) -> int:
        return (self.hw + 2 * self.pad - self.k) // self.stride + 1

    @property
    def flops(self) -> int:
        return 2 * self.m * self.out_hw**2 * self.c * self.k * self.k


RESNET50 = [
    Shape("stem 3->64 7x7/2", 3, 64, 224, 7, 2, 3),
    Shape("64->64 3x3 56", 64, 64, 56, 3, 1, 1),
    Shape("64->256 1x1 56", 64, 256, 56, 1, 1, 0),
    Shape("256->64 1x1 56", 256, 64, 56, 1, 1, 0),
    Shape("128->128 3x3/2 56", 128, 128, 56, 3, 2, 1),
    Shape("128->128 3x3 28", 128, 128, 28, 3, 1, 1),
    Shape("256->256 3x3 14", 256, 256, 14, 3, 1, 1),
    Shape("512->512 3x3 7", 512, 512, 7, 3, 1, 1),
    Shape("1024->256 1x1 14", 1024, 256, 14, 1, 1, 0),
    Shape("128->512 1x1 28", 128, 512, 28, 1, 1, 0),
    Shape("512->128 1x1 28", 512, 128, 28, 1, 1, 0),
    Shape("256->512 1x1/2 56", 256, 512, 56, 1, 2, 0),
    Shape("512->2048 1x1 7", 512, 2048, 7, 1, 1, 0),
    Shape("2048->512 1x1 7", 2048, 512, 7, 1, 1, 0),
    Shape("256->256 3x3/2 28", 256, 256, 28, 3, 2, 1),
    Shape("512->512 3x3/2 14", 512, 512, 14, 3, 2, 1),
    Shape("512->1024 1x1/2 28", 512, 1024, 28, 1, 2, 0),
    Shape("1024->2048 1x1/2 14", 1024, 2048, 14, 1, 2, 0),
]


#: MobileNetV2's pointwise convs (expand ``Conv+Clip``, project ``Conv``/``Conv+Add``), one
#: per distinct shape, input 224x224.
MOBILENETV2 = [
    Shape("mb stem 3->32 3x3/2", 3, 32, 224, 3, 2, 1),
    Shape("mb 32->16 1x1 112", 32, 16, 112, 1, 1, 0),
    Shape("mb 16->96 1x1 112", 16, 96, 112, 1, 1, 0),
    Shape("mb 96->24 1x1 56", 96, 24, 56, 1, 1, 0),
    Shape("mb 24->144 1x1 56", 24, 144, 56, 1, 1, 0),
    Shape("mb 144->24 1x1 56", 144, 24, 56, 1, 1, 0),
    Shape("mb 144->32 1x1 28", 144, 32, 28, 1, 1, 0),
    Shape("mb 32->192 1x1 28", 32, 192, 28, 1, 1, 0),
    Shape("mb 192->32 1x1 28", 192, 32, 28, 1, 1, 0),
    Shape("mb 192->64 1x1 14", 192, 64, 14, 1, 1, 0),
    Shape("mb 64->384 1x1 14", 64, 384, 14, 1, 1, 0),
    Shape("mb 384->64 1x1 14", 384, 64, 14, 1, 1, 0),
    Shape("mb 384->96 1x1 14", 384, 96, 14, 1, 1, 0),
    Shape("mb 96->576 1x1 14", 96, 576, 14, 1, 1, 0),
    Shape("mb 576->96 1x1 14", 576, 96, 14, 1, 1, 0),
    Shape("mb 576->160 1x1 7", 576, 160, 7, 1, 1, 0),
    Shape("mb 160->960 1x1 7", 160, 960, 7, 1, 1, 0),
    Shape("mb 960->160 1x1 7", 960, 160, 7, 1, 1, 0),
    Shape("mb 960->320 1x1 7", 960, 320, 7, 1, 1, 0),
    Shape("mb 320->1280 1x1 7", 320, 1280, 7, 1, 1, 0),
]

#: Shape sets by name (``--set``).
SETS = {"resnet50": RESNET50, "mobilenetv2": MOBILENETV2}


def _onnx_model(s: Shape) -> Any:
    import onnx
    from onnx import TensorProto, helper

    conv = helper.make_node(
        "Conv", ["x", "w", "b"], ["c"], pads=[s.pad] * 4, strides=[s.stride] * 2,
        kernel_shape=[s.k, s.k],
    )  # fmt: skip
    relu = helper.make_node("Relu", ["c"], ["y"])
    graph = helper.make_graph(
        [conv, relu],
        "conv_relu",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, s.c, s.hw, s.hw]),
            helper.make_tensor_value_info("w", TensorProto.FLOAT, [s.m, s.c, s.k, s.k]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, [s.m]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, s.m, s.out_hw, s.out_hw])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _fused_node(model: Any) -> Any:
    from lepton_compiler.frontend.onnx import import_model
    from lepton_compiler.pass_manager import PassContext
    from lepton_compiler.passes.fusion.group import GroupFusionPass

    g = import_model(model, simplify=False)
    GroupFusionPass()(g, PassContext())
    (fused,) = [n for n in g if n.op == "lepton.Fused"]
    return fused


def _ort_session(
    model: Any, threads: int, weights: dict[str, np.ndarray], spin: bool = True
) -> Any:
    import onnxruntime as ort
    from onnx import numpy_helper

    # Weights as initializers (as in a real model), so ORT may pre-pack them.
    m = type(model)()
    m.CopyFrom(model)
    keep = [i for i in m.graph.input if i.name not in weights]
    del m.graph.input[:]
    m.graph.input.extend(keep)
    m.graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in weights.items())
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if not spin:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _timed(fn: Any, warm: int, n: int) -> list[float]:
    """Seconds per call of `fn` for `n` calls after `warm` untimed ones."""
    for _ in range(warm):
        fn()
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def bench_arguments(description: str) -> argparse.ArgumentParser:
    """The options every kernel benchmark takes: ``--threads``, ``--repeat``, ``--mcpu``."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--threads", type=int, default=int(os.environ.get("TVM_NUM_THREADS", 2)))
    ap.add_argument("--repeat", type=int, default=200)
    ap.add_argument("--mcpu", default=None, help="LLVM CPU name (default: this machine's)")
    return ap


def bench_target(args: argparse.Namespace) -> dict[str, Any]:
    """Set TVM's thread count, print the set-up line, and return the target dict."""
    os.environ.setdefault("TVM_NUM_THREADS", str(args.threads))
    from .build import host_target

    target = host_target(args.threads)
    if args.mcpu:
        target["mcpu"] = args.mcpu
    print(
        f"target {target}, TVM_NUM_THREADS={os.environ['TVM_NUM_THREADS']}, "
        f"ORT intra_op_num_threads={args.threads}, {args.repeat} runs each"
    )
    return target


def bench(
    shapes: list[Shape],
    threads: int,
    repeat: int,
    target: dict[str, Any],
    block: int = 10,
    warm: int = 3,
) -> list[dict]:
    """Measure every shape; returns one row per shape (ms medians, ratio, GFLOP/s)."""
    from .build import build_group

    rows = []
    rng = np.random.default_rng(0)
    for s in shapes:
        model = _onnx_model(s)
        x = rng.standard_normal((1, s.c, s.hw, s.hw), dtype=np.float32)
        w = rng.standard_normal((s.m, s.c, s.k, s.k), dtype=np.float32)
        w = (w / np.sqrt(s.c * s.k**2)).astype(np.float32)
        b = rng.standard_normal(s.m, dtype=np.float32)
        fused = _fused_node(model)
        t0 = time.perf_counter()
        kernel = build_group(fused, target)
        build_s = time.perf_counter() - t0
        sess = _ort_session(model, threads, {"w": w, "b": b}, spin=False)
        args = kernel.prepare([x, w, b])
        ours_out = kernel(x, w, b)[0]
        ort_out = sess.run(None, {"x": x})[0]
        err = float(np.abs(ours_out - ort_out).max() / max(1e-6, np.abs(ort_out).max()))
        for _ in range(5):
            kernel.func(*args)
            sess.run(None, {"x": x})
        t_ours, t_ort = [], []
        for _ in range(max(1, repeat // block)):
            t_ours += _timed(partial(kernel.func, *args), warm, block)
            t_ort += _timed(partial(sess.run, None, {"x": x}), warm, block)
        spin_sess = _ort_session(model, threads, {"w": w, "b": b}, spin=True)
        t_spin = _timed(partial(spin_sess.run, None, {"x": x}), 10, repeat)
        ours, ort_ns, ort_sp = (float(np.median(t)) * 1e3 for t in (t_ours, t_ort, t_spin))
        ort_ms = min(ort_ns, ort_sp)
        ours_min = float(np.min(t_ours)) * 1e3
        ort_min = float(min(np.min(t_ort), np.min(t_spin))) * 1e3
        rows.append({
            "shape": s.name, "ours_ms": ours, "ort_ms": ort_ms, "ratio": ours / ort_ms,
            "ort_nospin_ms": ort_ns, "ort_spin_ms": ort_sp,
            "ours_min": ours_min, "ort_min": ort_min, "min_ratio": ours_min / ort_min,
            "ours_gflops": s.flops / ours / 1e6, "ort_gflops": s.flops / ort_ms / 1e6,
            "rel_err": err, "build_s": build_s, "config": kernel.config,
            "flat": kernel.param_shapes[0] != (1, s.c, s.hw, s.hw),
        })  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point: print the table."""
    ap = bench_arguments(__doc__.splitlines()[0])
    ap.add_argument(
        "--set",
        default="resnet50,mobilenetv2",
        help="comma-separated shape sets: " + ", ".join(SETS),
    )
    ap.add_argument("--only", default="", help="keep shapes whose name contains this text")
    ap.add_argument(
        "--form", choices=("auto", "cvec", "other"), default="auto",
        help="conv form: by shape (auto), always channel-vector (cvec), never (other)",
    )  # fmt: skip
    args = ap.parse_args(argv)
    target = bench_target(args)
    from .kernels import conv

    conv.FORCE_CVEC = {"auto": None, "cvec": True, "other": False}[args.form]
    shapes = [s for name in args.set.split(",") for s in SETS[name.strip()]]
    shapes = [s for s in shapes if args.only in s.name]
    rows = bench(shapes, args.threads, args.repeat, target)
    head = (
        f"{'shape':<20} {'ours':>6} {'ORT':>6} {'ratio':>5} {'GF/s':>5} {'ORT':>5} | "
        f"{'ORT ns':>6} {'ORT sp':>6} | {'min':>6} {'ORT':>6} {'ratio':>5} | {'err':>7}  tile"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        cfg = r["config"]
        tile = "-"
        if cfg is not None and hasattr(cfg, "mv"):
            tile = f"cvec mv={cfg.mv} hb={cfg.hb} wb={cfg.wb}"
        elif cfg is not None:
            mode = "flat" if r["flat"] else ("rows" if cfg.rows else "nchw")
            tile = f"{mode} ocb={cfg.ocb} hb={cfg.hb} nvec={cfg.nvec}"
        print(
            f"{r['shape']:<20} {r['ours_ms']:6.3f} {r['ort_ms']:6.3f} {r['ratio']:5.2f} "
            f"{r['ours_gflops']:5.0f} {r['ort_gflops']:5.0f} | {r['ort_nospin_ms']:6.3f} "
            f"{r['ort_spin_ms']:6.3f} | {r['ours_min']:6.3f} {r['ort_min']:6.3f} "
            f"{r['min_ratio']:5.2f} | {r['rel_err']:7.1e}  {tile}"
        )
    print("(ms; ORT = faster of ORT ns (no spinning, interleaved) and ORT sp (default, alone))")
    geo = float(np.exp(np.mean([np.log(r["ratio"]) for r in rows])))
    geo_min = float(np.exp(np.mean([np.log(r["min_ratio"]) for r in rows])))
    print(f"geometric mean ratio (ours / ORT): medians {geo:.2f}, minima {geo_min:.2f}")


if __name__ == "__main__":
    main()
