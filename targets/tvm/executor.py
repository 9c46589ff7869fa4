"""`TvmExecutor`: run a compiled graph with TVM kernels where we have them, reference kernels
elsewhere.

At construction the top-level graph is walked in order. Each `lepton.Fused` group, and each
lone node whose op some kernel family takes (wrapped as a one-node group), becomes a TVM
kernel built with our own schedules (`build.build_group`); view ops (Reshape, Flatten,
Squeeze, Unsqueeze, Identity with static shapes) cost nothing (the next kernel reads the same
memory); every other node is a *fallback* that runs its op's reference kernel, exactly as the
interpreter does, and is listed in `fallbacks`. `run` then executes step by step from Python:
one call into a compiled function per kernel, NumPy arrays only where Python reads a value
(reference kernels, staged inputs, graph outputs); a kernel that feeds only kernels is a bare
call, and a view nobody reads from Python is skipped. On BERT-base (293 steps, 158 kernels)
a run takes as long as calling the 158 compiled functions back to back. Where it can, `run`
hands the same steps to the Relax VM instead (`relax_glue.RelaxProgram`, equally fast); the
Python loop remains for graphs the glue cannot express and for `profile`.

Memory plan: at construction every kernel output gets a planned buffer, and buffers share
memory when their lifetimes do not overlap (greedy by first write, best fit; a buffer is free
after the step of its last read, views and reference-kernel outputs that may view it
included). ResNet-50's activations take 9 MB instead of 43 MB, BERT-base's 3.4 MB instead of
73 MB, and the next kernel finds its input still in cache (MobileNetV2 ran about 15 % faster
than with a buffer per value). Weights (constant inputs) are converted and packed once into
their own tensors; a kernel reading another kernel's output gets a zero-copy view of its
buffer; values made by reference kernels or fed by the caller are lent to the kernel in
place (kernels promise no alignment, `build.unaligned_params`: ResNet-50's input copy cost
0.2-0.3 ms a run, the input being out of cache by then), and copied into a staging tensor
only when they must be converted (packed, another dtype) or under the guard. Graph outputs
are copied out, so results stay valid after the next `run`. Because the buffers are shared,
`run` holds a lock (calls from several threads run one at a time).

Symbolic shapes: `TvmExecutor` builds one `StaticExecutor` per concrete input shape
(`lepton_compiler.specialize`), kernels shared through the caches.

BLAS: while `run` executes, the OpenBLAS library NumPy loaded (when found) is set to one
thread and restored afterwards. Its worker threads otherwise keep spinning after a reference
kernel's matrix product and starve TVM's workers: ResNet-50 ran at 135 ms instead of 53 ms on
2 cores because of the classifier Gemm of the previous run.

Threads: the target's thread count is applied with ``TVM_NUM_THREADS`` (set in the environment
when not already set, before the TVM thread pool starts) and with TVM's
``runtime.config_threadpool`` (which resizes the pool of the calling thread).
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lepton_compiler.errors import InputError, LeptonError
from lepton_compiler.interpreter import run_node
from lepton_compiler.ir import Graph, Node, TensorType, Value

from ..graph_steps import by_count as _by_count
from ..graph_steps import copy_out as _copy_out
from ..graph_steps import label as _label
from ..graph_steps import liveness as _liveness
from ..graph_steps import model_flops, profile_rows
from ..graph_steps import view_shape as _view_shape
from ..graph_steps import wrap_single as _wrap_single
from .build import borrowed_tensor
from .guard import guard_side, guarded_empty, guarded_tensor

__all__ = ["StaticExecutor", "TvmExecutor", "model_flops"]


_configured_threads: int | None = None


def _configure_threads(threads: int) -> None:
    """Use `threads` TVM worker threads (see the module docstring).

    The pool is reconfigured only when the count changes: reconfiguring tears down and
    restarts TVM's workers, which is neither cheap nor safe to repeat for every executor
    (a symbolic-batch model builds one per new input shape while running)."""
    global _configured_threads
    os.environ.setdefault("TVM_NUM_THREADS", str(threads))
    if _configured_threads == int(threads):
        return
    import tvm

    config = tvm.get_global_func("runtime.config_threadpool", allow_missing=True)
    if config is not None:
        config(1, int(threads))  # mode 1: "big" cores, i.e. all of them on x86
    _configured_threads = int(threads)


@dataclass
class _Step:
    """One top-level node and how it runs."""

    node: Node
    kernel: Any | None  # GroupKernel, or None for a fallback
    args: list[Any]  # the kernel's arguments: parameter tensors, then output tensors
    #: (argument position, graph value, shape) of parameters copied in on every run
    staged: list[tuple[int, Value, tuple[int, ...]]]
    out_views: list[np.ndarray]  # NumPy views of the output tensors, in the IR's shapes
    view_shape: tuple[int, ...] | None = None  # a view op: output = input reshaped
    #: staging tensor per staged position: the copy target when a value cannot be lent
    stage: dict[int, Any] = field(default_factory=dict)
    params: list[Value] = field(default_factory=list)  # the graph values the kernel reads


@dataclass(eq=False)
class _Buf:
    """A planned activation buffer: written at step `first`, read last at step `last`."""

    nbytes: int
    first: int
    dtype: str
    last: int = -1
    base: Any = None  # the uint8 tensor it lives in, once allocated

    def fits(self, dtype: str, shape: tuple[int, ...]) -> bool:
        """Whether a parameter of this dtype and shape can view this buffer as is."""
        return dtype == self.dtype and math.prod(shape) * np.dtype(dtype).itemsize == self.nbytes


class StaticExecutor:
    """Runs a graph with static shapes: TVM kernels for supported groups, reference kernels
    elsewhere.

    Attributes:
        graph: the graph it runs (top level).
        target_dict: the TVM target dict the kernels were built for.
        fallbacks: ``"<op> ×<count> (reference kernel)"`` per op that runs without a TVM
            kernel, most frequent first.
        native_flops_share: the share of the graph's Conv/MatMul/Gemm FLOPs (static shapes)
            that run in TVM kernels; 1.0 when the graph has none.
        build_errors: per fallback node that was tried and refused, why (node name -> text).
        program: the `relax_glue.RelaxProgram` that `run` uses (the kernels glued by a Relax
            module, run by the Relax VM), or None when a step cannot be expressed there or
            ``LEPTON_TVM_VM=0``: then `run` calls the steps from Python. `profile` always
            times the steps from Python.
    """

    def __init__(self, graph: Graph, target: Any, stores: Sequence[Path] = ()) -> None:
        """Build every kernel.

        Args:
            graph: the optimized, verified graph.
            target: a `lepton_compiler.targets.target.Target` (x86), or a TVM target dict.
            stores: folders of prebuilt kernel libraries searched first (an artifact's).

        Raises:
            LeptonError: the target is not a CPU target.
        """
        if isinstance(target, Mapping):
            tdict = dict(target)
            threads = int(tdict.get("num-cores", os.cpu_count() or 1))
        else:
            if not getattr(target, "is_cpu", False):
                raise LeptonError(f"the TVM executor runs on CPU targets only, got {target}")
            tdict = target.to_tvm_dict()
            threads = int(target.threads)
        _configure_threads(threads)
        import tvm

        from .build import build_group

        self.graph = graph
        self.target_dict = tdict
        self.build_errors: dict[str, str] = {}
        self._device = tvm.cpu(0)
        self._steps: list[_Step] = []
        self._vbuf: dict[Value, _Buf] = {}  # value -> the planned buffer holding it
        self._alias: dict[Value, set[_Buf]] = {}  # fallback outputs -> buffers they may view
        self._plans: list[list[tuple[str, Any]] | None] = []  # per step: how each arg is made
        self._guard = guard_side()  # debugging: every argument against a guard page
        native: Counter[str] = Counter()
        fallback: Counter[str] = Counter()
        views = 0
        for i, node in enumerate(graph.nodes):
            kernel = None
            group_inputs: list[Value] = []
            view_shape = _view_shape(node)
            if view_shape is not None:
                src = self._vbuf.get(node.inputs[0])  # type: ignore[arg-type]
                if src is not None:
                    self._vbuf[node.outputs[0]] = src
                else:
                    self._alias[node.outputs[0]] = self._bufs_of(node.inputs[0])
                self._steps.append(_Step(node, None, [], [], [], view_shape))
                self._plans.append(None)
                views += 1
                continue
            group = _as_group(node)
            if group is not None:
                group_node, group_inputs = group
                try:
                    kernel = build_group(group_node, tdict, stores)
                except Exception as e:  # LoweringError, or a TVM build failure: fall back
                    self.build_errors[node.name] = f"{type(e).__name__}: {e}"
            step = _Step(node, kernel, [], [], [])
            if kernel is not None:
                params = [group_inputs[j] for j in kernel.input_indices]
                self._plans.append(self._plan_kernel(step, params, i))
                native[_label(node)] += 1
            else:
                # A reference kernel may return views of its inputs (Transpose, Slice...):
                # its outputs keep every buffer its inputs live in alive.
                seen: set[_Buf] = set()
                for v in [*node.inputs, *node.outer_values()]:
                    seen |= self._bufs_of(v)
                for v in node.outputs:
                    self._alias[v] = seen
                self._plans.append(None)
                fallback[_label(node)] += 1
            self._steps.append(step)
        self._last_use, self._keep = _liveness(graph)
        self.activation_bytes, self.unshared_bytes = self._allocate()
        self._materialize()
        self.native_ops = dict(native)
        self.num_views = views
        self.fallbacks = [
            f"{op} ×{n} (reference kernel)" for op, n in sorted(fallback.items(), key=_by_count)
        ]
        total, done = 0, 0
        for step in self._steps:
            f = model_flops(step.node)
            total += f
            if step.kernel is not None:
                done += f
        self.native_flops_share = done / total if total else 1.0
        self._fast = self._run_modes()
        self._lock = threading.Lock()
        self.program = None
        if os.environ.get("LEPTON_TVM_VM", "1") != "0" and not self._guard:
            from .relax_glue import build_program

            self.program = build_program(self)

    def _run_modes(self) -> list[int]:
        """Per step, how `_run` treats it: a kernel whose outputs only other kernels read
        (through their buffers) is just called (`_CALL`); a view whose output nobody reads
        from Python is skipped (`_SKIP`); the rest keep NumPy values in the environment
        (`_FULL`). Python reads a value when it is a graph output, an input of a reference
        kernel, a staged kernel parameter, or the input of a view Python reads."""
        needed: set[Value] = set(self.graph.outputs)
        for step in self._steps:
            if step.kernel is None and step.view_shape is None:
                needed.update(v for v in [*step.node.inputs, *step.node.outer_values()] if v)
            for _pos, v, _shape in step.staged:
                needed.add(v)
        modes = [_FULL] * len(self._steps)
        for i in range(len(self._steps) - 1, -1, -1):
            step = self._steps[i]
            out_needed = any(v in needed for v in step.node.outputs)
            if step.view_shape is not None:
                if out_needed:
                    needed.add(step.node.inputs[0])  # type: ignore[arg-type]
                else:
                    modes[i] = _SKIP
            elif step.kernel is not None and not step.staged and not out_needed:
                modes[i] = _CALL
        return modes

    def _bufs_of(self, v: Value | None) -> set[_Buf]:
        """The planned buffers whose memory `v` may live in."""
        if v is None:
            return set()
        own = self._vbuf.get(v)
        return ({own} if own is not None else set()) | self._alias.get(v, set())

    def _plan_kernel(self, step: _Step, params: list[Value], index: int) -> list[tuple[str, Any]]:
        """How each argument of the kernel is made: constants packed now, a producing
        kernel's buffer viewed, or a staging tensor filled on every run (see the module
        docstring). Outputs get planned buffers (`_allocate`)."""
        import tvm

        k = step.kernel
        assert k is not None
        step.params = list(params)
        plan: list[tuple[str, Any]] = []
        for pos, (v, shape) in enumerate(zip(params, k.param_shapes, strict=True)):
            src = self._vbuf.get(v)
            dtype = k.param_dtypes[pos]
            if v.const is not None:
                arr = k.convert(pos, v.const)
                plan.append(
                    ("tensor", guarded_tensor(arr, self._guard))
                    if self._guard
                    else ("tensor", tvm.runtime.tensor(arr, self._device))
                )
            elif src is not None and pos not in k.packs and src.fits(dtype, shape):
                plan.append(("view", (src, shape, dtype)))
            else:
                plan.append(
                    ("tensor", guarded_empty(shape, dtype, self._guard))
                    if self._guard
                    else ("tensor", tvm.runtime.empty(shape, dtype, self._device))
                )
                step.staged.append((pos, v, shape))
        for v, kshape, dtype in zip(
            step.node.outputs, k.kernel_output_shapes, k.output_dtypes, strict=True
        ):
            buf = _Buf(math.prod(kshape) * np.dtype(dtype).itemsize, index, dtype)
            self._vbuf[v] = buf
            plan.append(("view", (buf, kshape, dtype)))
        return plan

    def _allocate(self) -> tuple[int, int]:
        """Give every planned buffer memory, reusing the memory of buffers no longer read
        (greedy by first write, best fit). A buffer is free only after the step of its last
        read: a kernel never writes memory it reads in the same step.

        Returns:
            (bytes allocated, bytes without reuse).
        """
        import tvm

        bufs = list(dict.fromkeys([*self._vbuf.values()]))
        end = len(self._steps)
        for i, node in enumerate(self.graph.nodes):
            for v in [*node.inputs, *node.outer_values()]:
                for b in self._bufs_of(v):
                    b.last = max(b.last, i)
        for v in self.graph.outputs:
            for b in self._bufs_of(v):
                b.last = end
        free: list[Any] = []  # base tensors (uint8) not in use
        active: list[_Buf] = []
        total = 0
        if self._guard:  # no sharing: each buffer ends (or starts) at a guard page
            for b in bufs:
                b.base = guarded_empty((b.nbytes,), "uint8", self._guard)
            total = sum(b.nbytes for b in bufs)
            return total, total
        for b in sorted(bufs, key=lambda b: b.first):
            for a in [a for a in active if a.last < b.first]:
                active.remove(a)
                free.append(a.base)
            fits = [t for t in free if t.shape[0] >= b.nbytes]
            if fits:
                base = min(fits, key=lambda t: t.shape[0])
                free.remove(base)
            else:
                base = tvm.runtime.empty((max(b.nbytes, 64),), "uint8", self._device)
                total += base.shape[0]
            b.base = base
            active.append(b)
        return total, sum(b.nbytes for b in bufs)

    def _materialize(self) -> None:
        """Turn every kernel step's plan into its argument tensors."""
        for step, plan in zip(self._steps, self._plans, strict=True):
            if plan is None or step.kernel is None:
                continue
            k = step.kernel
            n_params = len(k.param_shapes)
            for j, (kind, what) in enumerate(plan):
                if kind == "tensor":
                    step.args.append(what)
                    continue
                buf, shape, dtype = what
                view = buf.base._create_view(tuple(shape), dtype)
                step.args.append(view)
                if j >= n_params:
                    out_shape = k.output_shapes[j - n_params]
                    step.out_views.append(np.from_dlpack(view).reshape(out_shape))
            step.stage = {pos: step.args[pos] for pos, _v, _shape in step.staged}
        self._plans = []

    @property
    def kernels(self) -> list[Any]:
        """The distinct built kernels (`build.GroupKernel`), in first-use order."""
        seen: dict[str, Any] = {}
        for s in self._steps:
            if s.kernel is not None:
                seen.setdefault(s.kernel.digest, s.kernel)
        return list(seen.values())

    def export_kernels(self, folder: Path) -> dict[str, Any]:
        """Write one library with every distinct kernel into `folder` (``kernels.so``);
        returns the manifest entry that describes it."""
        return _export(self.kernels, self.target_dict, folder)

    @property
    def num_kernels(self) -> int:
        """Top-level nodes that run as TVM kernels."""
        return sum(1 for s in self._steps if s.kernel is not None)

    def __call__(self, feeds: dict[str, Any]) -> dict[str, Any]:
        """Same as `run` (so the executor is a `CompiledModel` executor callable)."""
        return self.run(feeds)

    def run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        """Run the graph.

        Args:
            feeds: a value for every graph input, by name.

        Returns:
            Every graph output by name.

        Raises:
            InputError: an input is missing.
            LoweringError: a reference kernel failed.
        """
        with self._lock, _blas_threads(1):
            if self.program is not None:
                return self.program.run(_checked(self.graph, feeds))
            return self._run(feeds)

    def profile(self, feeds: Mapping[str, Any], repeat: int = 10) -> list[dict[str, Any]]:
        """Time every step over `repeat` runs (after one warm-up run).

        Returns:
            One row per step kind (``label``: the group's ops, ``kind``: ``tvm:<family>``
            or ``reference``), with ``count`` (steps per run), ``ms`` (median total per run)
            and ``share`` of the summed step time, slowest first.
        """
        with self._lock, _blas_threads(1):
            self._run(feeds)
            per_step = [[0.0] * repeat for _ in self._steps]
            for r in range(repeat):
                self._run(feeds, lambda i, dt, r=r: per_step[i].__setitem__(r, dt))  # type: ignore[misc]
        return profile_rows(self._steps, per_step, "tvm")

    def _run(
        self,
        feeds: Mapping[str, Any],
        timer: Callable[[int, float], None] | None = None,
    ) -> dict[str, Any]:
        graph = self.graph
        env: dict[Value, Any] = {}
        for v in graph.inputs:
            if v.name not in feeds:
                raise InputError(f"missing input {v.name!r}")
            env[v] = feeds[v.name]
        for c in graph.initializers.values():
            env[c] = c.const
        clock = _perf_counter if timer is not None else None
        outs: list[Any]
        fast = self._fast
        for i, step in enumerate(self._steps):
            mode = fast[i]
            if mode == _CALL and clock is None:
                step.kernel.func(*step.args)  # type: ignore[union-attr]
                continue
            if mode == _SKIP:
                continue
            node = step.node
            t0 = clock() if clock is not None else 0.0
            if step.view_shape is not None:
                x = env[node.inputs[0]]  # type: ignore[index]
                outs = [
                    x.reshape(step.view_shape)
                    if isinstance(x, np.ndarray)
                    else run_node(node, env)[0]
                ]
            elif step.kernel is not None:
                for pos, v, _shape in step.staged:
                    arr = step.kernel.convert(pos, env[v])
                    lent = None if self._guard else borrowed_tensor(arr)
                    if lent is None:
                        lent = step.stage[pos]
                        lent.copyfrom(arr)
                    step.args[pos] = lent
                step.kernel.func(*step.args)
                outs = step.out_views
            else:
                outs = run_node(node, env)
            if mode != _CALL:
                for v, r in zip(node.outputs, outs, strict=False):
                    env[v] = r
            if clock is not None and timer is not None:
                timer(i, clock() - t0)
            for v in node.inputs:
                if v is not None and self._last_use.get(v) == i and v not in self._keep:
                    env.pop(v, None)
        return {v.name: _copy_out(env[v]) for v in graph.outputs}


