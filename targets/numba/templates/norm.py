"""Row-wise normalizations: Softmax (last axis), LayerNormalization and lepton.SkipLayerNorm,
with the group's element-wise epilogue fused into the last pass over each row.

Parallel over rows; each row is read once to sum (the residual add of SkipLayerNorm is
written to the output on the way, so the later passes read it from cache), once for the
variance (or the exponentials' sum), once to normalize and store.
"""

from __future__ import annotations

import math

from lepton_compiler.errors import LoweringError
from lepton_compiler.ir import Graph, Node, TensorType

from ..emit import Constants, Lines, module_text
from ..epilogue import Chain, static_shape
from . import KernelSource

NAME = "norm"
ANCHORS = ("Softmax", "LayerNormalization", "lepton.SkipLayerNorm")


def plan(fused: Node, tiles: int = 1) -> KernelSource:
    """Write the normalization and its epilogue (see the module docstring).

    Raises:
        LoweringError: not float32, Softmax over another axis than the last, extra outputs
            (LayerNormalization's mean), operands that broadcast along rows, or an epilogue
            the chain table cannot write.
    """
    body: Graph = fused.attrs["body"]
    node = next(iter(body))
    if node.op not in ANCHORS or len(node.outputs) != 1 or not node.inputs:
        raise LoweringError(f"{fused.name}: not a normalization group with one output")
    body_in = {bv: i for i, bv in enumerate(body.inputs)}
    for v in node.inputs:
        if v is None:
            continue
        if v not in body_in:
            raise LoweringError(f"{fused.name}: {node.op} reads a value made inside the group")
        if not isinstance(v.type, TensorType) or v.type.dtype.name != "FLOAT32":
            raise LoweringError(f"{fused.name}: only float32 normalizations have a template")
    xs = static_shape(node.inputs[0])
    if len(xs) == 0 or 0 in xs:
        raise LoweringError(f"{fused.name}: empty or scalar input")
    r = len(xs)
    axis = int(node.attrs.get("axis", -1))
    axis = axis + r if axis < 0 else axis
    if node.op != "LayerNormalization" and axis != r - 1:
        raise LoweringError(f"{fused.name}: {node.op} over a non-last axis has no template")
    if node.op == "lepton.SkipLayerNorm":
        axis = r - 1
    rows, d = math.prod(xs[:axis]), math.prod(xs[axis:])
    present = [(k, v) for k, v in enumerate(node.inputs) if v is not None]
    anchor_in = [body_in[v] for _, v in present]
    chain = Chain.plan(
        fused,
        (node.op,),
        groups=lambda o, s: [list(range(axis)), list(range(axis, r))],
        skip_inputs=anchor_in,
    )
    names: list[str] = []
    shapes: list[tuple[int, ...]] = []
    for k, v in present:
        size = math.prod(static_shape(v))
        if k == 0 or (node.op == "lepton.SkipLayerNorm" and k == 1):
            if static_shape(v) != xs if k == 1 else False:
                raise LoweringError(f"{fused.name}: the skip input must have the input's shape")
            names.append("x" if k == 0 else "skip")
            shapes.append((rows, d))
        else:
            if size != d:
                raise LoweringError(f"{fused.name}: input {k} must hold one value per column")
            names.append(
                {1: "scale", 2: "bias"}[k]
                if node.op == "LayerNormalization"
                else {2: "gamma", 3: "beta", 4: "bias"}[k]
            )
            shapes.append((d,))
    consts = Constants()
    code = Lines()
    code(f"for i in prange({rows}):").indent()
    if node.op == "Softmax":
        _softmax(code, consts, d)
    else:
        _layer_norm(code, consts, node, d, set(names))
    value = chain.lines(code, consts, "acc", ["i", "j"])
    code(f"out[i, j] = {value}")
    ops = chain.operands
    label = {"Softmax": "softmax", "LayerNormalization": "layer_norm"}.get(
        node.op, "skip_layer_norm"
    )
    doc = [
        f"{node.op} over the last {r - axis} axis/axes of {list(xs)} ({rows} rows of {d}); "
        f"epilogue: {' -> '.join(chain.ops) or 'none'}."
    ]
    return KernelSource(
        name=label,
        source=module_text(doc, label, [*names, *(o.name for o in ops), "out"], code, consts),
        input_indices=[*anchor_in, *(o.index for o in ops)],
        param_shapes=[*shapes, *(o.shape for o in ops)],
        param_dtypes=["float32"] * len(names) + [o.dtype for o in ops],
        output_shapes=[(rows, d)],
        output_dtypes=["float32"],
        ops=[node.op, *chain.ops],
    )


def _softmax(code: Lines, consts: Constants, d: int) -> None:
    code(f"m = {consts(-math.inf)}")
    code(f"for j in range({d}):").indent()
    code("m = max(m, x[i, j])").dedent()
    code(f"s = {consts(0.0)}")
    code(f"for j in range({d}):").indent()
    code("e = math.exp(x[i, j] - m)", "out[i, j] = e", "s += e").dedent()
    code(f"inv = {consts(1.0)} / s")
    code(f"for j in range({d}):").indent()
    code("acc = out[i, j] * inv")


def _layer_norm(code: Lines, consts: Constants, node: Node, d: int, names: set[str]) -> None:
    eps = float(node.attrs.get("epsilon", 1e-5))
    skip = node.op == "lepton.SkipLayerNorm"
    code(f"mean = {consts(0.0)}")
    code(f"for j in range({d}):").indent()
    if skip:
        code(
            "s = x[i, j] + bias[j] + skip[i, j]" if "bias" in names else "s = x[i, j] + skip[i, j]"
        )
        code("out[i, j] = s", "mean += s").dedent()
        src = "out"
    else:
        code("mean += x[i, j]").dedent()
        src = "x"
    code(f"mean = mean * {consts(1.0 / d)}")
    code(f"var = {consts(0.0)}")
    code(f"for j in range({d}):").indent()
    code(f"t = {src}[i, j] - mean", "var += t * t").dedent()
    code(f"inv = {consts(1.0)} / math.sqrt(var * {consts(1.0 / d)} + {consts(eps)})")
    code(f"for j in range({d}):").indent()
    scale = "gamma" if skip else "scale"
    shift = "beta" if skip else "bias"
    acc = f"({src}[i, j] - mean) * inv * {scale}[j]"
    code(f"acc = {acc} + {shift}[j]" if shift in names else f"acc = {acc}")
