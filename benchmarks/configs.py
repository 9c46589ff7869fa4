"""The benchmark configurations: what runs a model, with which options, as plain records.

A configuration is declarative on purpose: the runner (`benchmarks.runner`) turns a record
into something runnable, and the JSON results carry the record as is, so a table row can
always be traced back to exactly what ran. Configurations whose software is missing (TVM,
Numba, OpenVINO) or not built yet (int8) stay in the matrix and are reported as
"unavailable: <why>"; they light up by themselves when the software lands.

Kinds:

``lepton``
    `lepton_compiler.compile` with options ``backend``, ``opt_level`` and ``precision``.
``onnxruntime``
    An ONNX Runtime CPU session; ``precision="int8"`` runs a QDQ model made by
    ``onnxruntime.quantization.quantize_static`` (U8S8, per-channel, cached beside the fp32
    model; see `benchmarks.runner.int8_model`). Quantizing is a one-time preparation,
    recorded per model as ``quantize_s``, not as compile time.
``tvm-stock``
    TVM's own ONNX importer (``tvm.relax.frontend.onnx.from_onnx``), ``tvm.compile`` with the
    default Relax pipeline, the Relax VM; untuned.
``openvino``
    OpenVINO's CPU plugin with the f32 inference-precision hint (its default on AMX machines
    is bf16); ``precision="int8"`` runs the same QDQ model as ONNX Runtime int8.

`BASELINE` (ONNX Runtime fp32) is every ratio's denominator and is always part of a run.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Kind = Literal["lepton", "onnxruntime", "tvm-stock", "openvino"]
KINDS: tuple[str, ...] = ("lepton", "onnxruntime", "tvm-stock", "openvino")
PRECISIONS: tuple[str, ...] = ("fp32", "int8")


@dataclass(frozen=True)
class BenchConfig:
    """One column of the benchmark matrix.

    Attributes:
        name: short unique name, used by ``--configs`` and in the tables.
        kind: which runtime runs it (see the module docstring).
        options: kind-specific options (``backend``, ``opt_level``, ``precision``...).
        description: one line for ``--list``.
    """

    name: str
    kind: Kind
    options: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown config kind {self.kind!r}; known: {', '.join(KINDS)}")
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"config {self.name!r}: precision must be one of {PRECISIONS}, "
                f"got {self.precision!r}"
            )

    @property
    def precision(self) -> str:
        """``"fp32"`` or ``"int8"`` (default fp32)."""
        return str(self.options.get("precision", "fp32"))

    def to_dict(self) -> dict[str, Any]:
        """The record as JSON-ready data."""
        return {
            "name": self.name,
            "kind": self.kind,
            "options": dict(self.options),
            "description": self.description,
        }


#: The peer every ratio is taken against; always measured, whatever ``--configs`` says.
BASELINE = "ort-fp32"

#: Every configuration, in the order the tables list them.
CONFIGS: dict[str, BenchConfig] = {
    c.name: c
    for c in (
        BenchConfig("ort-fp32", "onnxruntime", {"precision": "fp32"},
                    "ONNX Runtime CPU, fp32 (the baseline of every ratio)"),
        BenchConfig("ort-int8", "onnxruntime", {"precision": "int8"},
                    "ONNX Runtime CPU, int8 QDQ model (quantize_static, U8S8, per-channel)"),
        BenchConfig("lepton-ref", "lepton",
                    {"backend": "reference", "opt_level": 2, "precision": "fp32"},
                    "Lepton, reference interpreter (NumPy kernels), O2"),
        BenchConfig("lepton-tvm", "lepton",
                    {"backend": "tvm", "opt_level": 2, "precision": "fp32"},
                    "Lepton, TVM backend, O2, fp32"),
        BenchConfig("lepton-tvm-int8", "lepton",
                    {"backend": "tvm", "opt_level": 2, "precision": "int8"},
                    "Lepton, TVM backend, O2, int8"),
        BenchConfig("lepton-numba", "lepton",
                    {"backend": "numba", "opt_level": 2, "precision": "fp32"},
                    "Lepton, Numba backend (generated @njit kernels), O2, fp32"),
        BenchConfig("lepton-numba-int8", "lepton",
                    {"backend": "numba", "opt_level": 2, "precision": "int8"},
                    "Lepton, Numba backend, O2, int8"),
        BenchConfig("tvm-stock", "tvm-stock", {"precision": "fp32"},
                    "TVM's own ONNX importer + default Relax pipeline, untuned (a peer)"),
        BenchConfig("openvino-fp32", "openvino", {"precision": "fp32"},
                    "OpenVINO CPU, f32 precision hint (optional peer)"),
        BenchConfig("openvino-int8", "openvino", {"precision": "int8"},
                    "OpenVINO CPU on the int8 QDQ model (optional peer)"),
    )
}  # fmt: skip


def select(items: Iterable[str | BenchConfig] | None) -> list[BenchConfig]:
    """The configurations named in `items` (all when None), with `BASELINE` first.

    Args:
        items: configuration names from `CONFIGS`, or records (ad-hoc configurations);
            a repeated name is dropped, order is kept.

    Returns:
        The records, the baseline first (added when not named: ratios need it).

    Raises:
        KeyError: an unknown name (the message lists the known ones).
    """
    wanted: list[str | BenchConfig] = list(CONFIGS) if items is None else list(items)
    unknown = [n for n in wanted if isinstance(n, str) and n not in CONFIGS]
    if unknown:
        raise KeyError(
            f"unknown config(s) {', '.join(unknown)}; known configs: {', '.join(CONFIGS)}"
        )
    chosen: dict[str, BenchConfig] = {}
    for item in wanted:
        record = CONFIGS[item] if isinstance(item, str) else item
        chosen.setdefault(record.name, record)
    baseline = chosen.pop(BASELINE, CONFIGS[BASELINE])
    return [baseline, *chosen.values()]
