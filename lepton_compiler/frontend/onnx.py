"""ONNX → IR: load, check, canonicalize and convert a model into a `Graph`.

Steps, in order (each one reported in ``graph.meta["import_notes"]`` when it changed or
skipped something):

1. load from a path, bytes or `ModelProto` (external data resolved from the model's folder);
2. unknown ops: every op the compiler does not know is listed in one `UnsupportedOpError`
   (before the checker, which would stop at the first unknown ai.onnx op);
3. `onnx.checker`;
4. model-local functions inlined;
5. old opsets converted up to `CANONICAL_OPSET` with `onnx.version_converter`;
6. initializers also listed as graph inputs (old IR) become constants, unless overridden;
7. user-given input shapes applied;
8. `onnxsim` simplification (on by default; a simplifier failure never fails the import);
9. ONNX shape inference (symbolic dims kept);
10. conversion to the IR (attribute defaults filled, `Constant` nodes become constants).
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import onnx
import onnx.inliner
from onnx import version_converter

from ..errors import ModelLoadError, UnsupportedOpError
from ..export.onnx import _min_ir_version
from ..ir import Graph
from ..ops.registry import lookup
from .convert import _Importer

#: The ai.onnx opset every older model is converted up to.
CANONICAL_OPSET = 18
#: Models larger than this are checked, inferred and simplified through their path.
_LARGE_MODEL_BYTES = 1_800_000_000

ModelSource = str | os.PathLike[str] | bytes | onnx.ModelProto


class ModelImportWarning(UserWarning):
    """A step of the import was skipped or changed the model in a way worth knowing."""


def load_proto(model: ModelSource) -> tuple[onnx.ModelProto, str | None]:
    """Read a model from a path, bytes or proto; returns it with its folder (for external data).

    Raises:
        ModelLoadError: the file is missing, unreadable, or not an ONNX model.
    """
    if isinstance(model, onnx.ModelProto):
        proto = onnx.ModelProto()
        proto.CopyFrom(model)
        return proto, None
    if isinstance(model, (bytes, bytearray, memoryview)):
        try:
            proto = onnx.ModelProto.FromString(bytes(model))
        except Exception as e:  # protobuf raises DecodeError, RuntimeWarning-derived errors
            raise ModelLoadError(f"the bytes given are not an ONNX model ({e})") from e
        _check_nonempty(proto, "the bytes given")
        return proto, None
    path = os.fspath(model)
    if not os.path.exists(path):
        raise ModelLoadError(f"no such model file: {path}")
    if os.path.isdir(path):
        raise ModelLoadError(f"{path} is a directory, not an ONNX model file")
    try:
        proto = onnx.load(path, load_external_data=True)
    except OSError as e:
        raise ModelLoadError(f"cannot read {path}: {e.strerror or e}") from e
    except Exception as e:
        raise ModelLoadError(
            f"{path} is not a valid ONNX model (corrupt or truncated file): {e}"
        ) from e
    _check_nonempty(proto, path)
    return proto, os.path.dirname(os.path.abspath(path))


def _check_nonempty(proto: onnx.ModelProto, what: str) -> None:
    if not proto.HasField("graph") or not proto.opset_import:
        raise ModelLoadError(
            f"{what} does not hold an ONNX model (no graph or no opset imports; "
            "corrupt or truncated file?)"
        )


def _walk_nodes(graph: onnx.GraphProto) -> Iterable[onnx.NodeProto]:
    for n in graph.node:
        yield n
        for a in n.attribute:
            if a.HasField("g"):
                yield from _walk_nodes(a.g)
            for g in a.graphs:
                yield from _walk_nodes(g)


def find_unknown_ops(proto: onnx.ModelProto) -> list[tuple[str, str, int | None, list[str]]]:
    """Every op of the model the compiler does not know, with the nodes that use it."""
    opsets = {o.domain or "": o.version for o in proto.opset_import}
    local = {(f.domain, f.name) for f in proto.functions}
    nodes: list[onnx.NodeProto] = list(_walk_nodes(proto.graph))
    for f in proto.functions:
        for n in f.node:
            nodes.append(n)
    unknown: dict[tuple[str, str], list[str]] = {}
    for n in nodes:
        domain = "" if n.domain == "ai.onnx" else n.domain
        if (n.domain, n.op_type) in local or (domain, n.op_type) in local:
            continue
        if lookup(domain, n.op_type) is None:
            unknown.setdefault((domain, n.op_type), []).append(n.name or f"<unnamed {n.op_type}>")
    return [(d, op, opsets.get(d), names) for (d, op), names in sorted(unknown.items())]


def import_model(
    model: ModelSource,
    *,
    simplify: bool = True,
    convert_opset: bool = True,
    input_shapes: Mapping[str, Sequence[int | str | None]] | None = None,
    override_initializers: Iterable[str] = (),
    check: bool = True,
) -> Graph:
    """Import an ONNX model into the IR.

    Args:
        model: a path, serialized bytes, or a `ModelProto` (not modified).
        simplify: run onnxsim (falls back to the unsimplified model if it fails).
        convert_opset: convert models below `CANONICAL_OPSET` up to it.
        input_shapes: new shapes for some graph inputs, e.g. ``{"x": ["batch", 3, 224, 224]}``.
        override_initializers: names of initializers listed as graph inputs (old IR) that
            should stay user-settable inputs instead of becoming constants.
        check: run `onnx.checker` first.

    Returns:
        The top-level graph. ``graph.meta`` holds ``ir_version``, ``producer``,
        ``import_notes`` (what the import changed or skipped) and the original opsets.

    Raises:
        ModelLoadError: the model cannot be read or is invalid.
        UnsupportedOpError: the model uses ops the compiler does not know (all listed).
    """
    proto, base_dir = load_proto(model)
    notes: list[str] = []
    large = proto.ByteSize() > _LARGE_MODEL_BYTES if base_dir is None else _is_large(proto)

    # Unknown ops first: the checker would stop at the first unknown ai.onnx op, while the
    # user needs the whole list at once.
    unknown = find_unknown_ops(proto)
    if unknown:
        raise UnsupportedOpError(unknown)

    if check:
        try:
            if large and isinstance(model, (str, os.PathLike)):
                onnx.checker.check_model(os.fspath(model))
            else:
                onnx.checker.check_model(proto)
        except onnx.checker.ValidationError as e:
            raise ModelLoadError(f"the model fails the ONNX checker: {_first_line(e)}") from e
        except Exception as e:
            raise ModelLoadError(f"the model cannot be checked: {_first_line(e)}") from e

    original_opsets = {o.domain or "": o.version for o in proto.opset_import}
    if proto.functions:
        try:
            count = len(proto.functions)
            proto = onnx.inliner.inline_local_functions(proto)
            notes.append(f"inlined {count} model-local function(s)")
        except Exception as e:
            raise ModelLoadError(f"cannot inline the model's local functions: {e}") from e

    if convert_opset and 0 < original_opsets.get("", CANONICAL_OPSET) < CANONICAL_OPSET:
        proto = _convert_opset(proto, notes)

    _drop_initializer_inputs(proto, set(override_initializers), notes)
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 1)
    # IR 4 lets initializers stay out of the input list; newer opsets need newer IR versions.
    proto.ir_version = max(proto.ir_version, 4, _min_ir_version(opset))
    if input_shapes:
        _apply_input_shapes(proto, input_shapes)

    if simplify and not large:
        proto = _simplify(proto, notes)

    proto = _infer_shapes(proto, notes, large)

    opsets = {o.domain or "": o.version for o in proto.opset_import}
    importer = _Importer(opsets, base_dir)
    importer.collect_names(proto.graph)
    graph = importer.graph(proto.graph, top=True)
    graph.meta.update(
        ir_version=proto.ir_version,
        producer=f"{proto.producer_name} {proto.producer_version}".strip(),
        original_opsets=original_opsets,
        import_notes=notes,
        metadata_props={p.key: p.value for p in proto.metadata_props},
        model_name=proto.graph.name,
    )
    for note in notes:
        warnings.warn(note, ModelImportWarning, stacklevel=2)
    return graph


def _is_large(proto: onnx.ModelProto) -> bool:
    try:
        return proto.ByteSize() > _LARGE_MODEL_BYTES
    except Exception:  # protobuf refuses to size messages over 2 GiB
        return True


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _convert_opset(proto: onnx.ModelProto, notes: list[str]) -> onnx.ModelProto:
    old = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    try:
        converted = version_converter.convert_version(proto, CANONICAL_OPSET)
        onnx.checker.check_model(converted)
        _same_signature(proto, converted)
    except Exception as e:
        notes.append(
            f"opset conversion {old} -> {CANONICAL_OPSET} failed ({_first_line(e)}); "
            f"kept opset {old}"
        )
        return proto
    notes.append(f"converted opset {old} -> {CANONICAL_OPSET}")
    return converted


def _same_signature(before: onnx.ModelProto, after: onnx.ModelProto) -> None:
    """Refuse a conversion that changed the graph's inputs or outputs (a converter bug)."""
    for what in ("input", "output"):
        a = [(v.name, v.type.SerializeToString()) for v in getattr(before.graph, what)]
        b = [(v.name, v.type.SerializeToString()) for v in getattr(after.graph, what)]
        if a != b:
            raise ValueError(f"the converter changed the graph's {what}s")


