"""Calibration data from files: ``.npz`` / ``.npy`` arrays turned into model input dicts.

What ``lepton-compile model.onnx --int8 --calibrate data.npz`` reads:

- an ``.npz`` file holds one array per model input, keyed by input name (a model with one input
  accepts a lone array under any key);
- an ``.npy`` file holds the array of a single-input model;
- a folder stands for every ``.npz`` and ``.npy`` file directly in it, in sorted order.

The first axis of every array is the sample axis. When an array has the model input's rank,
that axis *is* the model's batch axis: samples are handed out one at a time with the batch axis
kept (``[1, ...]``) when the batch dim is symbolic or unknown, or in batches of the model's
static batch size. When an array has one axis more than the input, each entry along the first
axis is one whole input.

Every file is checked up front from its headers (existence, format, keys, shapes), so a bad
file is one `InputError` before calibration starts; the arrays themselves are then read one
file at a time (``.npy`` through a memory map), so memory stays bounded.
"""

from __future__ import annotations

import os
import warnings
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from lepton_compiler.errors import InputError

#: File suffixes read as calibration data.
SUFFIXES = (".npz", ".npy")


@dataclass(frozen=True)
class _Array:
    """One array of a file, known from its header."""

    key: str
    shape: tuple[int, ...]
    dtype: np.dtype


@dataclass(frozen=True)
class _Feed:
    """How one model input is cut from its array: `step` samples per item (None: each
    sample is a whole input, the sample axis is dropped)."""

    name: str
    key: str
    step: int | None


@dataclass(frozen=True)
class _Plan:
    """One file: its path, how each input is cut, and how many input dicts it yields."""

    path: Path
    feeds: tuple[_Feed, ...]
    items: int


