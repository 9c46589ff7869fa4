"""Which nodes int8 quantization takes, and how their operands are laid out.

A *layer* is a Conv, Gemm, MatMul or ``lepton.MatMulAdd`` with a float activation operand
and constant float weights: exactly the ops the integer kernels (``lepton.QConv``,
``lepton.QMatMul``) compute. The description says where the activation, weight and bias sit
and which weight axis holds the output channels (the per-channel scale axis).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lepton_compiler.ir import DType, Graph, Node, TensorType, Value

#: Ops a layer can be.
LAYER_OPS = ("Conv", "Gemm", "MatMul", "lepton.MatMulAdd")


@dataclass(frozen=True)
class Layer:
    """A quantizable node.

    Attributes:
        node: the Conv/Gemm/MatMul/MatMulAdd node.
        weight_axis: the output-channel axis of its weight tensor.
        has_bias: input 2 is a constant 1-D bias over the output channels.
    """

    node: Node

    weight_axis: int
    has_bias: bool

    @property
    def grouped(self) -> bool:
        """A grouped (e.g. depthwise) convolution."""
        return self.node.op == "Conv" and int(self.node.attrs.get("group", 1) or 1) > 1

    @property
    def activation(self) -> Value:
        """The activation operand (input 0)."""
        v = self.node.inputs[0]
        assert v is not None
        return v

    @property
    def weight(self) -> Value:
        """The constant weight operand (input 1)."""
        v = self.node.inputs[1]
        assert v is not None
        return v


def _float_tensor(v: Value | None) -> bool:
    return v is not None and isinstance(v.type, TensorType) and v.type.dtype == DType.FLOAT32


def _const(v: Value | None) -> np.ndarray | None:
    return None if v is None or v.const is None else np.asarray(v.const)


def as_layer(node: Node) -> Layer | None:
    """The node as a quantizable layer, or None when int8 kernels cannot compute it."""
    if node.op not in LAYER_OPS or len(node.inputs) < 2:
        return None
    x, w = node.inputs[0], node.inputs[1]
    wc = _const(w)
    if not _float_tensor(x) or x is None or x.const is not None or wc is None:
        return None
    if wc.dtype != np.float32:
        return None
    bias = node.inputs[2] if len(node.inputs) > 2 else None
    bc = _const(bias)
    if bias is not None and bc is None:
        return None  # a run-time bias: not a layer we take
    if node.op == "Conv":
        if wc.ndim not in (3, 4):
            return None
        axis, channels = 0, wc.shape[0]
    else:
        if wc.ndim != 2 or node.attrs.get("transA", 0):
            return None
        if node.op == "Gemm" and (
            float(node.attrs.get("alpha", 1.0)) != 1.0
            or (bias is not None and float(node.attrs.get("beta", 1.0)) != 1.0)
        ):
            return None
        axis = 0 if node.attrs.get("transB", 0) else 1
        channels = wc.shape[axis]
    has_bias = bc is not None and bc.size == channels and bc.reshape(-1).shape[0] == channels
    if bc is not None and not has_bias:
        return None  # a bias that broadcasts over more than the output channels
    if (
        bc is not None
        and bc.ndim > 1
        and not (node.op != "Conv" and bc.ndim == 2 and bc.shape[0] == 1)
    ):
        return None
    return Layer(node, axis, has_bias)


def find_layers(graph: Graph) -> list[Layer]:
    """Every quantizable layer of the top-level graph, in graph order."""
    return [layer for node in graph if (layer := as_layer(node)) is not None]