def _drop_initializer_inputs(proto: onnx.ModelProto, keep: set[str], notes: list[str]) -> None:
    g = proto.graph
    inits = {t.name for t in g.initializer}
    listed = [vi for vi in g.input if vi.name in inits]
    if not listed:
        return
    overridden = [vi for vi in listed if vi.name in keep]
    remaining = [vi for vi in g.input if vi.name not in inits or vi.name in keep]
    if overridden:
        drop = {vi.name for vi in overridden}
        kept_inits = [t for t in g.initializer if t.name not in drop]
        del g.initializer[:]
        g.initializer.extend(kept_inits)
    del g.input[:]
    g.input.extend(remaining)
    notes.append(
        f"{len(listed) - len(overridden)} initializer(s) listed as graph inputs became constants"
    )


def _apply_input_shapes(
    proto: onnx.ModelProto, shapes: Mapping[str, Sequence[int | str | None]]
) -> None:
    by_name = {vi.name: vi for vi in proto.graph.input}
    missing = [n for n in shapes if n not in by_name]
    if missing:
        raise ModelLoadError(
            f"input_shapes names unknown input(s) {missing}; the model's inputs are "
            f"{list(by_name)}"
        )
    for name, shape in shapes.items():
        tt = by_name[name].type.tensor_type
        tt.shape.Clear()
        tt.shape.SetInParent()
        for d in shape:
            dim = tt.shape.dim.add()
            if isinstance(d, int):
                dim.dim_value = d
            elif isinstance(d, str):
                dim.dim_param = d


