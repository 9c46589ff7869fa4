"""Time our fused depthwise Conv+bias+Clip(0, 6) kernel against ONNX Runtime on the
MobileNetV2 depthwise shapes.

Run as ``python -m lepton_compiler.targets.tvm.bench_depthwise [--threads 2] [--repeat 200]``.
``TVM_NUM_THREADS`` is set to ``--threads`` when unset (before tvm is imported).

Measured as `bench_conv` does: ours and ORT interleaved in one process in blocks of calls,
ORT without spinning while interleaved, then ORT's default (spinning) session alone; the
ratio uses the faster of the two ORT medians. Both sessions are dropped before the next
shape (a live spinning session's workers slowed the next shape's kernel up to 2x). Ratio =
ours / ORT: below 1 means we are faster. The last line weights each shape by how often
MobileNetV2 has it.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from .bench_conv import _fused_node, _ort_session, _timed, bench_arguments, bench_target


@dataclass(frozen=True)
class DwShape:
    """One depthwise layer: channels, square input size, stride, and how often it occurs."""

    name: str
    c: int
    hw: int
    stride: int
    count: int = 1
    k: int = 3
    pad: int = 1

    @property
    def out_hw(self) -> int:
        return (self.hw + 2 * self.pad - self.k) // self.stride + 1


MOBILENETV2 = [
    DwShape("32 112 s1", 32, 112, 1),
    DwShape("96 112 s2", 96, 112, 2),
    DwShape("144 56 s1", 144, 56, 1),
    DwShape("144 56 s2", 144, 56, 2),
    DwShape("192 28 s1", 192, 28, 1, 2),
    DwShape("192 28 s2", 192, 28, 2),
    DwShape("384 14 s1", 384, 14, 1, 4),
    DwShape("576 14 s1", 576, 14, 1, 2),
    DwShape("576 14 s2", 576, 14, 2),
    DwShape("960 7 s1", 960, 7, 1, 3),
]


def _onnx_model(s: DwShape) -> Any:
    import onnx
    from onnx import TensorProto, helper

    conv = helper.make_node(
        "Conv", ["x", "w", "b"], ["c"], pads=[s.pad] * 4, strides=[s.stride] * 2,
        kernel_shape=[s.k, s.k], group=s.c,
    )  # fmt: skip
    lo = helper.make_tensor("lo", TensorProto.FLOAT, [], [0.0])
    hi = helper.make_tensor("hi", TensorProto.FLOAT, [], [6.0])
    clip = helper.make_node("Clip", ["c", "lo", "hi"], ["y"])
    graph = helper.make_graph(
        [conv, clip],
        "dw_clip",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, s.c, s.hw, s.hw]),
            helper.make_tensor_value_info("w", TensorProto.FLOAT, [s.c, 1, s.k, s.k]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, [s.c]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, s.c, s.out_hw, s.out_hw])],
        initializer=[lo, hi],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def bench(
    shapes: list[DwShape],
    threads: int,
    repeat: int,
    target: dict[str, Any],
    block: int = 10,
    warm: int = 3,
) -> list[dict]:
    """Measure every shape; returns one row per shape (ms medians, ratio, error)."""
    from .build import build_group

    rows = []
    rng = np.random.default_rng(0)
    for s in shapes:
        model = _onnx_model(s)
        x = rng.standard_normal((1, s.c, s.hw, s.hw), dtype=np.float32)
        w = rng.standard_normal((s.c, 1, s.k, s.k), dtype=np.float32)
        b = rng.standard_normal(s.c, dtype=np.float32)
        fused = _fused_node(model)
        t0 = time.perf_counter()
        kernel = build_group(fused, target)
        build_s = time.perf_counter() - t0
        sess = _ort_session(model, threads, {"w": w, "b": b}, spin=False)
        feeds = [x, w, b] + [np.asarray(v.const) for v in fused.inputs[3:]]
        args = kernel.prepare(feeds)
        ours_out = kernel(*feeds)[0]
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
        # Drop both sessions now: a live spinning session's workers slow the next shape.
        del sess, spin_sess
        gc.collect()
        time.sleep(0.05)
        ours, ort_ns, ort_sp = (float(np.median(t)) * 1e3 for t in (t_ours, t_ort, t_spin))
        ort_ms = min(ort_ns, ort_sp)
        rows.append({
            "shape": s.name, "count": s.count, "ours_ms": ours, "ort_ms": ort_ms,
            "ratio": ours / ort_ms, "ort_nospin_ms": ort_ns, "ort_spin_ms": ort_sp,
            "ours_min": float(np.min(t_ours)) * 1e3,
            "ort_min": float(min(np.min(t_ort), np.min(t_spin))) * 1e3,
            "rel_err": err, "build_s": build_s, "config": kernel.config,
        })  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point: print the table."""
    ap = bench_arguments(__doc__.splitlines()[0])
    args = ap.parse_args(argv)
    target = bench_target(args)
    rows = bench(MOBILENETV2, args.threads, args.repeat, target)
    head = (
        f"{'shape':<11} {'n':>2} {'ours':>6} {'ORT':>6} {'ratio':>5} | {'ORT ns':>6} "
        f"{'ORT sp':>6} | {'min':>6} {'ORT':>6} | {'err':>7}  tile"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        cfg = r["config"]
        print(
            f"{r['shape']:<11} {r['count']:>2} {r['ours_ms']:6.3f} {r['ort_ms']:6.3f} "
            f"{r['ratio']:5.2f} | {r['ort_nospin_ms']:6.3f} {r['ort_spin_ms']:6.3f} | "
            f"{r['ours_min']:6.3f} {r['ort_min']:6.3f} | {r['rel_err']:7.1e}  "
            f"nvec={getattr(cfg, 'nvec', '-')}"
        )
    print("(ms; ORT = faster of ORT ns (no spinning, interleaved) and ORT sp (default, alone))")
    ours_total = sum(r["ours_ms"] * r["count"] for r in rows)
    ort_total = sum(r["ort_ms"] * r["count"] for r in rows)
    geo = float(np.exp(np.mean([np.log(r["ratio"]) for r in rows])))
    print(
        f"MobileNetV2 depthwise total: ours {ours_total:.3f} ms, ORT {ort_total:.3f} ms, "
        f"ratio {ours_total / ort_total:.2f}; geometric mean ratio {geo:.2f}"
    )


if __name__ == "__main__":
    main()
