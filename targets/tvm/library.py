"""Kernel libraries on disk: one shared library holding every kernel of a model (what an
artifact ships), per-kernel files in the kernel cache, and finding a kernel in either.

Every kernel is compiled under its own symbol, ``lepton_<digest>`` (`kernel_symbol`), so any
set of kernels links into one library. The kernel cache keeps each kernel twice: the object
file (``<digest>.o``, what `link_library` links) and a loadable library (``<digest>.so``).
An artifact's ``kernels/`` folder holds ``kernels.so`` with all of the model's kernels; a
kernel whose object file is gone (the cache was cleared after it was loaded from another
artifact) is shipped as a copy of the library it was loaded from instead.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import tvm

__all__ = ["LIBRARY_NAME", "find_kernel", "kernel_symbol", "link_library"]

#: The file name of an artifact's kernel library.
LIBRARY_NAME = "kernels.so"

_LOADED: dict[Path, Any] = {}  # library path -> loaded module (None: failed to load)
_LOCK = threading.Lock()


def kernel_symbol(digest: str) -> str:
    """The symbol a kernel is compiled under (unique per kernel, so libraries link)."""
    return f"lepton_{digest}"


def _load(path: Path) -> Any:
    """The loaded library at `path` (once per process); None when it cannot be loaded."""
    key = path.resolve()
    with _LOCK:
        if key in _LOADED:
            return _LOADED[key]
    try:
        module = tvm.runtime.load_module(str(key))
    except Exception:  # a damaged or foreign file: the kernel is built again
        module = None
    with _LOCK:
        return _LOADED.setdefault(key, module)


def find_kernel(digest: str, folders: Sequence[Path]) -> tuple[Any, Path] | None:
    """The loaded library that holds kernel `digest` and its path: in each folder, its
    ``kernels.so``, then ``<digest>.so``, then the copied ``lib-*.so`` libraries (never
    every file of a folder: a process must not load thousands of libraries); None if
    absent."""
    symbol = kernel_symbol(digest)
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            continue
        copies = sorted(folder.glob("lib-*.so"))
        for path in [folder / LIBRARY_NAME, folder / f"{digest}.so", *copies]:
            if not path.is_file():
                continue
            module = _load(path)
            if module is not None and module.implements_function(symbol):
                return module, path
    return None


def write_object(module: Any, path: Path) -> bool:
    """Write an in-process compiled kernel's object file to `path`; False when `module`
    was loaded from a library (no object code to write)."""
    mod = getattr(module, "mod", module)  # tvm.compile's Executable wraps the module
    if getattr(mod, "kind", None) != "llvm":
        return False
    mod.write_to_file(str(path))
    return True


def link_library(kernels: Sequence[Any], folder: Path, cache: Path | None) -> list[str]:
    """Write the libraries that hold `kernels` (`build.GroupKernel`) into `folder`: one
    ``kernels.so`` linked from their object files (from the kernel cache, or written from
    the in-process module), plus a copy of the library of each kernel that has no object
    file. Returns the file names written."""
    from tvm.support import cc

    folder = Path(folder)
    objects: list[str] = []
    copies: dict[Path, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for k in kernels:
            cached = cache / f"{k.digest}.o" if cache is not None else None
            if cached is not None and cached.is_file():
                objects.append(str(cached))
                continue
            obj = Path(tmp) / f"{k.digest}.o"
            if write_object(k.module, obj):
                objects.append(str(obj))
            elif k.library is not None:
                name = f"lib-{hashlib.sha256(str(k.library).encode()).hexdigest()[:12]}.so"
                copies.setdefault(Path(k.library), name)
            else:
                raise RuntimeError(f"kernel {k.digest}: neither object code nor a library")
        names: list[str] = []
        if objects:
            out = folder / LIBRARY_NAME
            cc.create_shared(str(out), sorted(set(objects)))
            names.append(out.name)
    for src, name in copies.items():
        shutil.copyfile(src, folder / name)
        names.append(name)
    return names