def _simplify(proto: onnx.ModelProto, notes: list[str]) -> onnx.ModelProto:
    try:
        import onnxsim
    except ImportError:
        notes.append("onnxsim is not installed; simplification skipped")
        return proto
    try:
        with _quiet_fds():
            simplified, ok = onnxsim.simplify(proto, check_n=0, skip_shape_inference=False)
    except Exception as e:
        notes.append(f"onnxsim failed ({_first_line(e)}); continuing with the unsimplified model")
        return proto
    if not ok:
        notes.append("onnxsim could not validate its result; continuing unsimplified")
        return proto
    return simplified


@contextlib.contextmanager
def _quiet_fds() -> Iterator[None]:
    """Silence a library that prints to stdout/stderr from Python and C++ alike."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile() as sink:
        try:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(
                io.StringIO()
            ):
                yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def _infer_shapes(proto: onnx.ModelProto, notes: list[str], large: bool) -> onnx.ModelProto:
    if large:
        notes.append("model above 1.8 GB: ONNX shape inference skipped")
        return proto
    try:
        return onnx.shape_inference.infer_shapes(proto, strict_mode=False, data_prop=True)
    except Exception as e:
        notes.append(f"ONNX shape inference failed ({_first_line(e)}); using declared types")
        return proto


def import_any(model: Any, **kwargs: Any) -> Graph:
    """`import_model`, or the graph itself when `model` is already a `Graph`."""
    return model if isinstance(model, Graph) else import_model(model, **kwargs)
