"""Int8 quantization as a model-to-model step: a float ONNX model in, a QDQ ONNX model out.

`quantize` runs what ``compile(..., quantize=...)`` runs up to the QDQ form — import,
cleanup, BatchNormalization folding, calibration and QDQ insertion — and exports the graph
instead of lowering it to integer kernels. The result holds only standard ONNX ops
(QuantizeLinear/DequantizeLinear around the Conv/Gemm/MatMul layers, int8 weights, int32
biases), so ONNX Runtime and other QDQ-aware runtimes run it, and our compiler reads it back
as a pre-quantized model.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import onnx

from ..errors import ArtifactError, LeptonError
from ..quantization import Int8Config

#: The passes before quantization: cleanup, then BatchNormalization folding (standard ops
#: only: the pattern fusions that make ``lepton.*`` ops are left out).
_PASSES = (
    "dead_code_elimination",
    "identity_elimination",
    "shape_folding",
    "constant_folding",
    "canonicalize",
    "common_subexpression_elimination",
    "dead_code_elimination",
    "fold_batchnorm",
    "dead_code_elimination",
    "quantize_int8",
    "dead_code_elimination",
)


def quantize(
    model: str | os.PathLike[str] | bytes | onnx.ModelProto,
    config: Int8Config,
    output: str | os.PathLike[str] | None = None,
    *,
    target: str = "host",
    simplify: bool = True,
    input_shapes: Mapping[str, Sequence[int | str | None]] | None = None,
) -> tuple[onnx.ModelProto, Any]:
    """Quantize a float ONNX model to int8 QDQ form.

    Args:
        model: an ``.onnx`` path, serialized bytes or a ``ModelProto``.
        config: the quantization options (calibration data, method, exclusions...).
        output: where to write the QDQ model (written only when everything succeeded).
        target: decides ``activations="auto"`` (uint8 on x86, int8 on ARM).
        simplify: run onnxsim during import.
        input_shapes: new shapes for some inputs.

    Returns:
        The QDQ model and the accuracy report (``passes/quant/report.Int8Report``).

    Raises:
        LeptonError: a bad model, bad calibration data, or no layer to quantize.
    """
    from ..frontend.onnx import import_any
    from ..ir import verify
    from ..pass_manager import PassContext, PassManager
    from ..targets.target import parse_target
    from .onnx import export_model

    if not isinstance(config, Int8Config):
        raise LeptonError(f"config must be an Int8Config, got {type(config).__name__}")
    graph = import_any(model, simplify=simplify, input_shapes=input_shapes)
    ctx = PassContext(opt_level=2, target=parse_target(target).to_dict(), options={"int8": config})
    PassManager(list(_PASSES)).run(graph, ctx)
    report = graph.meta.pop("int8_report", None)
    if report is None or report.quantized == 0:
        raise LeptonError(
            "the model has no Conv, Gemm or MatMul layer with constant weights to quantize"
        )
    verify(graph)
    proto = export_model(graph)
    if output is not None:
        _write(proto, Path(output))
    return proto, report


def _write(proto: onnx.ModelProto, path: Path) -> None:
    """Write atomically: a temporary file beside the target, renamed when complete."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        onnx.save_model(proto, str(tmp))
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise ArtifactError(f"cannot write {path}: {e.strerror or e}") from e
