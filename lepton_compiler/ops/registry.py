"""The op registry: one `OpDef` per op, looked up by `(domain, op_type)`.

Standard ONNX ops get a definition built on demand from ONNX's own schema (attribute defaults,
type inference) and `onnx.reference` kernels (see `onnx_bridge`); family modules (`nn`, `math`,
`tensor`, `reduce`, `quant`, `fused`) register categories, faster kernels and fixes on top.
Our own ops (domain ``lepton``) are defined completely in their family module.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..ir import Node, Value, ValueType

#: ``reference(node, inputs, scope) -> outputs``: numpy semantics of one node. ``scope`` maps
#: values of enclosing graphs to their runtime contents (for ops with subgraphs).
ReferenceFn = Callable[["Node", list[Any], Mapping["Value", Any]], list[Any]]
#: ``infer(node) -> output types`` (None entries where nothing is known).
InferFn = Callable[["Node"], "Sequence[ValueType | None]"]

#: Op categories used by fusion (in the spirit of TVM's OpPattern).
CATEGORIES = ("elementwise", "broadcast", "injective", "reduction", "complex", "opaque")


@dataclass
class OpDef:
    """Everything the compiler knows about one op.

    Attributes:
        domain: "" for ai.onnx, "lepton" for our own ops.
        op_type: name within the domain.
        category: fusion category, one of `CATEGORIES`.
        infer: output-type inference, None when the op gives no inference.
        reference: the numpy semantics (the oracle and the fallback kernel).
        defaults: attribute defaults filled in at import (for standard ops: ONNX's schema).
        commutative: the first two inputs may be swapped (pattern rules use this).
        doc: one-line description.
    """

    domain: str
    op_type: str
    category: str = "opaque"
    infer: InferFn | None = None
    reference: ReferenceFn | None = None
    defaults: Callable[[int | None], dict[str, Any]] | None = None
    commutative: bool = False
    doc: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def op(self) -> str:
        """Qualified name (``Conv``, ``lepton.Fused``)."""
        return f"{self.domain}.{self.op_type}" if self.domain else self.op_type


_DEFS: dict[tuple[str, str], OpDef] = {}
_OVERRIDES: dict[tuple[str, str], dict[str, Any]] = {}
_loaded = False


def _split(op: str, domain: str | None) -> tuple[str, str]:
    if domain is not None:
        return domain, op
    dom, _, name = op.rpartition(".")
    return dom, name


def define(op: str, *, domain: str | None = None, **fields: Any) -> OpDef:
    """Register a complete definition (used for our own `lepton.*` ops)."""
    dom, name = _split(op, domain)
    d = OpDef(dom, name, **fields)
    _DEFS[(dom, name)] = d
    return d


def override(op: str, *, domain: str | None = None, **fields: Any) -> None:
    """Set fields (category, reference, infer, ...) on top of a standard op's definition."""
    key = _split(op, domain)
    _OVERRIDES.setdefault(key, {}).update(fields)
    if key in _DEFS:
        for k, v in fields.items():
            setattr(_DEFS[key], k, v)


def reference_kernel(op: str, *, domain: str | None = None) -> Callable[[ReferenceFn], ReferenceFn]:
    """Decorator: register `fn` as the reference kernel of a standard op."""

    def deco(fn: ReferenceFn) -> ReferenceFn:
        override(op, domain=domain, reference=fn)
        return fn

    return deco


def _ensure_families() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        from . import composite, control, fused, math, nn, quant, reduce, tensor  # noqa: F401
        from .quant_ms import MS_DOMAIN  # noqa: F401  (defines the com.microsoft ops)


def lookup(domain: str, op_type: str) -> OpDef | None:
    """The definition of an op, or None when the op is unknown."""
    _ensure_families()
    key = (domain, op_type)
    d = _DEFS.get(key)
    if d is not None:
        return d
    from . import onnx_bridge

    if not onnx_bridge.has_schema(domain, op_type):
        return None
    d = OpDef(
        domain,
        op_type,
        infer=onnx_bridge.infer_node,
        reference=onnx_bridge.run_node,
        defaults=lambda version, _d=domain, _o=op_type: onnx_bridge.attribute_defaults(
            _d, _o, version
        ),
        doc=onnx_bridge.summary(domain, op_type),
    )
    for k, v in _OVERRIDES.get(key, {}).items():
        setattr(d, k, v)
    _DEFS[key] = d
    return d


def lookup_node(node: Node) -> OpDef | None:
    """The definition of a node's op."""
    return lookup(node.domain, node.op_type)


def registered_ops() -> list[OpDef]:
    """Every definition created so far plus every op with an override (for coverage lists)."""
    _ensure_families()
    for dom, name in list(_OVERRIDES):
        lookup(dom, name)
    return sorted(_DEFS.values(), key=lambda d: (d.domain, d.op_type))
