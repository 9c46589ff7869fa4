"""`Int8Config`: what a user asks of int8 post-training quantization.

``compile(model, quantize=Int8Config(calibration=samples))`` quantizes the model's Conv,
Gemm and MatMul layers (those with constant weights) to int8: the passes in
``passes/quant/`` calibrate the float model on ``calibration``, insert
QuantizeLinear/DequantizeLinear pairs (the QDQ form) and lower them into integer kernels
(``lepton.QConv``/``lepton.QMatMul``). The scheme:

- weights: int8, symmetric, per output channel (``per_channel=True``) or per tensor;
- activations: ``"uint8"`` asymmetric (what x86 VNNI multiplies: u8 × s8) or ``"int8"``
  symmetric (ARM's signed dot products); ``"auto"`` picks by target;
- biases: int32 in units of ``activation scale × weight scale``.

Standard library only, so ``import lepton_compiler`` stays cheap.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import LeptonError

#: Calibration methods (the observers in ``passes/quant/observers.py``).
METHODS = ("minmax", "percentile", "entropy", "mse")
#: Activation types.
ACTIVATION_TYPES = ("auto", "uint8", "int8")

_PRODUCTS = ("Gemm", "MatMul", "lepton.MatMulAdd")

#: A sample: one input dict. A metric takes a ``run(feeds) -> outputs`` function and returns a
#: score where higher is better (e.g. top-1 accuracy on the user's validation set).
Feeds = Mapping[str, Any]
Metric = Callable[[Callable[[Feeds], dict[str, Any]]], float]


@dataclass
class Int8Config:
    """Int8 post-training quantization options.

    Attributes:
        calibration: representative inputs: an iterable of input dicts (name -> array), or
            ``.npz``/``.npy`` file paths (or a folder of them; see
            ``passes/quant/data.py``). Required.
        method: how activation ranges are chosen from the calibration statistics:
            ``"minmax"``, ``"percentile"`` (clip at `percentile`), ``"entropy"`` (KL
            divergence) or ``"mse"`` (least quantization error).
        percentile: the percentile for ``method="percentile"``.
        per_channel: per-output-channel weight scales (else one scale per weight tensor).
        activations: ``"auto"``, ``"uint8"`` or ``"int8"`` (see the module docstring).
        exclude: node names or op types (``"Gemm"``) to keep in float.
        max_drop: with `metric`: the largest accepted metric drop (fp32 score − int8
            score); without: the largest accepted relative output error
            ``‖y_int8 − y_fp32‖ / ‖y_fp32‖`` on the evaluation samples. When set, the most
            sensitive layers are kept in float, one at a time, until the bound holds.
        metric: an accuracy callback (see `Metric`) for `max_drop`.
        grouped: quantize grouped (depthwise) convolutions too. Off by default: they are
            memory-bound, often the most sensitive layers of MobileNet-style models, and
            gain nothing measurable from int8 (MobileNetV2 on TVM: the same time either way,
            output cosine to fp32 0.9925 instead of 0.9934).
        samples: at most this many calibration samples are used.
        eval_samples: samples (the first ones of `calibration`) on which the output error is
            measured for `max_drop` and the per-layer report.
        num_bins: histogram bins of the percentile/entropy/mse observers.
        progress: show progress while calibrating (None: when the compile shows progress).
    """

    calibration: Iterable[Feeds] | str | os.PathLike[str] | Sequence[str | os.PathLike[str]]
    method: str = "percentile"
    percentile: float = 99.999
    per_channel: bool = True
    activations: str = "auto"
    exclude: Sequence[str] = ()
    max_drop: float | None = None
    metric: Metric | None = None
    grouped: bool = False
    samples: int = 256
    eval_samples: int = 8
    num_bins: int = 2048
    progress: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.calibration is None:
            raise LeptonError("Int8Config needs calibration data (input dicts or .npz/.npy files)")
        if self.method not in METHODS:
            raise LeptonError(
                f"unknown calibration method {self.method!r}; choose one of {', '.join(METHODS)}"
            )
        if self.activations not in ACTIVATION_TYPES:
            raise LeptonError(
                f"unknown activation type {self.activations!r}; choose one of "
                f"{', '.join(ACTIVATION_TYPES)}"
            )
        if not 50 < float(self.percentile) <= 100:
            raise LeptonError(f"percentile must be in (50, 100], got {self.percentile}")
        if int(self.samples) < 1 or int(self.eval_samples) < 1:
            raise LeptonError("samples and eval_samples must be at least 1")
        if self.max_drop is not None and float(self.max_drop) < 0:
            raise LeptonError(f"max_drop must be >= 0, got {self.max_drop}")
        if self.metric is not None and self.max_drop is None:
            raise LeptonError("a metric is used with max_drop: set the largest accepted drop")
        if isinstance(self.exclude, str):
            self.exclude = (self.exclude,)

    def activation_type(self, target: Mapping[str, Any] | None) -> str:
        """``"uint8"`` or ``"int8"``: `activations`, with ``"auto"`` resolved for a target
        (``Target.to_dict()``): int8 on ARM (signed dot products), uint8 elsewhere (x86 VNNI
        multiplies unsigned activations by signed weights)."""
        if self.activations != "auto":
            return self.activations
        arch = str((target or {}).get("arch", "")).lower()
        return "int8" if arch in ("arm", "aarch64") else "uint8"

    def excludes(self, name: str, op: str) -> bool:
        """True when a node (by name or op type) is to stay in float. The matrix products
        are one family: cleanup turns a Gemm without bias into a MatMul and fusion a MatMul
        with a bias into a Gemm or ``lepton.MatMulAdd``, so naming any of them names all."""
        if name in self.exclude or op in self.exclude:
            return True
        return op in _PRODUCTS and any(e in _PRODUCTS for e in self.exclude)
