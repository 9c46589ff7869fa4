"""The standard benchmark models, built as ONNX by our own code, and a file cache for them.

No trained weights are downloaded and no deep-learning framework is needed: each builder
writes the real topology (ResNet-50, MobileNetV2, BERT...) with `onnx.helper` and random,
seeded weights, so a model is reproducible from its name and arguments. `build` writes it
once to ``benchmarks/.cache`` (git-ignored) and hands back the path; tests and benchmarks
import from that path, as they would a downloaded model::

    from benchmarks.models import build
    path = build("resnet50", batch="batch")

The file name holds a hash of the arguments and of the builders' source, so editing a builder
never serves a stale file.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import onnx

from .bert import bert_base, bert_tiny
from .mobilenet import mobilenetv2
from .resnet import resnet50
from .small import mlp, small_cnn

__all__ = [
    "DEFAULT_CACHE_DIR",
    "MODELS",
    "bert_base",
    "bert_tiny",
    "build",
    "cache_key",
    "mlp",
    "mobilenetv2",
    "resnet50",
    "save_model",
    "small_cnn",
]

#: Every standard model by name; each builder takes keyword arguments only (``batch``...).
MODELS: dict[str, Callable[..., onnx.ModelProto]] = {
    "resnet50": resnet50,
    "mobilenetv2": mobilenetv2,
    "bert": bert_base,
    "bert_tiny": bert_tiny,
    "mlp": mlp,
    "small_cnn": small_cnn,
}

#: Where `build` writes models unless told otherwise (listed in ``.gitignore``).
DEFAULT_CACHE_DIR = Path(__file__).resolve().parents[1] / ".cache"

#: Protobuf cannot serialize a message of 2 GiB or more; bigger models keep their weights
#: in a ``.data`` file beside the model.
_EXTERNAL_DATA_BYTES = 2_000_000_000
_HERE = Path(__file__).resolve().parent


def cache_key(name: str, **kwargs: Any) -> str:
    """The 16-hex-digit hash naming ``name(**kwargs)`` in the cache.

    It covers the model name, the arguments and the source of every builder module, so a
    change to any builder changes every key.
    """
    h = hashlib.sha256()
    h.update(json.dumps([name, sorted(kwargs.items())], default=repr).encode())
    for source in sorted(_HERE.glob("*.py")):
        h.update(source.name.encode())
        h.update(source.read_bytes())
    return h.hexdigest()[:16]


def build(name: str, cache_dir: str | os.PathLike[str] | None = None, **kwargs: Any) -> Path:
    """Build a standard model into the cache, or reuse the file built before.

    Args:
        name: a key of `MODELS`.
        cache_dir: where to write; `DEFAULT_CACHE_DIR` when None. Created if missing.
        **kwargs: passed to the builder (``batch="batch"``, ``seq=64``...).

    Returns:
        The path of ``<cache_dir>/<name>-<cache_key>.onnx``. Models of 2 GB or more keep
        their weights in ``<same name>.data`` beside it.

    Raises:
        KeyError: `name` is not a known model (the message lists the known ones).
    """
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; known models: {', '.join(sorted(MODELS))}")
    folder = Path(cache_dir) if cache_dir is not None else DEFAULT_CACHE_DIR
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-{cache_key(name, **kwargs)}.onnx"
    if path.exists():
        return path
    save_model(MODELS[name](**kwargs), path)
    return path


def save_model(model: onnx.ModelProto, path: str | os.PathLike[str]) -> Path:
    """Write `model` to `path` atomically (a temporary file, then `os.replace`).

    Readers never see a half-written file, and two processes building the same model at
    once both succeed. Models of 2 GB or more get their weights in ``<path>.data``.

    Args:
        model: the model to write.
        path: the destination file.

    Returns:
        `path` as a `Path`.
    """
    path = Path(path)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        tmp = tmp_dir / path.name
        if model.ByteSize() >= _EXTERNAL_DATA_BYTES:
            data = f"{path.name}.data"
            onnx.save_model(model, tmp, save_as_external_data=True, all_tensors_to_one_file=True,
                            location=data, size_threshold=1024)  # fmt: skip
            os.replace(tmp_dir / data, path.parent / data)
        else:
            onnx.save_model(model, tmp)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return path
