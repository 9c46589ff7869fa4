"""Quantize before MaxPool: ``QuantizeLinear(MaxPool(x), s, z)`` → ``MaxPool(QuantizeLinear(x,
s, z))``.

A per-tensor QuantizeLinear is monotone non-decreasing, so it commutes exactly with a maximum;
MaxPool's padding is ``-inf``, which quantizes to the dtype's minimum, the value an 8-bit
MaxPool pads with. The pool then reads and writes 8-bit data (a quarter of the float traffic)
and the QuantizeLinear joins the producer's group as its epilogue (in a quantized CNN, the
stem's ``QConv + Relu`` stores uint8 instead of float). On a pre-quantized model's
``DequantizeLinear → MaxPool → QuantizeLinear`` (the same scale in and out), the rewrite
leaves an exact ``QuantizeLinear(DequantizeLinear(q))`` round trip that ``lower_qdq`` removes,
so the pool runs on the quantized tensor directly.

The rewrite applies when the MaxPool has no Indices output, its output is not a graph output,
and every reader of it is a QuantizeLinear (as its data input) with the same constant scalar
scale and zero point, attributes and 8-bit output dtype; all of them then read the new 8-bit
MaxPool. Other readers of ``x`` keep reading the float tensor. AveragePool is never rewritten
(rounding does not commute with a mean).
"""

from __future__ import annotations

import numpy as np

from lepton_compiler.ir import Node, Value
from lepton_compiler.ops.infer import refresh_types
from lepton_compiler.pass_manager import NodePass, PassContext, register_pass

from .lower import same_constant

_EIGHT_BIT = ("uint8", "int8")
#: ONNX TensorProto element types of QuantizeLinear's ``output_dtype`` attribute.
_ONNX_DTYPES = {2: "uint8", 3: "int8"}


def _scalar(v: Value | None) -> np.ndarray | None:
    """`v`'s constant payload when it holds exactly one element, else None."""
    if v is None or v.const is None:
        return None
    arr = np.asarray(v.const)
    return arr if arr.size == 1 else None


def _zero_point(q: Node) -> Value | None:
    """The QuantizeLinear's zero-point input, None when omitted."""
    return q.inputs[2] if len(q.inputs) > 2 else None


def _output_dtype(q: Node) -> str | None:
    """The QuantizeLinear's output dtype name: the zero point's dtype, else the
    ``output_dtype`` attribute, else uint8 (the ONNX default)."""
    zp = _zero_point(q)
    if zp is not None:
        arr = _scalar(zp)
        return None if arr is None else arr.dtype.name
    code = int(q.attrs.get("output_dtype", 0) or 0)
    return _ONNX_DTYPES.get(code) if code else "uint8"


def _per_tensor(q: Node) -> bool:
    """A QuantizeLinear with a constant scalar scale (and zero point) into uint8/int8,
    saturating and not blocked."""
    if _scalar(q.inputs[1] if len(q.inputs) > 1 else None) is None:
        return False
    if int(q.attrs.get("block_size", 0) or 0) or int(q.attrs.get("saturate", 1)) != 1:
        return False
    return _output_dtype(q) in _EIGHT_BIT


def _same_quantization(a: Node, b: Node) -> bool:
    """Whether two QuantizeLinear nodes compute the same function of their input."""
    return (
        same_constant(a.inputs[1], b.inputs[1])
        and same_constant(_zero_point(a), _zero_point(b))
        and dict(a.attrs) == dict(b.attrs)
        and _output_dtype(a) == _output_dtype(b)
    )


def _readers(pool: Node) -> list[Node] | None:
    """The QuantizeLinear readers of the MaxPool's output when the rewrite applies to them,
    else None."""
    y = pool.outputs[0]
    if y.is_graph_output() or not y.uses:
        return None
    if any(u.op != "QuantizeLinear" or i != 0 for u, i in y.uses):
        return None
    readers = list(dict.fromkeys(u for u, _ in y.uses))
    first = readers[0]
    if not _per_tensor(first) or not all(_same_quantization(first, q) for q in readers[1:]):
        return None
    return readers


def _applies(pool: Node) -> bool:
    """A single-output MaxPool reading a float tensor."""
    if pool.op != "MaxPool" or len(pool.outputs) != 1 or not pool.inputs:
        return False
    x = pool.inputs[0]
    return x is not None and x.dtype is not None and x.dtype.is_float


def _swap(pool: Node, readers: list[Node]) -> None:
    """Quantize the pool's input with the readers' parameters and pool the 8-bit tensor;
    every reader's output becomes the new pool's output."""
    graph = pool.graph
    assert graph is not None
    first = readers[0]
    x = pool.inputs[0]
    assert x is not None
    q_name, pool_name, out_name = first.name, pool.name, first.output.name
    quant = Node(
        "QuantizeLinear",
        [x, *first.inputs[1:]],
        first.attrs,
        outputs=[Value(graph.unique_name(f"{x.name}_quantized"))],
        name=graph.unique_name(q_name or "QuantizeLinear"),
    )
    new_pool = Node(
        "MaxPool",
        [quant.output],
        pool.attrs,
        outputs=[Value(graph.unique_name(out_name or "pooled"))],
        name=graph.unique_name(pool_name or "MaxPool"),
    )
    graph.insert_before(pool, [quant, new_pool])
    refresh_types(quant)
    refresh_types(new_pool)
    for q in readers:
        graph.replace_value(q.output, new_pool.output)
    graph.remove(readers)
    graph.remove(pool)
    if q_name:
        quant.name = q_name
    if pool_name:
        new_pool.name = pool_name
    if out_name and new_pool.output.name != out_name and graph.find_value(out_name) is None:
        new_pool.output.name = out_name


@register_pass
class QuantizeBeforeMaxPoolPass(NodePass):
    """Move a per-tensor QuantizeLinear from a MaxPool's output to its input, so the pool runs
    on 8-bit data (exact: quantization is monotone)."""

    name = "quantize_before_maxpool"

    def visit(self, node: Node, ctx: PassContext) -> bool:
        if node.graph is None or not _applies(node):
            return False
        readers = _readers(node)
        if readers is None:
            return False
        _swap(node, readers)
        return True
