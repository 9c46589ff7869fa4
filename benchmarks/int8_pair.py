"""Our int8 model against ONNX Runtime's int8 model, just the two, in blocks.

``python -m benchmarks.int8_pair --model resnet50 [--rounds 20] [--block 10] [--threads 2]``

The full runner (`benchmarks.runner`) interleaves every configuration run by run; with our
TVM kernels in the same rotation, ONNX Runtime's int8 session ran slower there than alone
(ResNet-50: about 20 ms against 12.5 ms), which would flatter our ratio. This script gives
the conservative figure: both models built as the runner builds them (ONNX Runtime's QDQ
U8S8 per-channel model from `runner.int8_model`; ours compiled with ``Int8Config`` on the
same four random calibration inputs, MinMax), then timed in alternating blocks of `block`
runs after one untimed run each, for `rounds` rounds. It prints both medians and the median
of the per-round ratios (ours / ONNX Runtime's; below 1 means faster).
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import numpy as np


def main() -> None:
    """Parse the command line, build both models, time them, print the figures."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet50", help="a model of benchmarks.models")
    p.add_argument("--backend", default="tvm", help="our backend (default tvm)")
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--block", type=int, default=10, help="timed runs per block")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    os.environ.setdefault("TVM_NUM_THREADS", str(args.threads))
    warnings.simplefilter("ignore")

    import onnx

    import lepton_compiler

    from .models import build
    from .runner import (
        CALIBRATION_SAMPLES,
        ModelContext,
        _ort_session,
        input_specs,
        int8_model,
        make_inputs,
    )

    path = build(args.model)
    specs = input_specs(onnx.load(path))
    x = make_inputs(specs, seed=0)
    outputs = [o.name for o in onnx.load(path, load_external_data=False).graph.output]
    ctx = ModelContext(args.model, path, specs, x, outputs, args.threads)
    qpath, _ = int8_model(ctx)
    samples = [make_inputs(specs, seed=s) for s in range(1, CALIBRATION_SAMPLES + 1)]
    config = lepton_compiler.Int8Config(calibration=samples, method="minmax", eval_samples=1)
    ours = lepton_compiler.compile(str(path), backend=args.backend, quantize=config)
    session = _ort_session(qpath, args.threads)
    feeds = ours.check_inputs(x)

    def block(run: object) -> float:
        run()  # type: ignore[operator]
        times = []
        for _ in range(args.block):
            start = time.perf_counter()
            run()  # type: ignore[operator]
            times.append(time.perf_counter() - start)
        return float(np.median(times) * 1e3)

    a, b = [], []
    for _ in range(args.rounds):
        a.append(block(lambda: ours.run(feeds)))
        b.append(block(lambda: session.run(None, x)))
    ratio = float(np.median(np.array(a) / np.array(b)))
    print(
        f"{args.model}: lepton-{args.backend}-int8 {np.median(a):.2f} ms, ONNX Runtime int8 "
        f"{np.median(b):.2f} ms, ratio {ratio:.3f} ({args.rounds} rounds of {args.block})"
    )


if __name__ == "__main__":
    main()
