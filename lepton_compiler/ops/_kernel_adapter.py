"""Adapts the plain numpy kernels in `kernels/` to the registry's reference signature."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..ir import Node, Value
from .registry import ReferenceFn

KernelFn = Callable[..., list[Any]]


def adapt(kernel: KernelFn, pass_num_outputs: bool = False) -> ReferenceFn:
    """Wrap ``kernel(inputs, attrs, opset)`` as ``reference(node, inputs, scope)``.

    Args:
        kernel: the numpy kernel.
        pass_num_outputs: also pass ``num_outputs=len(node.outputs)`` (BatchNormalization
            before opset 14 picks training mode by how many outputs the node has).
    """

    def reference(node: Node, inputs: list[Any], scope: Mapping[Value, Any]) -> list[Any]:
        opset = node.graph.opset(node.domain) if node.graph is not None else None
        if pass_num_outputs:
            outs = kernel(inputs, node.attrs, opset or 18, num_outputs=len(node.outputs))
        else:
            outs = kernel(inputs, node.attrs, opset or 18)
        return list(outs[: len(node.outputs)])

    reference.__name__ = f"reference_{kernel.__name__}"
    reference.__doc__ = kernel.__doc__
    return reference
