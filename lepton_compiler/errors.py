"""The error hierarchy users see.

Every failure a user can cause (a bad model, an unknown op, wrong inputs, an unwritable path)
is a `LeptonError` subclass with one readable message, so the CLI can print it without a
traceback and Python callers can catch one base class.
"""

from __future__ import annotations

from collections.abc import Iterable


class LeptonError(Exception):
    """Base class of every error Lepton Compiler raises on purpose."""


class ModelLoadError(LeptonError):
    """The model file or bytes could not be read or parsed as ONNX, or failed the checker."""


class UnsupportedOpError(LeptonError):
    """The model uses ops that Lepton Compiler does not know.

    Attributes:
        unknown: one entry per unknown op: ``(domain, op_type, opset, node_names)``.
    """

    def __init__(self, unknown: Iterable[tuple[str, str, int | None, list[str]]]) -> None:
        self.unknown = list(unknown)
        lines = []
        for domain, op_type, opset, names in self.unknown:
            where = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
            dom = domain or "ai.onnx"
            lines.append(f"  - {dom}::{op_type} (opset {opset}): {len(names)} node(s): {where}")
        super().__init__(
            f"the model uses {len(self.unknown)} unsupported op(s):\n" + "\n".join(lines)
        )


class ShapeInferenceError(LeptonError):
    """Types or shapes could not be inferred, or disagree with what the model declares."""


class VerificationError(LeptonError):
    """The IR broke one of its invariants (use links, order, names, types)."""


class PassError(LeptonError):
    """A pass failed; the message names the pass, the passes before it and the node."""


class LoweringError(LeptonError):
    """A backend could not lower part of the graph."""


class ArtifactError(LeptonError):
    """A compiled artifact could not be written, or one being loaded is corrupt or mismatched."""


class InputError(LeptonError):
    """Inputs given to a compiled model do not match its signature (names, shapes, dtypes)."""
