"""Op definitions: one registry, one definition (schema, inference, reference) per op.

Look ops up with `lookup(domain, op_type)`; family modules (`nn`, `math`, `tensor`, `reduce`,
`quant`, `fused`) are loaded on the first lookup.
"""

from __future__ import annotations

from .registry import CATEGORIES, OpDef, define, lookup, lookup_node, override, registered_ops

__all__ = ["CATEGORIES", "OpDef", "define", "lookup", "lookup_node", "override",
           "registered_ops"]  # fmt: skip
