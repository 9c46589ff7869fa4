"""Build standard models from the command line and describe them.

    python -m benchmarks.models                    # every model, batch 1
    python -m benchmarks.models resnet50 bert_tiny --batch batch --cache-dir /tmp/models

Prints, per model, the file written (or reused), its node count, op counts and parameters.
"""

from __future__ import annotations

import argparse
from collections import Counter

import onnx

from . import MODELS, build
from ._builder import count_parameters


def main(argv: list[str] | None = None) -> int:
    """Build the models named in `argv` (all when none) and print a summary of each.

    Args:
        argv: command-line arguments (``sys.argv[1:]`` when None).

    Returns:
        The exit status, 0.
    """
    parser = argparse.ArgumentParser(prog="python -m benchmarks.models", description=__doc__)
    parser.add_argument("names", nargs="*", help=f"models to build: {', '.join(MODELS)}")
    parser.add_argument("--batch", default="1", help="batch size, or a symbolic dim name")
    parser.add_argument("--cache-dir", default=None, help="where to write the models")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in MODELS]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(MODELS)}")
    batch: int | str = int(args.batch) if args.batch.isdigit() else args.batch
    for name in args.names or MODELS:
        path = build(name, cache_dir=args.cache_dir, batch=batch)
        model = onnx.load(path, load_external_data=False)
        ops = Counter(n.op_type for n in model.graph.node)
        print(f"{name}: {path} ({path.stat().st_size / 1e6:.1f} MB)")
        print(f"  {len(model.graph.node)} nodes, {count_parameters(model):,} parameters")
        print("  " + ", ".join(f"{op} {n}" for op, n in ops.most_common()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
