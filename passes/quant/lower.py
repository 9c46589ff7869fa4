"""Lower QDQ patterns into integer ops: ``Conv(DQ(x), DQ(w), DQ(b))`` → ``lepton.QConv`` and
``Gemm/MatMul/lepton.MatMulAdd(DQ(a), DQ(b), bias)`` → ``lepton.QMatMul``.

Runs after quantization (``quantize_int8``) and on imported pre-quantized models, before group
fusion: the integer op then anchors a group whose epilogue (ReLU, residual Add, the next
QuantizeLinear) is fused into the integer kernel's store.

A pattern is lowered when the activation's DequantizeLinear is per-tensor (scalar scale and
zero point, uint8/int8) and the weight is a constant int8 tensor (or uint8 with zero points
that center it into int8) with symmetric per-output-channel or per-tensor scales. A bias in
DequantizeLinear form with the accumulator's scale is taken as is; any other constant bias is
quantized to int32 in accumulator units (an error below half a unit, far inside int8
rounding). The node's output value keeps its name.

The pass also removes exact round trips ``QuantizeLinear(DequantizeLinear(q, s, z), s, z) →
q`` (imported QDQ models have them around every float op), and folds the
DequantizeLinear of constants that no integer op took into float constants.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lepton_compiler.ir import Graph, Node, Value
from lepton_compiler.ops.infer import refresh_types
from lepton_compiler.ops.quant import combined_scale
from lepton_compiler.pass_manager import Pass, PassContext, PassResult, register_pass

_FLOAT_OPS = ("Conv", "Gemm", "MatMul", "lepton.MatMulAdd")


def _const(v: Value | None) -> np.ndarray | None:
    return None if v is None or v.const is None else np.asarray(v.const)


def _dq(v: Value | None) -> Node | None:
    """The DequantizeLinear producing `v`, if any."""
    p = v.producer if v is not None else None
    return p if p is not None and p.op == "DequantizeLinear" else None


def _zero_point(node: Node) -> np.ndarray | None:
    if len(node.inputs) > 2 and node.inputs[2] is not None:
        return _const(node.inputs[2])
    x = node.inputs[0]
    return np.zeros((), x.const.dtype if x is not None and x.const is not None else np.uint8)


def _activation(node: Node) -> tuple[Value, Value, Value] | None:
    """``(x_q, scale, zero_point)`` of a per-tensor activation DequantizeLinear."""
    dq = _dq(node.inputs[0])
    if dq is None:
        return None
    xq, scale = dq.inputs[0], dq.inputs[1]
    sc = _const(scale)
    zp = _zero_point(dq)
    if xq is None or xq.const is not None or sc is None or sc.size != 1 or zp is None:
        return None
    if zp.size != 1 or xq.dtype is None or str(xq.dtype.numpy) not in ("uint8", "int8"):
        return None
    zv = dq.inputs[2] if len(dq.inputs) > 2 and dq.inputs[2] is not None else None
    graph = node.graph
    assert graph is not None
    if zv is None or zp.shape != ():
        zv = graph.add_constant(zp.reshape(()).astype(str(xq.dtype.numpy)), f"{xq.name}_zp")
    if sc.shape != ():
        scale = graph.add_constant(sc.reshape(()).astype(np.float32), f"{xq.name}_scale")
    return xq, scale, zv


def _weight(node: Node, out_axis: int) -> tuple[np.ndarray, np.ndarray] | None:
    """``(w_q int8, scale float32 [channels] or scalar)`` of a constant weight
    DequantizeLinear whose scales run along `out_axis` (or are per-tensor)."""
    dq = _dq(node.inputs[1])
    if dq is None:
        return None
    w, sc, zp = _const(dq.inputs[0]), _const(dq.inputs[1]), _zero_point(dq)
    if w is None or sc is None or zp is None or w.dtype not in (np.int8, np.uint8):
        return None
    axis = int(dq.attrs.get("axis", 1))
    if sc.size > 1 and (sc.ndim != 1 or axis % w.ndim != out_axis % w.ndim):
        return None
    if int(dq.attrs.get("block_size", 0) or 0):
        return None
    shape = [1] * w.ndim
    if sc.size > 1:
        shape[out_axis % w.ndim] = -1
    centered = w.astype(np.int16) - zp.astype(np.int16).reshape(shape if zp.size > 1 else ())
    if centered.min(initial=0) < -128 or centered.max(initial=0) > 127:
        return None
    return centered.astype(np.int8), sc.astype(np.float32).reshape(-1 if sc.size > 1 else ())


def _bias(node: Node, x_scale: np.ndarray, w_scale: np.ndarray, channels: int) -> Any:
    """The int32 bias ``[channels]`` in accumulator units, None when there is none, False
    when it is not a constant."""
    if len(node.inputs) < 3 or node.inputs[2] is None:
        return None
    b = node.inputs[2]
    acc = combined_scale(x_scale, w_scale, channels)
    dq = _dq(b)
    if dq is not None:
        q, sc, zp = _const(dq.inputs[0]), _const(dq.inputs[1]), _zero_point(dq)
        if q is None or sc is None or zp is None:
            return False
        if (
            q.dtype == np.int32
            and not zp.any()
            and q.size == channels
            and np.allclose(np.broadcast_to(sc.reshape(-1), (channels,)), acc, rtol=1e-6, atol=0)
        ):
            return q.reshape(-1).astype(np.int32)
        real = (q.astype(np.float64) - zp.astype(np.float64)) * sc.astype(np.float64)
    else:
        real = _const(b)
        if real is None:
            return False
    real = np.asarray(real, np.float64)
    if real.size != channels:
        return False
    q = np.rint(real.reshape(-1) / acc.astype(np.float64))
    if np.abs(q).max(initial=0) > 2**31 - 1:
        return False
    return q.astype(np.int32)


def _lower(node: Node) -> bool:
    graph = node.graph
    assert graph is not None
    if node.op not in _FLOAT_OPS or len(node.inputs) < 2:
        return False
    act = _activation(node)
    if act is None:
        return False
    if node.op == "Conv":
        out_axis = 0
    else:
        if node.attrs.get("transA", 0):
            return False
        if node.op == "Gemm" and (
            float(node.attrs.get("alpha", 1.0)) != 1.0 or float(node.attrs.get("beta", 1.0)) != 1.0
        ):
            return False
        out_axis = 0 if node.attrs.get("transB", 0) else 1
    wt = _weight(node, out_axis)
    if wt is None:
        return False
    wq, ws = wt
    if node.op != "Conv":
        if wq.ndim != 2:
            return False
        if out_axis == 0:
            wq = np.ascontiguousarray(wq.T)
    channels = wq.shape[0] if node.op == "Conv" else wq.shape[1]
    xs = _const(act[1])
    assert xs is not None
    bias = _bias(node, xs, ws, channels)
    if bias is False:
        return False
    inputs: list[Value | None] = [
        *act,
        graph.add_constant(wq, f"{node.name}_wq"),
        graph.add_constant(ws, f"{node.name}_wscale"),
    ]
    if bias is not None:
        inputs.append(graph.add_constant(bias, f"{node.name}_bias_q"))
    op, attrs = ("lepton.QConv", dict(node.attrs)) if node.op == "Conv" else ("lepton.QMatMul", {})
    old = node.output
    new = Node(op, inputs, attrs, outputs=[Value(graph.unique_name(old.name))], name=node.name)
    graph.insert_before(node, new)
    refresh_types(new)
    name = old.name
    graph.replace_value(old, new.output)
    graph.remove(node)
    if new.output.name != name:
        new.output.name = name
    return True


def same_constant(a: Value | None, b: Value | None) -> bool:
    """Both absent, the same value, or constants of equal dtype and contents (a scale or zero
    point two quantization nodes must share)."""
    if a is b:
        return True
    ca, cb = _const(a), _const(b)
    return ca is not None and cb is not None and ca.dtype == cb.dtype and np.array_equal(ca, cb)


def _round_trip(node: Node) -> bool:
    """``Q(DQ(q, s, z), s, z)`` → q (exact: dequantized values are on the grid)."""
    if node.op != "QuantizeLinear":
        return False
    dq = _dq(node.inputs[0])
    if dq is None or dq.attrs.get("axis", 1) != node.attrs.get("axis", 1):
        return False
    zq = node.inputs[2] if len(node.inputs) > 2 else None
    zd = dq.inputs[2] if len(dq.inputs) > 2 else None
    if not same_constant(node.inputs[1], dq.inputs[1]) or not same_constant(zq, zd):
        return False
    src = dq.inputs[0]
    if src is None or node.attrs.get("saturate", 1) != 1:
        return False
    if zq is None and str(src.dtype.numpy if src.dtype else "") != "uint8":
        return False
    graph = node.graph
    assert graph is not None
    graph.replace_value(node.output, src)
    graph.remove(node)
    return True


def _fold_weight_dq(node: Node) -> bool:
    """A constant's DequantizeLinear read by float ops only becomes a float constant."""
    if node.op != "DequantizeLinear" or any(v is None or v.const is None for v in node.inputs):
        return False
    if any(u.op.startswith("lepton.Q") for u in node.output.users):
        return False
    from lepton_compiler.interpreter import run_node

    graph = node.graph
    assert graph is not None
    value = np.asarray(run_node(node, {v: v.const for v in node.inputs if v is not None})[0])
    const = graph.add_constant(value, f"{node.output.name}_folded")
    const.type = node.output.type
    graph.replace_value(node.output, const)
    graph.remove(node)
    return True


@register_pass
class LowerQDQPass(Pass):
    """Turn DequantizeLinear → Conv/Gemm/MatMul patterns into integer lepton.QConv/QMatMul
    ops and drop exact Q(DQ(q)) round trips."""

    name = "lower_qdq"

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        if not any(n.op == "DequantizeLinear" for n in graph):
            return PassResult(graph, False)
        changed = False
        for node in list(graph):
            if node.graph is graph:
                changed |= _round_trip(node)
        for node in list(graph):
            if node.graph is graph:
                changed |= _lower(node)
        for node in list(graph):
            if node.graph is graph:
                changed |= _fold_weight_dq(node)
        if changed:
            for node in [
                n
                for n in graph
                if n.op == "DequantizeLinear"
                and not n.output.uses
                and not n.output.is_graph_output()
            ]:
                graph.remove(node)
            graph.remove_unused_constants()
        return PassResult(graph, changed)
