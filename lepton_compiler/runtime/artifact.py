"""Artifacts: a compiled model saved as a directory, and loaded again without recompiling.

Layout of an artifact directory::

    model.lepton/
      manifest.json   format version, versions, backend, target, opt level, signatures,
                      creation time, compile report, sha256 of every payload file
      model.onnx      the compiled IR, exported as ONNX (plus model.onnx.data above 1.8 GB);
                      fused groups are plain ONNX nodes, except in ``tvm`` and ``numba``
                      artifacts, which keep them as ``lepton.Fused`` nodes (their kernels
                      are per group)

      kernels/        (``tvm`` backend) ``kernels.so``, one shared library with every
                      distinct built kernel (each under its own symbol); the manifest's
                      ``tvm`` entry lists the kernels and libraries with the TVM version
                      and target they were built for

Loading a ``tvm`` artifact (needs TVM installed) lowers the IR again (cheap) and takes every
kernel's machine code from ``kernels/``: nothing is scheduled or compiled by LLVM. A kernel
whose library does not match (another TVM or Lepton version) is rebuilt, and the load says
how many were.

Loading a ``numba`` artifact (needs Numba installed) writes the same kernel sources again from
the IR and compiles them; Numba's machine-code cache (``~/.cache/lepton/numba``, see
`lepton_compiler.targets.numba.source_cache`) makes that a load, not a compile, on a machine
that compiled or loaded the model before. The artifact itself holds no machine code yet.

Writes are atomic: everything is written to a hidden temporary sibling directory, which is
renamed into place only when complete; an existing artifact is replaced only after its
successor is complete. On any failure the temporary directory is removed and the previous
artifact (if any) is left as it was. Loading checks the manifest, the format version and every
checksum before importing the model, so a corrupt or mismatched artifact is one `ArtifactError`
that says what is wrong.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from importlib import metadata as _metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ArtifactError, LeptonError
from .report import CompileReport

if TYPE_CHECKING:
    from .compiled_model import CompiledModel

#: Version of the directory layout and manifest schema this code writes and reads.
FORMAT_VERSION = 1
FORMAT_NAME = "lepton-artifact"
MANIFEST = "manifest.json"
MODEL_FILE = "model.onnx"
KERNELS_DIR = "kernels"
#: Backends whose artifacts this build can run (``tvm`` only with TVM installed, ``numba``
#: only with Numba installed).
_RUNNABLE_BACKENDS = ("reference", "tvm", "numba")


def save_artifact(model: CompiledModel, path: str | os.PathLike[str]) -> Path:
    """Write `model` as an artifact directory at `path`, atomically.

    Missing parent directories are created. An existing directory at `path` is replaced only
    when it is empty or is itself an artifact (so a typo cannot wipe an unrelated folder).

    Returns:
        The artifact path.

    Raises:
        ArtifactError: the path cannot be written (the message names it and the OS reason),
            or something at the path is not an artifact.
    """
    target = Path(os.fspath(path)).expanduser()
    _check_replaceable(target)
    parent = target.parent if str(target.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=parent))
    except OSError as e:
        raise ArtifactError(f"cannot write artifact {target}: {_reason(e)}") from e
    try:
        _write_payload(model, tmp)
        _swap_into_place(tmp, target)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError):
            raise ArtifactError(f"cannot write artifact {target}: {_reason(e)}") from e
        if isinstance(e, ArtifactError) or not isinstance(e, LeptonError):
            raise
        raise ArtifactError(f"cannot write artifact {target}: {e}") from e
    return target


def load(path: str | os.PathLike[str]) -> CompiledModel:
    """Load an artifact written by `CompiledModel.save`, without recompiling.

    Args:
        path: the artifact directory.

    Returns:
        The compiled model; ``model.metadata`` holds the manifest.

    Raises:
        ArtifactError: the directory or manifest is missing or corrupt, the format version is
            not supported, a checksum does not match, or the model file fails to load.
    """
    root = Path(os.fspath(path)).expanduser()
    manifest = read_manifest(root)
    backend = manifest["backend"]
    if backend == "tvm" and not _tvm_available():
        raise ArtifactError(
            f"artifact {root} was built by the 'tvm' backend, whose kernels are rebuilt at "
            "load time, but TVM is not installed: install it with "
            "pip install 'lepton-compiler[tvm]', or recompile the model for another backend"
        )
    if backend == "numba" and not _numba_available():
        raise ArtifactError(
            f"artifact {root} was built by the 'numba' backend, whose kernels are compiled at "
            "load time, but Numba is not installed: install it with "
            "pip install 'lepton-compiler[numba]', or recompile the model for another backend"
        )
    if backend not in _RUNNABLE_BACKENDS:
        raise ArtifactError(
            f"artifact {root} was built by the {backend!r} backend, which this installation "
            f"cannot run (available: {', '.join(_RUNNABLE_BACKENDS)}); recompile the model"
        )
    verify_checksums(root, manifest)
    from ..frontend.onnx import import_model

    try:
        graph = import_model(root / MODEL_FILE, simplify=False, convert_opset=False)
    except LeptonError as e:
        raise ArtifactError(f"artifact {root}: {MODEL_FILE} fails to load: {e}") from e
    try:
        report = CompileReport.from_dict(manifest["report"])
    except (TypeError, ValueError, KeyError) as e:
        raise ArtifactError(f"artifact {root}: the report in {MANIFEST} is invalid: {e}") from e

    from .compiled_model import CompiledModel

    executor = None
    if backend == "tvm":
        executor = _rebuild_tvm(root, graph, manifest["target"])
    elif backend == "numba":
        executor = _rebuild_numba(root, graph, manifest["target"])
    model = CompiledModel(
        graph,
        report,
        backend=backend,
        target=manifest["target"],
        opt_level=manifest["opt_level"],
        executor=executor,
        metadata=manifest,
    )
    _check_signature(root, model, manifest)
    return model


def _tvm_available() -> bool:
    from ..api import tvm_available

    return tvm_available()


def _numba_available() -> bool:
    from ..api import numba_available

    return numba_available()


def _rebuild_numba(root: Path, graph: Any, target: str) -> Any:
    """The Numba executor of a ``numba`` artifact: kernels written from the IR again and
    compiled, or loaded from Numba's cache (see the module docstring)."""
    import warnings

    from ..api import build_numba_executor
    from ..targets.target import parse_target

    try:
        spec = parse_target(target)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the fallbacks were reported at compile time
            return build_numba_executor(graph, spec)
    except LeptonError as e:
        raise ArtifactError(f"artifact {root}: cannot rebuild its Numba kernels: {e}") from e


