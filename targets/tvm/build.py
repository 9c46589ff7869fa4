"""Build a fused group into a callable kernel: plan it (`kernels.plan_group`), schedule it,
`tvm.compile` it, and cache the result.

`build_group(fused_node, target_dict)` returns a `GroupKernel` that runs on numpy arrays (all of
the fused node's inputs, in order; it picks the ones the kernel reads).

Two caches, both keyed by the plan's key (shapes, attributes, ops, schedule config), the
target, and a hash of this package's source (so editing a schedule never serves stale code):

- in memory: layers of the same shape share one build;
- on disk (`kernel_cache_dir`, default ``~/.cache/lepton/tvm``, ``LEPTON_CACHE_DIR`` moves
  it, ``LEPTON_CACHE_DIR=off`` turns it off): each built kernel is kept as an object file
  and a shared library (`library`), so a second compile of a model, in any process, skips
  scheduling and LLVM. Writes are atomic (a temporary file renamed into place).

Extra read-only *stores* (``stores=``) are searched first: a saved artifact's kernel folder
(one library with all its kernels, `library.link_library`) is one, which is how
`lepton_compiler.load` runs a TVM model without compiling anything.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tvm

from lepton_compiler.ir import Node

from .guard import guard_side, guarded_empty, guarded_tensor
from .kernels import KernelPlan, plan_group
from .library import find_kernel, kernel_symbol, link_library, write_object
from .te_ops import LoweringError

__all__ = [
    "GroupKernel",
    "build_group",
    "clear_cache",
    "host_target",
    "kernel_cache_dir",
    "source_hash",
]

#: Kernels by (digest, how the group's values map onto the kernel): groups that compute the
#: same thing on values of other IR shapes (a MatMul on [2,3,4] or on [6,4]) share the
#: compiled module but not the GroupKernel, which carries the shapes.
_CACHE: dict[tuple[str, tuple[Any, ...]], GroupKernel] = {}
_MODULES: dict[str, tuple[Any, Path | None]] = {}  # digest -> (module, library it came from)
#: Plans of the kernels built in this process, by digest (tuning needs their workloads).
_plans: dict[str, KernelPlan] = {}
_LOCK = threading.Lock()
_SOURCE_HASH: str | None = None


def host_target(num_cores: int | None = None) -> dict[str, Any]:
    """A target dict for this machine's CPU (LLVM's host CPU name, all cores by default)."""
    cpu = str(tvm.target.codegen.llvm_get_system_cpu()) if _has_system_cpu() else "x86-64"
    return {"kind": "llvm", "mcpu": cpu, "num-cores": num_cores or os.cpu_count() or 1}


def _has_system_cpu() -> bool:
    return hasattr(tvm.target.codegen, "llvm_get_system_cpu")


def source_hash() -> str:
    """A hash of every Python file of this package and of TVM's version: part of every
    cache key."""
    global _SOURCE_HASH
    if _SOURCE_HASH is None:
        h = hashlib.sha256(str(tvm.__version__).encode())
        root = Path(__file__).resolve().parent
        for p in sorted(root.rglob("*.py")):
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
        _SOURCE_HASH = h.hexdigest()[:16]
    return _SOURCE_HASH


def kernel_cache_dir() -> Path | None:
    """The on-disk kernel cache folder, or None when ``LEPTON_CACHE_DIR=off``."""
    env = os.environ.get("LEPTON_CACHE_DIR", "")
    if env.lower() in ("off", "0", "none", "false"):
        return None
    base = Path(env).expanduser() if env else Path.home() / ".cache" / "lepton"
    return base / "tvm"


@dataclass
class GroupKernel:
    """A built kernel for one fused group.

    Attributes:
        func: the compiled PrimFunc, called as ``func(*params, *outputs)`` on tvm tensors.
        input_indices: which of the fused node's inputs are kernel parameters, in order.
        param_shapes: the shapes the kernel declares for them (a flat-layout kernel declares
            ``[..., H*W]`` for NCHW tensors: same memory, reshaped on the way in; a packed
            parameter has its packed shape).
        output_shapes: shapes of the outputs in the IR.
        kernel_output_shapes: the shapes the kernel writes (same memory).
        config: the schedule config, if the family has one.
        device: the device the kernel runs on.
        digest: the cache key's hash (names the kernel's library file).
        family: the kernel family's name.
        packs: parameter position -> NumPy transform into the declared layout.
        module: the runtime module holding `func`.
        from_disk: True when the machine code came from a cache or store, not from LLVM.
        library: the library file `module` was loaded from (None: compiled in-process).
        base_digest: the digest with the hand schedule (tuning choices are keyed by it;
            equal to `digest` unless a tuned schedule is used).
    """

    func: Any
    input_indices: list[int]
    param_shapes: list[tuple[int, ...]]
    output_shapes: list[tuple[int, ...]]
    kernel_output_shapes: list[tuple[int, ...]]
    config: Any
    device: Any
    digest: str
    family: str = ""
    packs: dict[int, Callable[[np.ndarray], np.ndarray]] = field(default_factory=dict)
    param_dtypes: list[str] = field(default_factory=list)
    output_dtypes: list[str] = field(default_factory=list)
    module: Any = None
    from_disk: bool = False
    base_digest: str = ""
    library: Path | None = None

    @property
    def source_key(self) -> str:
        """Same as `digest` (kernels with equal keys are one object)."""
        return self.digest

    def convert(self, pos: int, value: Any) -> np.ndarray:
        """Parameter `pos` as the kernel wants it: dtype, packed layout, declared shape."""
        dtype = self.param_dtypes[pos] if self.param_dtypes else "float32"
        arr = np.asarray(value)
        pack = self.packs.get(pos)
        if pack is not None:
            arr = pack(arr)
        return np.ascontiguousarray(arr, dtype).reshape(self.param_shapes[pos])

    def __call__(self, *inputs: np.ndarray) -> list[np.ndarray]:
        """Run on numpy arrays: every input of the fused node, in the node's order."""
        outs = self.prepare(inputs)
        self.func(*outs)
        results = outs[len(self.input_indices) :]
        return [o.numpy().reshape(s) for o, s in zip(results, self.output_shapes, strict=True)]

    def empty_outputs(self) -> list[Any]:
        """Fresh output tensors on the kernel's device (in the kernel's shapes)."""
        dts = self.output_dtypes or ["float32"] * len(self.kernel_output_shapes)
        side = guard_side()
        return [
            guarded_empty(s, dt, side) if side else tvm.runtime.empty(s, dt, self.device)
            for s, dt in zip(self.kernel_output_shapes, dts, strict=True)
        ]

    def prepare(self, inputs: Sequence[np.ndarray]) -> list[Any]:
        """Device tensors for the kernel's parameters, then outputs (for timing loops)."""
        side = guard_side()  # LEPTON_TVM_GUARD: every argument against a guard page
        args = [
            guarded_tensor(self.convert(pos, inputs[i]), side)
            if side
            else tvm.runtime.tensor(self.convert(pos, inputs[i]), self.device)
            for pos, i in enumerate(self.input_indices)
        ]
        return [*args, *self.empty_outputs()]