def load_calibration_data(
    paths: Sequence[str | os.PathLike],
    input_names: Sequence[str],
    input_shapes: Mapping[str, Sequence] | None = None,
    *,
    input_dtypes: Mapping[str, Any] | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """Input dicts for calibration, read from ``.npz``/``.npy`` files or folders of them.

    Args:
        paths: files or folders (see the module docstring).
        input_names: the model's input names.
        input_shapes: the model's input shapes by name (dims may be ints, symbolic names or
            None); used to cut batches. Without it, samples come one at a time as ``[1, ...]``.
        input_dtypes: the model's input dtypes by name; float arrays are cast to a float
            input's dtype (``float64`` files for a ``float32`` model). Other dtypes pass as
            stored.

    Returns:
        An iterator of ``{input name: array}`` dicts.

    Raises:
        InputError: a path is missing, not an ``.npz``/``.npy`` file, or corrupt; its keys do
            not match the input names; or an array's shape does not fit its input.
    """
    plans = _plan_all(paths, input_names, input_shapes)
    dtypes = {k: np.dtype(v) for k, v in (input_dtypes or {}).items()}
    return _generate(plans, dtypes)


def count_samples(
    paths: Sequence[str | os.PathLike],
    input_names: Sequence[str] | None = None,
    input_shapes: Mapping[str, Sequence] | None = None,
) -> int:
    """How many samples the files hold (the length of their first axis, summed).

    With `input_names` (and `input_shapes`), it is instead the number of input dicts that
    `load_calibration_data` yields for them, which differs when inputs are cut in batches.

    Raises:
        InputError: as `load_calibration_data`.
    """
    if input_names is not None:
        return sum(p.items for p in _plan_all(paths, input_names, input_shapes))
    total = 0
    for path in _expand(paths):
        arrays = _headers(path)
        total += _sample_count(path, list(arrays.values()))
    return total


# -- planning -----------------------------------------------------------------------------------


def _plan_all(
    paths: Sequence[str | os.PathLike],
    input_names: Sequence[str],
    input_shapes: Mapping[str, Sequence] | None,
) -> list[_Plan]:
    if not input_names:
        raise InputError("the model has no inputs to calibrate")
    plans = []
    for p in _expand(paths):  # a loop, not a comprehension: warnings name the caller's line
        plans.append(_plan(p, input_names, input_shapes or {}))
    return plans


def _expand(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Files to read: each path, or the data files in it when it is a folder."""
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    if not paths:
        raise InputError("no calibration data files given")
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.suffix in SUFFIXES and f.is_file())
            if not found:
                raise InputError(f"calibration folder {str(p)!r} holds no .npz or .npy files")
            files.extend(found)
        elif not p.exists():
            raise InputError(f"calibration data {str(p)!r}: no such file or folder")
        elif p.suffix not in SUFFIXES:
            raise InputError(
                f"calibration data {str(p)!r} is not an .npz or .npy file (or a folder of them)"
            )
        else:
            files.append(p)
    return files


def _plan(path: Path, names: Sequence[str], shapes: Mapping[str, Sequence]) -> _Plan:
    arrays = _headers(path)
    keys = _match_keys(path, arrays, names)
    n = _sample_count(path, list(arrays.values()))
    feeds, items = [], set()
    for name in names:
        arr = arrays[keys[name]]
        step = _step(path, name, arr, shapes.get(name))
        feeds.append(_Feed(name, arr.key, step))
        per = n if step is None else n // step
        if step is not None and n % step and n >= step:
            warnings.warn(
                f"{path}: {n} samples do not fill batches of {step} for input {name!r}; "
                f"the last {n % step} are left out",
                stacklevel=4,
            )
        if step is not None and 0 < n < step:
            raise InputError(
                f"calibration file {str(path)!r} has {n} samples, fewer than the model's "
                f"batch size {step} for input {name!r}"
            )
        items.add(per)
    return _Plan(path, tuple(feeds), items.pop())


def _match_keys(path: Path, arrays: Mapping[str, _Array], names: Sequence[str]) -> dict[str, str]:
    """Array key per input name."""
    if len(names) == 1 and len(arrays) == 1:
        return {names[0]: next(iter(arrays))}
    if set(arrays) == set(names):
        return {n: n for n in names}
    if path.suffix == ".npy":
        raise InputError(
            f"calibration file {str(path)!r} is an .npy file (one array), but the model has "
            f"{len(names)} inputs {list(names)}; use an .npz file with one array per input"
        )
    missing = [n for n in names if n not in arrays]
    extra = [k for k in arrays if k not in names]
    detail = "; ".join(
        [f"missing {missing}"] * bool(missing) + [f"unexpected {extra}"] * bool(extra)
    )
    raise InputError(
        f"calibration file {str(path)!r} holds arrays {list(arrays)} ({detail}); expected "
        f"one array per model input, named {list(names)}"
    )


def _sample_count(path: Path, arrays: Sequence[_Array]) -> int:
    """The common length of the first axis of `arrays`."""
    for a in arrays:
        if not a.shape:
            raise InputError(
                f"calibration file {str(path)!r}: array {a.key!r} is a scalar; the first axis "
                "of every array must be the sample axis"
            )
    lengths = {a.shape[0] for a in arrays}
    if len(lengths) != 1:
        found = ", ".join(f"{a.key!r}: {a.shape[0]}" for a in arrays)
        raise InputError(
            f"calibration file {str(path)!r}: arrays hold different numbers of samples "
            f"({found}); the first axis of every array is the sample axis"
        )
    return lengths.pop()


def _step(path: Path, name: str, arr: _Array, shape: Sequence | None) -> int | None:
    """Samples per item for one input (None: one whole input per sample)."""
    if shape is None:
        return 1
    shape = tuple(shape)
    where = f"calibration file {str(path)!r}: array {arr.key!r} for input {name!r}"
    if len(arr.shape) == len(shape) + 1:
        _check_dims(where, arr.shape[1:], shape, arr.shape)
        return None
    if len(arr.shape) == len(shape) and shape:
        _check_dims(where, arr.shape[1:], shape[1:], arr.shape)
        return shape[0] if isinstance(shape[0], int) and shape[0] > 0 else 1
    want = _fmt(shape)
    raise InputError(
        f"{where} has shape {list(arr.shape)}, expected [samples, ...] matching the input's "
        f"shape {want} (with or without its batch axis)"
    )


def _check_dims(where: str, got: tuple[int, ...], want: Sequence, full: tuple[int, ...]) -> None:
    for g, w in zip(got, want, strict=True):
        if isinstance(w, int) and w != g:
            raise InputError(
                f"{where} has shape {list(full)}, which does not fit the input's shape {_fmt(want)}"
            )


def _fmt(shape: Sequence) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


# -- reading ------------------------------------------------------------------------------------


def _headers(path: Path) -> dict[str, _Array]:
    """Shape and dtype of every array in the file, from the headers only."""
    try:
        if path.suffix == ".npy":
            with path.open("rb") as f:
                return {path.stem: _npy_header(path.stem, f)}
        with zipfile.ZipFile(path) as z:
            members = [m for m in z.namelist() if m.endswith(".npy")]
            if not members:
                raise InputError(f"calibration file {str(path)!r} holds no arrays")
            out = {}
            for m in members:
                with z.open(m) as f:
                    out[m[:-4]] = _npy_header(m[:-4], f)
            return out
    except InputError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        kind = "an .npy" if path.suffix == ".npy" else "an .npz"
        raise InputError(
            f"calibration file {str(path)!r} could not be read as {kind} file: {e}"
        ) from None


def _npy_header(key: str, f: IO[bytes]) -> _Array:
    fmt = np.lib.format
    version = fmt.read_magic(f)
    if version == (1, 0):
        shape, _, dtype = fmt.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, _, dtype = fmt.read_array_header_2_0(f)
    else:
        raise ValueError(f"unsupported .npy format version {version}")
    if dtype.hasobject:
        raise ValueError(f"array {key!r} holds Python objects, not numbers")
    return _Array(key, tuple(shape), dtype)


def _generate(plans: Sequence[_Plan], dtypes: Mapping[str, np.dtype]) -> Iterator[dict]:
    for plan in plans:
        arrays = _load(plan)
        for i in range(plan.items):
            item = {}
            for feed in plan.feeds:
                a = arrays[feed.key]
                x = a[i] if feed.step is None else a[i * feed.step : (i + 1) * feed.step]
                item[feed.name] = _cast(np.array(x), dtypes.get(feed.name))
            yield item
        del arrays


def _load(plan: _Plan) -> Mapping[str, np.ndarray]:
    path = plan.path
    try:
        if path.suffix == ".npy":
            return {path.stem: np.load(path, mmap_mode="r", allow_pickle=False)}
        with np.load(path, allow_pickle=False) as z:
            return {f.key: z[f.key] for f in plan.feeds}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise InputError(f"calibration file {str(path)!r} could not be read: {e}") from None


def _cast(x: np.ndarray, dtype: np.dtype | None) -> np.ndarray:
    """`x` in the input's float dtype when both are floats; else as stored."""
    if dtype is not None and x.dtype != dtype and x.dtype.kind == "f" and dtype.kind == "f":
        return x.astype(dtype)
    return x