def _rebuild_tvm(root: Path, graph: Any, target: str) -> Any:
    """The TVM executor of a ``tvm`` artifact, its kernels loaded from ``kernels/``."""
    import warnings

    from ..api import build_tvm_executor
    from ..targets.target import parse_target

    try:
        spec = parse_target(target)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the fallbacks were reported at compile time
            executor = build_tvm_executor(graph, spec, stores=[root / KERNELS_DIR])
    except LeptonError as e:
        raise ArtifactError(f"artifact {root}: cannot rebuild its TVM kernels: {e}") from e
    rebuilt = [k for k in executor.kernels if not k.from_disk]
    if rebuilt:
        warnings.warn(
            f"artifact {root}: {len(rebuilt)} of {len(executor.kernels)} TVM kernels were "
            "compiled again (built by another TVM or Lepton version)",
            stacklevel=3,
        )
    return executor


def read_manifest(root: Path) -> dict[str, Any]:
    """Read and validate the manifest of the artifact at `root`.

    Raises:
        ArtifactError: what is missing or wrong, naming the path.
    """
    if not root.exists():
        raise ArtifactError(f"no artifact at {root}: no such file or directory")
    if not root.is_dir():
        hint = ""
        if root.suffix == ".onnx":
            hint = " (an ONNX model: compile it with lepton_compiler.compile)"
        raise ArtifactError(f"{root} is not an artifact directory{hint}")
    mpath = root / MANIFEST
    if not mpath.is_file():
        raise ArtifactError(f"{root} is not a Lepton artifact: {MANIFEST} is missing")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except OSError as e:
        raise ArtifactError(f"cannot read {mpath}: {_reason(e)}") from e
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ArtifactError(f"{mpath} is corrupt (not valid JSON: {e})") from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise ArtifactError(f"{mpath} is not a Lepton artifact manifest")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        by = manifest.get("lepton_version", "an unknown version")
        raise ArtifactError(
            f"artifact {root} has format version {version!r} (written by Lepton Compiler {by}); "
            f"this Lepton Compiler reads format version {FORMAT_VERSION}: recompile the model"
        )
    required = {
        "backend": str, "target": str, "opt_level": int, "inputs": list, "outputs": list,
        "files": dict, "report": dict,
    }  # fmt: skip
    for key, kind in required.items():
        if not isinstance(manifest.get(key), kind):
            raise ArtifactError(f"{mpath} is corrupt: {key!r} is missing or not a {kind.__name__}")
    if MODEL_FILE not in manifest["files"]:
        raise ArtifactError(f"{mpath} is corrupt: it lists no {MODEL_FILE}")
    return manifest