def clear_cache() -> None:
    """Forget every kernel built in this process (the disk cache stays)."""
    with _LOCK:
        _CACHE.clear()
        _MODULES.clear()


def _digest(plan: KernelPlan, tdict: Mapping[str, Any]) -> str:
    text = json.dumps(
        [repr(plan.key), plan.family, dict(tdict), source_hash()], sort_keys=True, default=str
    )
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def build_group(
    fused: Node,
    target: Mapping[str, Any] | None = None,
    stores: Sequence[Path] = (),
) -> GroupKernel:
    """Plan, schedule and compile one fused group (cached in memory and on disk).

    Args:
        fused: a ``lepton.Fused`` node whose anchor some kernel family owns.
        target: a TVM target dict, e.g. ``{"kind": "llvm", "mcpu": "sapphirerapids",
            "num-cores": 2}``; default: `host_target()`.
        stores: extra folders of prebuilt kernel libraries (``<digest>.so``), searched
            before the cache.

    Returns:
        The kernel; call it with the fused node's inputs as numpy arrays.

    Raises:
        LoweringError: the group holds an op or attribute the backend does not handle.
    """
    if fused.op != "lepton.Fused":
        raise LoweringError(f"build_group expects a lepton.Fused node, got {fused.op}")
    tdict = dict(target) if target is not None else host_target()
    tgt = tvm.target.Target(tdict)
    plan = plan_group(fused, tgt)
    hand_digest = _digest(plan, tdict)
    tuned = _tuned_token(hand_digest, tdict) if plan.workload is not None else None
    digest = hand_digest if tuned is None else f"{hand_digest[:16]}t{tuned[:7]}"
    meta = (
        tuple(plan.input_indices),
        tuple(plan.param_shapes),
        tuple(plan.output_shapes),
        tuple(plan.kernel_output_shapes),
    )
    with _LOCK:
        hit = _CACHE.get((digest, meta))
        built = _MODULES.get(digest)
    if hit is not None:
        return hit
    module, library = built if built is not None else _load_prebuilt(digest, stores)
    if module is None:
        sch = None
        if tuned is not None:
            from .tune import tuned_schedule

            sch = tuned_schedule(plan.workload(), tdict)  # type: ignore[misc]
            if sch is None:  # the database lost the record: hand schedule
                digest = hand_digest
        if sch is None:
            sch = plan.make()
        module = compile_kernel(getattr(sch, "mod", sch), tgt, kernel_symbol(digest))
        _store(module, digest)
    kernel = GroupKernel(
        func=module[kernel_symbol(digest)],
        input_indices=plan.input_indices,
        param_shapes=plan.param_shapes,
        output_shapes=plan.output_shapes,
        kernel_output_shapes=plan.kernel_output_shapes,
        config=plan.config,
        device=tvm.cpu(0),
        digest=digest,
        family=plan.family,
        packs=plan.packs,
        param_dtypes=plan.param_dtypes or ["float32"] * len(plan.param_shapes),
        output_dtypes=plan.output_dtypes or ["float32"] * len(plan.kernel_output_shapes),
        module=module,
        from_disk=library is not None,
        base_digest=hand_digest,
        library=library,
    )
    with _LOCK:
        _CACHE[(digest, meta)] = kernel
        _MODULES[digest] = (module, library)
        _plans[hand_digest] = plan
    return kernel