class TvmExecutor:
    """The TVM backend's executor: a `StaticExecutor` per concrete input shape.

    A graph with static shapes has one, built at construction. A graph with symbolic
    dimensions (a batch) is specialized (`lepton_compiler.specialize`) for every new input
    shape `run` meets and built then (kernels come from the caches when a shape was seen
    before, in this process or on disk); at construction it is built for every symbolic
    size 1, so compile-time errors, the report and the common batch-1 case come first.
    The attributes describe the most recently used specialization.
    """

    #: Specializations kept at once (least recently used dropped first).
    MAX_SPECIALIZATIONS = 8

    def __init__(self, graph: Graph, target: Any, stores: Sequence[Path] = ()) -> None:
        """Build the executor (see the class docstring).

        Args:
            graph: the optimized, verified graph.
            target: a `lepton_compiler.targets.target.Target` (x86), or a TVM target dict.
            stores: folders of prebuilt kernel libraries searched first (an artifact's).
        """
        from lepton_compiler.specialize import has_symbolic_shapes

        self.graph = graph
        self._target = target
        self._stores = list(stores)
        self.symbolic = has_symbolic_shapes(graph)
        self._by_shape: dict[tuple[Any, ...], StaticExecutor] = {}
        self._lock = threading.Lock()
        if not self.symbolic:
            self._current = StaticExecutor(graph, target, stores)
        else:
            ones = {
                v.name: [d if isinstance(d, int) else 1 for d in v.type.shape]
                for v in graph.inputs
                if isinstance(v.type, TensorType) and v.type.shape is not None
            }
            self._current = self._specialization(ones)

    def _specialization(self, shapes: Mapping[str, Sequence[int]]) -> StaticExecutor:
        from lepton_compiler.specialize import specialize

        key = tuple(sorted((k, tuple(int(d) for d in v)) for k, v in shapes.items()))
        ex = self._by_shape.pop(key, None)
        if ex is None:
            ex = StaticExecutor(specialize(self.graph, shapes), self._target, self._stores)
        self._by_shape[key] = ex  # most recently used last
        while len(self._by_shape) > self.MAX_SPECIALIZATIONS:
            self._by_shape.pop(next(iter(self._by_shape)))
        return ex

    def __call__(self, feeds: dict[str, Any]) -> dict[str, Any]:
        """Same as `run`."""
        return self.run(feeds)

    def run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        """Run the graph, specialized for the feeds' shapes when it has symbolic ones."""
        return self._for(feeds).run(feeds)

    def profile(self, feeds: Mapping[str, Any], repeat: int = 10) -> list[dict[str, Any]]:
        """`StaticExecutor.profile` of the specialization for the feeds' shapes."""
        return self._for(feeds).profile(feeds, repeat)

    def _for(self, feeds: Mapping[str, Any]) -> StaticExecutor:
        """The specialization for the feeds' shapes (made current)."""
        if self.symbolic:
            shapes = {
                v.name: np.shape(feeds[v.name])
                for v in self.graph.inputs
                if v.name in feeds and isinstance(v.type, TensorType)
            }
            with self._lock:
                self._current = self._specialization(shapes)
        return self._current

    def __getattr__(self, name: str) -> Any:
        # fallbacks, native_flops_share, kernels, build_errors, num_kernels, export_kernels...
        if name.startswith("__") or name in ("_current", "_by_shape"):
            raise AttributeError(name)
        return getattr(self._current, name)

    @property
    def kernels(self) -> list[Any]:
        """Every distinct kernel of every specialization built so far."""
        seen: dict[str, Any] = {}
        for ex in [self._current, *self._by_shape.values()]:
            for k in ex.kernels:
                seen.setdefault(k.digest, k)
        return list(seen.values())

    def export_kernels(self, folder: Path) -> dict[str, Any]:
        """Write the library of every specialization's kernels into `folder`."""
        return _export(self.kernels, self.target_dict, folder)