def verify_checksums(root: Path, manifest: Mapping[str, Any]) -> None:
    """Check every payload file listed in the manifest against its sha256.

    Raises:
        ArtifactError: a file is missing, unreadable, or differs from what was written.
    """
    for name, entry in manifest["files"].items():
        fpath = root / name
        if not isinstance(entry, dict) or "sha256" not in entry:
            raise ArtifactError(f"{root / MANIFEST} is corrupt: no checksum for {name}")
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise ArtifactError(f"{root / MANIFEST} is corrupt: bad file name {name!r}")
        if not fpath.is_file():
            raise ArtifactError(f"artifact {root} is incomplete: {name} is missing")
        try:
            digest = _sha256(fpath)
        except OSError as e:
            raise ArtifactError(f"cannot read {fpath}: {_reason(e)}") from e
        if digest != entry["sha256"]:
            raise ArtifactError(
                f"artifact {root} is corrupt: checksum mismatch for {name} (the file changed "
                "after it was written)"
            )


# -- writing ------------------------------------------------------------------------------------


def _check_replaceable(target: Path) -> None:
    if not os.path.lexists(target):
        return
    if target.is_symlink():
        raise ArtifactError(f"cannot write artifact {target}: it is a symbolic link")
    if not target.is_dir():
        raise ArtifactError(f"cannot write artifact {target}: it exists and is not a directory")
    try:
        empty = not any(target.iterdir())
    except OSError as e:
        raise ArtifactError(f"cannot write artifact {target}: {_reason(e)}") from e
    if not empty and not (target / MANIFEST).is_file():
        raise ArtifactError(
            f"cannot write artifact {target}: the directory exists and is not a Lepton "
            "artifact; refusing to replace it (choose another path or remove it)"
        )


def _write_payload(model: CompiledModel, folder: Path) -> None:
    from ..export.onnx import save_model

    # tvm and numba artifacts keep their fused groups (as lepton.Fused nodes with their
    # bodies): their kernels are built per group. Other backends write plain ONNX any runtime
    # can run.
    save_model(model.graph, folder / MODEL_FILE, inline_fused=model.backend not in ("tvm", "numba"))
    extra: dict[str, Any] = {}
    export = getattr(model.executor, "export_kernels", None)
    if export is not None:
        (folder / KERNELS_DIR).mkdir()
        extra["tvm"] = export(folder / KERNELS_DIR)
    files = {
        p.relative_to(folder).as_posix(): {"sha256": _sha256(p), "bytes": p.stat().st_size}
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }
    manifest = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "lepton_version": _lepton_version(),
        "onnx_version": _package_version("onnx"),
        "backend": model.backend,
        "target": model.target,
        "opt_level": model.opt_level,
        "model_name": model.name,
        "inputs": [s.to_dict() for s in model.input_signature],
        "outputs": [s.to_dict() for s in model.output_signature],
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "report": model.report.to_dict(),
        "files": files,
        **extra,
    }
    for p in folder.rglob("*"):
        _fsync(p)
    with open(folder / MANIFEST, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2, default=_json_default)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())


def _swap_into_place(tmp: Path, target: Path) -> None:
    """Rename `tmp` to `target`; an existing `target` is moved aside first, then deleted."""
    if not os.path.lexists(target):
        os.replace(tmp, target)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    os.rmdir(old)
    os.replace(target, old)
    try:
        os.replace(tmp, target)
    except BaseException:
        os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _fsync(path: Path) -> None:
    with contextlib.suppress(OSError), open(path, "rb") as f:
        os.fsync(f.fileno())


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _json_default(x: Any) -> Any:
    if hasattr(x, "item"):  # numpy scalars in reports
        return x.item()
    raise TypeError(f"{type(x).__name__} is not JSON serializable")


def _reason(e: OSError) -> str:
    return e.strerror or str(e)


def _lepton_version() -> str:
    from .. import __version__

    return __version__


def _package_version(name: str) -> str | None:
    try:
        return _metadata.version(name)
    except _metadata.PackageNotFoundError:
        return None


# -- loading ------------------------------------------------------------------------------------


def _check_signature(root: Path, model: CompiledModel, manifest: Mapping[str, Any]) -> None:
    """The re-imported model must have the names and dtypes the manifest promises."""
    for kind, specs in (("inputs", model.input_signature), ("outputs", model.output_signature)):
        want = [(d.get("name"), d.get("dtype")) for d in manifest[kind] if isinstance(d, dict)]
        got = [(s.name, s.dtype) for s in specs]
        if want != got:
            raise ArtifactError(
                f"artifact {root} is inconsistent: {MODEL_FILE} has {kind} {got}, but "
                f"{MANIFEST} lists {want}"
            )