def _tuned_token(digest: str, tdict: Mapping[str, Any]) -> str | None:
    """The tuning choice for the kernel (None: hand schedule, or no tuning database)."""
    from .tune import choice_for

    return choice_for(digest, tdict)


def compile_kernel(mod: Any, target: Any, symbol: str = "main") -> Any:
    """LLVM-compile one scheduled kernel module (the only place kernels are compiled), its
    ``main`` function under the name `symbol`. Parameters are compiled without an alignment
    promise (`unaligned_params`), so a kernel may read a caller's array in place."""
    func = mod if isinstance(mod, tvm.tirx.PrimFunc) else mod["main"]
    func = unaligned_params(func)
    if symbol != "main":
        func = func.with_attr("global_symbol", symbol)
    return tvm.compile(tvm.IRModule({symbol: func}), target=target)


def unaligned_params(func: Any) -> Any:
    """`func` with every buffer parameter declared aligned to its element size only.

    TVM declares parameter buffers 64-byte aligned, and LLVM may then use aligned vector
    moves, which fault on other addresses; the executors pass the caller's input arrays to
    kernels without a copy (NumPy's are 16-byte aligned), so no kernel may assume more. On
    the aligned tensors the executors allocate themselves, unaligned moves cost nothing."""
    from tvm.tirx.buffer import is_buffer_var
    from tvm.tirx.transform.common import BufferReplacer

    relaxed = {}
    for b in func.params:
        if not is_buffer_var(b):
            continue
        size = max(1, tvm.DataType(str(b.dtype)).bits // 8)
        if int(b.data_alignment) <= size:
            continue
        relaxed[b] = tvm.tirx.decl_buffer(
            b.shape, b.dtype, b.name, None, b.strides, b.elem_offset, b.scope(), size,
            b.offset_factor,
        )  # fmt: skip
    return BufferReplacer(relaxed)(func) if relaxed else func


def borrowed_tensor(arr: np.ndarray) -> Any | None:
    """A TVM tensor over `arr`'s own memory (no copy), or None when `arr` cannot be lent
    as it is (not C-contiguous, empty, or a dtype DLPack does not carry). Kernels may read
    it in place: they promise no alignment (`unaligned_params`)."""
    import tvm_ffi

    if not arr.flags.c_contiguous or arr.size == 0:
        return None
    try:
        return tvm_ffi.from_dlpack(arr, require_alignment=0)
    except (BufferError, TypeError, ValueError, RuntimeError):
        return None


def _load_prebuilt(digest: str, stores: Sequence[Path]) -> tuple[Any, Path | None]:
    cache = kernel_cache_dir()
    found = find_kernel(digest, [*stores, *([cache] if cache is not None else [])])
    return found if found is not None else (None, None)


def _store(module: Any, digest: str) -> None:
    """Write `module` into the disk cache as ``<digest>.o`` and ``<digest>.so``
    (atomically; failures only cost a rebuild)."""
    cache = kernel_cache_dir()
    if cache is None:
        return
    try:
        cache.mkdir(parents=True, exist_ok=True)
        for suffix in (".o", ".so"):
            fd, tmp = tempfile.mkstemp(suffix=suffix, dir=cache, prefix=".tmp-")
            os.close(fd)
            try:
                if suffix == ".o":
                    write_object(module, Path(tmp))
                else:
                    module.export_library(tmp)
                os.replace(tmp, cache / f"{digest}{suffix}")
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
    except OSError:
        pass


def export_kernels(kernels: Sequence[GroupKernel], folder: Path) -> list[str]:
    """Write the library (or libraries) holding `kernels` into `folder`; returns the file
    names (`library.link_library`)."""
    return link_library(kernels, Path(folder), kernel_cache_dir())
