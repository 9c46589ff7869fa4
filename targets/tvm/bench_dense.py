"""Time our dense kernels (Gemm/MatMul + epilogue) against ONNX Runtime on the BERT-base and
classifier shapes.

Run as ``python -m lepton_compiler.targets.tvm.bench_dense [--threads 2] [--repeat 200]``.
``TVM_NUM_THREADS`` is set to ``--threads`` when unset (before tvm is imported).

Each shape is an ONNX model ``MatMul(x, W) + b`` (optionally followed by GELU written the way
exporters write it: ``x * 0.5 * (1 + Erf(x / √2))``), with W and b as initializers. ORT runs
that model (it fuses it into its own Gemm/BiasGelu kernels); our side compiles the same model
with Lepton's passes (which turn it into a ``Gemm`` or a ``Gemm + lepton.Gelu`` group) and
times the one dense kernel on prepared device tensors.

Measurement protocol: as in `bench_conv` (interleaved blocks of 10 timed calls after 3
untimed ones; ORT without spinning when interleaved, and its default spinning session timed
alone; the ratio uses the faster ORT median). Ratio = ours / ORT: below 1 means we are
faster.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from .bench_conv import _ort_session, _timed, bench_arguments, bench_target


@dataclass(frozen=True)
class DenseShape:
    """One dense layer: ``[M, K] x [K, N] + bias``, optionally followed by GELU (erf)."""

    name: str
    m: int
    k: int
    n: int
    gelu: bool = False

    @property
    def flops(self) -> int:
        return 2 * self.m * self.n * self.k


SHAPES = [
    DenseShape("bert qkv/out 128x768x768", 128, 768, 768),
    DenseShape("bert ffn1+gelu 128x768x3072", 128, 768, 3072, gelu=True),
    DenseShape("bert ffn2 128x3072x768", 128, 3072, 768),
    DenseShape("resnet50 fc 1x2048x1000", 1, 2048, 1000),
    DenseShape("mobilenetv2 fc 1x1280x1000", 1, 1280, 1000),
]


def _onnx_model(s: DenseShape, w: np.ndarray, b: np.ndarray) -> Any:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["mm"]),
        helper.make_node("Add", ["mm", "b"], ["y" if not s.gelu else "t"]),
    ]
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")]
    if s.gelu:
        inits += [
            numpy_helper.from_array(np.array(np.sqrt(2.0), np.float32), "sqrt2"),
            numpy_helper.from_array(np.array(1.0, np.float32), "one"),
            numpy_helper.from_array(np.array(0.5, np.float32), "half"),
        ]
        nodes += [
            helper.make_node("Div", ["t", "sqrt2"], ["d"]),
            helper.make_node("Erf", ["d"], ["e"]),
            helper.make_node("Add", ["e", "one"], ["e1"]),
            helper.make_node("Mul", ["t", "e1"], ["te"]),
            helper.make_node("Mul", ["te", "half"], ["y"]),
        ]
    graph = helper.make_graph(
        nodes,
        "dense",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [s.m, s.k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [s.m, s.n])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _dense_group(model: Any) -> tuple[Any, list[Any]]:
    """Our compiled graph's one dense node as a `lepton.Fused` group, and the graph values its
    inputs stand for."""
    import lepton_compiler as lc

    from .executor import _wrap_single

    cm = lc.compile(model, backend="reference", progress=False)
    for node in cm.graph.nodes:
        if node.op == "lepton.Fused" and node.attrs.get("anchor") in ("Gemm", "MatMul"):
            return node, list(node.inputs)
        if node.op in ("Gemm", "MatMul"):
            return _wrap_single(node)
    raise RuntimeError(f"no dense node in the compiled graph:\n{cm.graph}")


def bench(
    shapes: list[DenseShape],
    threads: int,
    repeat: int,
    target: dict[str, Any],
    block: int = 10,
    warm: int = 3,
) -> list[dict[str, Any]]:
    """Measure every shape; returns one row per shape (ms medians, ratio, GFLOP/s)."""
    from .build import build_group

    rows = []
    rng = np.random.default_rng(0)
    for s in shapes:
        x = rng.standard_normal((s.m, s.k), dtype=np.float32)
        w = (rng.standard_normal((s.k, s.n), dtype=np.float32) / np.sqrt(s.k)).astype(np.float32)
        b = rng.standard_normal(s.n, dtype=np.float32)
        model = _onnx_model(s, w, b)
        fused, values = _dense_group(model)
        feeds = {"x": x}
        inputs = [feeds[v.name] if v.const is None else np.asarray(v.const) for v in values]
        t0 = time.perf_counter()
        kernel = build_group(fused, target)
        build_s = time.perf_counter() - t0
        args = kernel.prepare(inputs)
        ours_out = kernel(*inputs)[0]
        sess = _ort_session(model, threads, {}, spin=False)
        ort_out = sess.run(None, feeds)[0]
        err = float(np.abs(ours_out - ort_out).max() / max(1e-6, np.abs(ort_out).max()))
        for _ in range(5):
            kernel.func(*args)
            sess.run(None, feeds)
        t_ours: list[float] = []
        t_ort: list[float] = []
        for _ in range(max(1, repeat // block)):
            t_ours += _timed(partial(kernel.func, *args), warm, block)
            t_ort += _timed(partial(sess.run, None, feeds), warm, block)
        spin_sess = _ort_session(model, threads, {}, spin=True)
        t_spin = _timed(partial(spin_sess.run, None, feeds), 10, repeat)
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
        })  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point: print the table."""
    ap = bench_arguments(__doc__.splitlines()[0])
    ap.add_argument("--only", default=None, help="run the shapes whose name contains this")
    args = ap.parse_args(argv)
    target = bench_target(args)
    shapes = [s for s in SHAPES if args.only is None or args.only in s.name]
    rows = bench(shapes, args.threads, args.repeat, target)
    head = (
        f"{'shape':<28} {'ours':>6} {'ORT':>6} {'ratio':>5} {'GF/s':>5} {'ORT':>5} | "
        f"{'ORT ns':>6} {'ORT sp':>6} | {'min':>6} {'ORT':>6} {'ratio':>5} | {'err':>7}  tile"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        cfg = r["config"]
        tile = "-" if cfg is None else f"mb={cfg.mb} nvec={cfg.nvec} kc={cfg.kc}"
        print(
            f"{r['shape']:<28} {r['ours_ms']:6.3f} {r['ort_ms']:6.3f} {r['ratio']:5.2f} "
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
