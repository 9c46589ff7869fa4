"""Time our int8 kernels (``lepton.QConv`` / ``lepton.QMatMul`` groups, `kernels.qconv`,
`kernels.qdense`) against ONNX Runtime's int8 on ResNet-50's conv shapes and BERT-base's
matrix products.

Run as ``python -m lepton_compiler.targets.tvm.bench_qconv [--threads 2] [--repeat 200]
[--set resnet50,bert] [--only TEXT] [--mcpu NAME]``.

Each case is one layer in its in-model form: uint8 activations, int8 per-channel weights,
int32 bias, then ReLU (convs) and a QuantizeLinear to uint8. ONNX Runtime runs the same
layer as a QDQ model (``DequantizeLinear`` of x, of the weights (per-channel) and of the
bias, ``Conv``/``MatMul``, ``Relu``, ``QuantizeLinear``), which its graph optimizer turns
into ``QLinearConv``/``QLinearMatMul``; its fp32 time for the same layer (``Conv+Relu``,
``MatMul``) is printed too, for its own int8 speed-up. Ours and ORT's int8 run interleaved in
blocks (as `bench_conv`, which documents why; ORT's default spinning configuration is timed
alone and the faster ORT median counts). Ratio = ours / ORT int8: below 1 means faster.
GOP/s counts two operations per multiply-add. Outputs are compared (uint8, at most one unit
apart where ORT's requantization rounds differently).

Measured on the 2-core AMD EPYC (Zen 4, AVX-512 VNNI) with other jobs running
(``--threads 2 --repeat 100``, medians; ratios are steadier than times; full table in
docs/tvm-backend.md, "int8 kernels"):

- ResNet-50's 23 conv shapes (`RESNET50` and `RESNET50_MORE`): 540-880 GOP/s (3x3 convs
  710-880, 1x1 540-840, the 7x7/2 stem on 3 channels 490; the tiny 1x1 64->64 on 56x56
  300); 2.3-8x faster than ORT's fp32 conv (whole-model ORT int8 is 2-2.8x faster than its
  fp32); 0.11-0.38x the time of ORT's single-layer QDQ conv (geometric mean 0.19), which
  pays NCHW<->NHWC transposes that a whole model avoids (it is 0.4-1.7x as fast as ORT's
  own fp32 conv).
- BERT-base's products (128x768x768, 128x768x3072, 128x3072x768): 835-915 GOP/s, 0.84,
  0.97 and 0.90x the time of ORT's ``QLinearMatMul``.
- Outputs: equal to ORT's or one unit apart on convs, up to 3 units on the products
  (ORT requantizes with its own rounding; ours matches the reference kernels).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from .bench_conv import RESNET50, Shape, _timed, bench_arguments, bench_target


@dataclass(frozen=True)
class MatShape:
    """One matrix product: rows x K times K x N."""

    name: str
    rows: int
    k: int
    n: int

    @property
    def flops(self) -> int:
        return 2 * self.rows * self.k * self.n


#: ResNet-50 conv shapes that `RESNET50` (one per distinct fp32 schedule case) leaves out
#: but the int8 model runs, several of them many times (in brackets).
RESNET50_MORE = [
    Shape("64->64 1x1 56", 64, 64, 56, 1, 1, 0),
    Shape("256->128 1x1 56", 256, 128, 56, 1, 1, 0),
    Shape("512->256 1x1 28", 512, 256, 28, 1, 1, 0),
    Shape("256->1024 1x1 14 [x6]", 256, 1024, 14, 1, 1, 0),
    Shape("1024->512 1x1 14", 1024, 512, 14, 1, 1, 0),
]

BERT = [
    MatShape("bert qkv/out 128x768x768", 128, 768, 768),
    MatShape("bert ffn1 128x768x3072", 128, 768, 3072),
    MatShape("bert ffn2 128x3072x768", 128, 3072, 768),
]

X_SCALE, X_ZP, Y_SCALE, Y_ZP = 0.02, 110, 0.03, 5


def _weights(rng: np.random.Generator, shape: tuple[int, ...], channels: int) -> tuple:
    w = rng.integers(-127, 128, shape).astype(np.int8)
    ws = rng.uniform(0.0005, 0.002, channels).astype(np.float32)
    b = rng.integers(-2000, 2000, channels).astype(np.int32)
    return w, ws, b


def _ours_graph(kind: str, shape: Any, w: np.ndarray, ws: np.ndarray, b: np.ndarray) -> Any:
    """The layer as a lepton.Fused group (integer op, Relu for convs, QuantizeLinear)."""
    from lepton_compiler.ir import DType, Graph, TensorType, Value
    from lepton_compiler.ops.infer import refresh_types
    from lepton_compiler.pass_manager import PassContext
    from lepton_compiler.passes.fusion.group import GroupFusionPass

    g = Graph(opset_imports={"": 18})
    if kind == "conv":
        x_shape: tuple[int, ...] = (1, shape.c, shape.hw, shape.hw)
    else:
        x_shape = (shape.rows, shape.k)
    x = g.add_input(Value("x", TensorType(DType.UINT8, x_shape)))
    ins = [x, g.add_constant(np.float32(X_SCALE)), g.add_constant(np.uint8(X_ZP)),
           g.add_constant(w), g.add_constant(ws), g.add_constant(b)]  # fmt: skip

    def add(op: str, inputs: list, **attrs: Any) -> Any:
        node = g.make_node(op, inputs, attrs)
        refresh_types(node)
        return node.outputs[0]

    if kind == "conv":
        y = add("lepton.QConv", ins, strides=[shape.stride] * 2, pads=[shape.pad] * 4)
        y = add("Relu", [y])
    else:
        y = add("lepton.QMatMul", ins)
    y = add("QuantizeLinear", [y, g.add_constant(np.float32(Y_SCALE)),
                               g.add_constant(np.uint8(Y_ZP))])  # fmt: skip
    g.outputs = [y]
    GroupFusionPass()(g, PassContext())
    (fused,) = [n for n in g if n.op == "lepton.Fused"]
    return fused


def _ort_models(kind: str, shape: Any, w: np.ndarray, ws: np.ndarray, b: np.ndarray) -> tuple:
    """(QDQ int8 model, fp32 model) of the layer, weights as initializers."""
    from onnx import TensorProto, helper, numpy_helper

    def init(name: str, arr: Any) -> Any:
        return numpy_helper.from_array(np.asarray(arr), name)

    if kind == "conv":
        x_shape = [1, shape.c, shape.hw, shape.hw]
        o = (shape.hw + 2 * shape.pad - shape.k) // shape.stride + 1
        y_shape = [1, shape.m, o, o]
        attrs = {"pads": [shape.pad] * 4, "strides": [shape.stride] * 2}
        op, w_axis, b_scale = "Conv", 0, ws * np.float32(X_SCALE)
    else:
        x_shape, y_shape = [shape.rows, shape.k], [shape.rows, shape.n]
        attrs, op, w_axis, b_scale = {}, "MatMul", 1, ws * np.float32(X_SCALE)
    q_nodes = [
        helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["x"]),
        helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["w"], axis=w_axis),
    ]
    inits = [init("xs", np.float32(X_SCALE)), init("xz", np.uint8(X_ZP)), init("wq", w),
             init("ws", ws), init("wz", np.zeros(ws.shape, np.int8)),
             init("ys", np.float32(Y_SCALE)), init("yz", np.uint8(Y_ZP))]  # fmt: skip
    if kind == "conv":
        q_nodes.append(helper.make_node("DequantizeLinear", ["bq", "bs", "bz"], ["b"], axis=0))
        inits += [init("bq", b), init("bs", b_scale.astype(np.float32)),
                  init("bz", np.zeros(b.shape, np.int32))]  # fmt: skip
        q_nodes += [helper.make_node(op, ["x", "w", "b"], ["c"], **attrs),
                    helper.make_node("Relu", ["c"], ["r"])]  # fmt: skip
        last = "r"
    else:
        q_nodes.append(helper.make_node(op, ["x", "w"], ["c"]))
        last = "c"
    q_nodes.append(helper.make_node("QuantizeLinear", [last, "ys", "yz"], ["y"]))
    qgraph = helper.make_graph(
        q_nodes, "q", [helper.make_tensor_value_info("xq", TensorProto.UINT8, x_shape)],
        [helper.make_tensor_value_info("y", TensorProto.UINT8, y_shape)], inits,
    )  # fmt: skip
    wf = w.astype(np.float32) * (ws.reshape(-1, 1, 1, 1) if kind == "conv" else ws)
    f_nodes = [helper.make_node(op, ["x", "w"], ["y"], **attrs)]
    f_inits = [init("w", wf.astype(np.float32))]
    fgraph = helper.make_graph(
        f_nodes, "f", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)], f_inits,
    )  # fmt: skip
    models = []
    for graph in (qgraph, fgraph):
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
        m.ir_version = 9
        models.append(m)
    return tuple(models)


def _session(model: Any, threads: int, spin: bool) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if not spin:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])  # fmt: skip


def bench_one(kind: str, shape: Any, threads: int, repeat: int, target: dict[str, Any],
              block: int = 10, warm: int = 3) -> dict[str, Any]:  # fmt: skip
    """Measure one layer: ours vs ORT int8 (interleaved), ORT int8 alone with spinning, ORT
    fp32 alone."""
    from .build import build_group

    rng = np.random.default_rng(0)
    if kind == "conv":
        w, ws, b = _weights(rng, (shape.m, shape.c, shape.k, shape.k), shape.m)
        x = rng.integers(0, 256, (1, shape.c, shape.hw, shape.hw)).astype(np.uint8)
    else:
        w, ws, b = _weights(rng, (shape.k, shape.n), shape.n)
        x = rng.integers(0, 256, (shape.rows, shape.k)).astype(np.uint8)
    fused = _ours_graph(kind, shape, w, ws, b)
    t0 = time.perf_counter()
    kernel = build_group(fused, target)
    build_s = time.perf_counter() - t0
    inputs = [x if v.const is None else np.asarray(v.const) for v in fused.inputs]
    args = kernel.prepare(inputs)
    qmodel, fmodel = _ort_models(kind, shape, w, ws, b)
    sess = _session(qmodel, threads, spin=False)
    ours_out = kernel(*inputs)[0]
    ort_out = sess.run(None, {"xq": x})[0]
    diff = int(np.abs(ours_out.astype(np.int32) - ort_out.astype(np.int32)).max())
    for _ in range(5):
        kernel.func(*args)
        sess.run(None, {"xq": x})
    t_ours: list[float] = []
    t_ort: list[float] = []
    for _ in range(max(1, repeat // block)):
        t_ours += _timed(partial(kernel.func, *args), warm, block)
        t_ort += _timed(partial(sess.run, None, {"xq": x}), warm, block)
    spin = _session(qmodel, threads, spin=True)
    t_spin = _timed(partial(spin.run, None, {"xq": x}), 10, repeat)
    fsess = _session(fmodel, threads, spin=True)
    xf = x.astype(np.float32) * np.float32(X_SCALE)
    t_f32 = _timed(partial(fsess.run, None, {"x": xf}), 10, repeat)
    ours, ort_ns, ort_sp, ort_f = (float(np.median(t)) * 1e3
                                   for t in (t_ours, t_ort, t_spin, t_f32))  # fmt: skip
    ort_ms = min(ort_ns, ort_sp)
    return {
        "shape": shape.name, "ours_ms": ours, "ort_ms": ort_ms, "ratio": ours / ort_ms,
        "ort_f32_ms": ort_f, "ort_speedup": ort_f / ort_ms,
        "gops": shape.flops / ours / 1e6, "ort_gops": shape.flops / ort_ms / 1e6,
        "max_diff": diff, "build_s": build_s, "config": kernel.config,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point: print the table."""
    ap = bench_arguments(__doc__.splitlines()[0])
    ap.add_argument("--set", default="resnet50,bert", help="comma-separated: resnet50, bert")
    ap.add_argument("--only", default="", help="keep shapes whose name contains this text")
    args = ap.parse_args(argv)
    target = bench_target(args)
    cases: list[tuple[str, Any]] = []
    for name in args.set.split(","):
        if name.strip() == "resnet50":
            cases += [("conv", s) for s in RESNET50 + RESNET50_MORE]
        elif name.strip() == "bert":
            cases += [("dense", s) for s in BERT]
    cases = [(k, s) for k, s in cases if args.only in s.name]
    head = (
        f"{'shape':<26} {'ours':>6} {'ORT i8':>6} {'ratio':>5} {'GOP/s':>5} {'ORT':>5} | "
        f"{'ORT f32':>7} {'i8 x':>5} {'ours x':>6} | {'diff':>4} {'build':>5}  tile"
    )
    print(head)
    print("-" * len(head))
    rows = []
    for kind, s in cases:
        r = bench_one(kind, s, args.threads, args.repeat, target)
        rows.append(r)
        print(
            f"{r['shape']:<26} {r['ours_ms']:6.3f} {r['ort_ms']:6.3f} {r['ratio']:5.2f} "
            f"{r['gops']:5.0f} {r['ort_gops']:5.0f} | {r['ort_f32_ms']:7.3f} "
            f"{r['ort_speedup']:5.2f} {r['ort_f32_ms'] / r['ours_ms']:6.2f} | "
            f"{r['max_diff']:4d} {r['build_s']:5.2f}  {r['config']}",
            flush=True,
        )
    print("(ms, medians; ratio = ours / ORT int8; i8 x, ours x = ORT fp32 time / ORT int8's, "
          "ours)")  # fmt: skip
    if rows:
        geo = float(np.exp(np.mean([np.log(r["ratio"]) for r in rows])))
        print(f"geometric mean ratio (ours / ORT int8): {geo:.2f}")


if __name__ == "__main__":
    main()


__all__ = ["BERT", "RESNET50_MORE", "MatShape", "Shape", "bench_one", "main"]
