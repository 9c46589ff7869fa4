"""Generated kernel source on disk: one file per distinct source text, named by its hash.

Numba's ``cache=True`` needs a function defined in a real file (source run through ``exec``
has no cache locator), and keys its cache on that file's path, modification time and the
CPU. So every generated module is written once to ``<cache>/k_<sha256[:20]>.py`` (atomically,
never rewritten: rewriting would change the time stamp and invalidate Numba's index) and
imported with `importlib.util.spec_from_file_location`; Numba keeps the machine code in the
``__pycache__`` folder beside it. A second compile of the same model, in this process or a
new one, finds both and loads machine code instead of compiling (about 0.2 s instead of
1.5 s per kernel).

The folder is ``$LEPTON_CACHE_DIR/numba`` when ``LEPTON_CACHE_DIR`` is set, and
``~/.cache/lepton/numba`` by default; ``LEPTON_CACHE_DIR=off`` puts the files in a temporary
folder removed when the process exits (nothing persists).
"""

from __future__ import annotations

import atexit
import hashlib
import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path
from types import ModuleType

__all__ = ["load_source", "source_cache_dir", "source_path"]

_OFF = ("off", "0", "none", "false")
_tmp_dir: Path | None = None
_modules: dict[str, ModuleType] = {}


def source_cache_dir() -> Path:
    """The folder generated kernel sources (and Numba's machine code) are kept in."""
    global _tmp_dir
    env = os.environ.get("LEPTON_CACHE_DIR", "")
    if env.lower() in _OFF:
        if _tmp_dir is None:
            _tmp_dir = Path(tempfile.mkdtemp(prefix="lepton-numba-"))
            atexit.register(shutil.rmtree, _tmp_dir, True)
        return _tmp_dir
    base = Path(env).expanduser() if env else Path.home() / ".cache" / "lepton"
    return base / "numba"


def digest(source: str) -> str:
    """The content hash that names a source file."""
    return hashlib.sha256(source.encode("utf-8")).hexdigest()[:20]


def source_path(source: str) -> Path:
    """Where the module with this source text lives (written by `load_source`)."""
    return source_cache_dir() / f"k_{digest(source)}.py"


def load_source(source: str) -> ModuleType:
    """Import the module whose text is `source`, writing its file first when absent.

    Modules are kept per process: the same text imports once.
    """
    path = source_path(source)
    key = str(path)
    mod = _modules.get(key)
    if mod is not None:
        return mod
    if not path.is_file() or path.read_text(encoding="utf-8") != source:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(source)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    name = f"lepton_numba_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    _modules[key] = mod
    return mod