#: How `StaticExecutor._run` treats a step (see `StaticExecutor._run_modes`).
_FULL, _CALL, _SKIP = 0, 1, 2

#: Ops that only reinterpret their first input's memory with another (static) shape.


def _export(kernels: list[Any], target_dict: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Write the library holding `kernels` into `folder`; the artifact manifest's entry."""
    import tvm

    from .build import export_kernels

    return {
        "tvm_version": str(tvm.__version__),
        "target": target_dict,
        "libraries": export_kernels(kernels, Path(folder)),
        "kernels": [k.digest for k in kernels],
    }


def _perf_counter() -> float:
    import time

    return time.perf_counter()


_BLAS_PREFIXES = ("openblas", "scipy_openblas", "openblas64_", "scipy_openblas64_")
_BLAS_SUFFIXES = ("", "64_")
_blas_funcs: tuple[Callable[[], int], Callable[[int], None]] | bool | None = False


def _find_blas() -> tuple[Callable[[], int], Callable[[int], None]] | None:
    """OpenBLAS's get/set_num_threads in the libraries this process has loaded (NumPy's
    bundled copy included), or None."""
    global _blas_funcs
    if _blas_funcs is not False:
        return _blas_funcs  # type: ignore[return-value]
    found = None
    try:
        with open("/proc/self/maps", encoding="utf-8") as f:
            paths = sorted({ln.split()[-1] for ln in f if "openblas" in ln.lower()})
    except OSError:
        paths = []
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for pre in _BLAS_PREFIXES:
            for suf in _BLAS_SUFFIXES:
                get = getattr(lib, f"{pre}_get_num_threads{suf}", None)
                put = getattr(lib, f"{pre}_set_num_threads{suf}", None)
                if get is not None and put is not None:
                    get.restype, put.argtypes = ctypes.c_int, [ctypes.c_int]
                    found = (get, put)
                    break
            if found:
                break
        if found:
            break
    _blas_funcs = found
    return found


@contextlib.contextmanager
def _blas_threads(n: int) -> Iterator[None]:
    """Run the block with OpenBLAS limited to `n` threads (no-op when it is not loaded)."""
    funcs = _find_blas()
    if funcs is None:
        yield
        return
    get, put = funcs
    before = int(get())
    if before != n:
        put(n)
    try:
        yield
    finally:
        if before != n:
            put(before)


def _checked(graph: Graph, feeds: Mapping[str, Any]) -> Mapping[str, Any]:
    for v in graph.inputs:
        if v.name not in feeds:
            raise InputError(f"missing input {v.name!r}")
    return feeds


def _as_group(node: Node) -> tuple[Node, list[Value]] | None:
    """The node as a `lepton.Fused` group `build_group` may accept, with the graph values
    its inputs stand for (in order); None when there is no kernel to try."""
    if node.op == "lepton.Fused":
        return node, list(node.inputs)  # type: ignore[arg-type]  # group inputs are not None
    if node.outputs and not node.subgraphs() and node.op in _lone_ops():
        return _wrap_single(node)
    return None


def _lone_ops() -> frozenset[str]:
    from .kernels import lone_ops

    return lone_ops()
