"""`NumbaExecutor`: run a compiled graph with generated Numba kernels where a template takes
the group, reference kernels elsewhere.

At construction the top-level graph is walked in order. Each `lepton.Fused` group, and each
lone node whose op some template takes (wrapped as a one-node group), becomes one generated
function (`templates.plan_group`), compiled at once (`kernel.build_kernel`, from Numba's disk
cache when the source was compiled before); view ops (Reshape, Flatten, Squeeze, Unsqueeze,
Identity with static shapes) cost nothing; every other node is a *fallback* that runs its
op's reference kernel (`interpreter.run_node`) and is listed in `fallbacks`, with the
template's refusal in `build_errors`. `run` is one Python call per kernel: a kernel whose
outputs only kernels read is a bare call on pre-bound arguments.

Memory plan (as the TVM backend's): every kernel output gets a planned buffer; buffers share
memory when their lifetimes do not overlap (greedy by first write, best fit; a buffer is free
after the step of its last read, views and reference-kernel outputs that may view it
included), allocated once per input shape. A kernel reading another kernel's output gets a
view of its buffer; weights are converted (and packed) once; values made by reference kernels
or fed by the caller are passed as they are when already C-contiguous with the right dtype,
copied otherwise. Scratch space (im2col columns, attention scores) is one buffer shared by
all kernels. Graph outputs are copied out, so results stay valid after the next `run`;
`run` holds a lock (the buffers are shared).

Symbolic shapes: `NumbaExecutor` builds one `StaticExecutor` per concrete input shape
(`lepton_compiler.specialize`); kernels of equal source are compiled once per process.

Threads: `run` applies the target's thread count to Numba (``numba.set_num_threads``) and to
every loaded OpenBLAS (one OpenBLAS thread when products are tiled), one thread of each
around serial kernels (little work, `work.SMALL_WORK`), and restores OpenBLAS's count
afterwards (`threads` says why and what was measured).
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lepton_compiler.errors import InputError, LeptonError, LoweringError
from lepton_compiler.interpreter import run_node
from lepton_compiler.ir import Graph, Node, TensorType, Value

from ..graph_steps import by_count as _by_count
from ..graph_steps import copy_out as _copy_out
from ..graph_steps import label as _label
from ..graph_steps import liveness as _liveness
from ..graph_steps import profile_rows
from ..graph_steps import static_shape as _static_shape
from ..graph_steps import view_shape as _view_shape
from ..graph_steps import wrap_single as _wrap_single
from . import threads as _threads
from .work import model_flops

__all__ = ["NumbaExecutor", "StaticExecutor"]

#: How `StaticExecutor._run` treats a step.
_FULL, _CALL, _SKIP = 0, 1, 2

#: Ops that only reinterpret their first input's memory with another (static) shape.


@dataclass
class _Step:
    """One top-level node and how it runs."""

    node: Node
    kernel: Any | None  # NumbaKernel, or None for a fallback or a view
    args: list[Any] = field(default_factory=list)  # params, outputs, scratch
    #: (argument position, graph value, declared shape, dtype) of params taken per run
    staged: list[tuple[int, Value, tuple[int, ...], str]] = field(default_factory=list)
    out_views: list[np.ndarray] = field(default_factory=list)  # outputs in the IR's shapes
    view_shape: tuple[int, ...] | None = None  # a view op: output = input reshaped
    threads: tuple[int, int] = (1, 1)  # (Numba, OpenBLAS) threads it runs with


@dataclass(eq=False)
class _Buf:
    """A planned activation buffer: written at step `first`, read last at step `last`."""

    nbytes: int
    first: int
    dtype: str
    last: int = -1
    base: np.ndarray | None = None  # the uint8 array it lives in, once allocated

    def fits(self, dtype: str, shape: tuple[int, ...]) -> bool:
        return dtype == self.dtype and math.prod(shape) * np.dtype(dtype).itemsize == self.nbytes

    def view(self, shape: tuple[int, ...], dtype: str) -> np.ndarray:
        assert self.base is not None
        n = math.prod(shape) * np.dtype(dtype).itemsize
        return self.base[:n].view(dtype).reshape(shape)


class StaticExecutor:
    """Runs a graph with static shapes: Numba kernels for the groups templates take,
    reference kernels elsewhere.

    Attributes:
        graph: the graph it runs (top level).
        threads: the thread count kernels and BLAS run with.
        fallbacks: ``"<op> ×<count> (reference kernel)"`` per op that runs without a Numba
            kernel, most frequent first.
        native_flops_share: the share of the graph's Conv/MatMul/Gemm FLOPs that run in
            Numba kernels; 1.0 when the graph has none.
        build_errors: per fallback node that a template refused, why (node name -> text).
        activation_bytes: bytes of planned activation memory (after sharing).
        unshared_bytes: what the planned buffers would take without sharing.
        compile_s: seconds spent compiling kernels (or loading them from Numba's cache).
    """

    def __init__(self, graph: Graph, threads: int) -> None:
        """Write and compile every kernel, then plan memory.

        Args:
            graph: the optimized, verified graph (static shapes).
            threads: the thread count.
        """
        _threads.configure()
        from numba.core.errors import NumbaError

        from .kernel import build_kernel
        from .templates import plan_group

        self.graph = graph
        self.threads = int(threads)
        self.build_errors: dict[str, str] = {}
        self._steps: list[_Step] = []
        self._vbuf: dict[Value, _Buf] = {}
        self._alias: dict[Value, set[_Buf]] = {}
        self._plans: list[list[tuple[str, Any]] | None] = []
        native: Counter[str] = Counter()
        fallback: Counter[str] = Counter()
        self.compile_s = 0.0
        self.num_views = 0
        for i, node in enumerate(graph.nodes):
            view_shape = _view_shape(node)
            if view_shape is not None:
                src = self._vbuf.get(node.inputs[0])  # type: ignore[arg-type]
                if src is not None:
                    self._vbuf[node.outputs[0]] = src
                else:
                    self._alias[node.outputs[0]] = self._bufs_of(node.inputs[0])
                self._steps.append(_Step(node, None, view_shape=view_shape))
                self._plans.append(None)
                self.num_views += 1
                continue
            kernel = None
            group = _as_group(node)
            if group is not None:
                group_node, group_inputs = group
                try:
                    kernel = build_kernel(plan_group(group_node, self.threads))
                    self.compile_s += kernel.compile_s
                except LoweringError as e:
                    self.build_errors[node.name] = str(e)
                except NumbaError as e:  # Numba refused the generated code (a dtype it lacks)
                    self.build_errors[node.name] = f"{type(e).__name__}: {str(e)[:500]}"
            step = _Step(node, kernel, threads=self._threads_for(kernel))
            if kernel is not None:
                params = [group_inputs[j] for j in kernel.plan.input_indices]
                self._plans.append(self._plan_kernel(step, params, i))
                native[_label(node)] += 1
            else:
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
        self.fallbacks = [
            f"{op} ×{n} (reference kernel)" for op, n in sorted(fallback.items(), key=_by_count)
        ]
        total = done = 0
        for step in self._steps:
            f = model_flops(step.node)
            total += f
            done += f if step.kernel is not None else 0
        self.native_flops_share = done / total if total else 1.0
        self._modes = self._run_modes()
        self._lock = threading.Lock()

    def _threads_for(self, kernel: Any) -> tuple[int, int]:
        """(Numba, OpenBLAS) threads for a step: one each for serial kernels, OpenBLAS on one
        thread when products are tiled (`threads.product_tiles`), else the target's count."""
        if kernel is not None and not kernel.plan.parallel:
            return 1, 1
        tiled = kernel is not None and _threads.product_tiles(self.threads) > 1
        return self.threads, 1 if tiled else self.threads

    # -- planning -----------------------------------------------------------------------------

    def _bufs_of(self, v: Value | None) -> set[_Buf]:
        if v is None:
            return set()
        own = self._vbuf.get(v)
        return ({own} if own is not None else set()) | self._alias.get(v, set())

    def _plan_kernel(self, step: _Step, params: list[Value], index: int) -> list[tuple[str, Any]]:
        """How each argument is made: constants converted now, a producing kernel's buffer
        viewed, or the value taken per run (staged); outputs get planned buffers."""
        k = step.kernel
        assert k is not None
        p = k.plan
        plan: list[tuple[str, Any]] = []
        for pos, (v, shape) in enumerate(zip(params, p.param_shapes, strict=True)):
            dtype = p.param_dtypes[pos]
            src = self._vbuf.get(v)
            if v.const is not None:
                plan.append(("array", k.convert(pos, v.const)))
            elif src is not None and pos not in p.packs and src.fits(dtype, shape):
                plan.append(("view", (src, shape, dtype)))
            else:
                plan.append(("array", None))
                step.staged.append((pos, v, shape, dtype))
        for v, kshape, dtype in zip(
            step.node.outputs, p.output_shapes, p.output_dtypes, strict=True
        ):
            buf = _Buf(math.prod(kshape) * np.dtype(dtype).itemsize, index, dtype)
            self._vbuf[v] = buf
            plan.append(("view", (buf, kshape, dtype)))
        for shape, dtype in p.scratch:
            plan.append(("scratch", (shape, dtype)))
        return plan

    def _allocate(self) -> tuple[int, int]:
        """Give every planned buffer memory, reusing buffers no longer read (greedy by
        first write, best fit); a buffer is free only after the step of its last read.

        Returns:
            (bytes allocated, bytes without reuse).
        """
        bufs = list(dict.fromkeys(self._vbuf.values()))
        end = len(self._steps)
        for i, node in enumerate(self.graph.nodes):
            for v in [*node.inputs, *node.outer_values()]:
                for b in self._bufs_of(v):
                    b.last = max(b.last, i)
        for v in self.graph.outputs:
            for b in self._bufs_of(v):
                b.last = end
        free: list[np.ndarray] = []
        active: list[_Buf] = []
        total = 0
        for b in sorted(bufs, key=lambda b: b.first):
            for a in [a for a in active if a.last < b.first]:
                active.remove(a)
                assert a.base is not None
                free.append(a.base)
            fits = [t for t in free if t.shape[0] >= b.nbytes]
            if fits:
                base = min(fits, key=lambda t: t.shape[0])
                free = [t for t in free if t is not base]
            else:
                base = np.empty(max(b.nbytes, 64), np.uint8)
                total += base.shape[0]
            b.base = base
            active.append(b)
        return total, sum(b.nbytes for b in bufs)

    def _materialize(self) -> None:
        """Turn every kernel step's plan into its argument arrays."""
        need = max(  # per kernel, its scratch buffers side by side (64-byte aligned)
            (
                sum(
                    -(-math.prod(w[0]) * np.dtype(w[1]).itemsize // 64) * 64
                    for k, w in plan
                    if k == "scratch"
                )
                for plan in self._plans
                if plan
            ),
            default=0,
        )
        scratch = np.empty(max(need, 64), np.uint8)
        self.scratch_bytes = need
        for step, plan in zip(self._steps, self._plans, strict=True):
            if plan is None or step.kernel is None:
                continue
            p = step.kernel.plan
            n_params = len(p.param_shapes)
            offset = 0
            for j, (kind, what) in enumerate(plan):
                if kind == "array":
                    step.args.append(what)
                elif kind == "scratch":
                    shape, dtype = what
                    n = math.prod(shape) * np.dtype(dtype).itemsize
                    step.args.append(scratch[offset : offset + n].view(dtype).reshape(shape))
                    offset += -(-n // 64) * 64
                else:
                    buf, shape, dtype = what
                    view = buf.view(shape, dtype)
                    step.args.append(view)
                    if n_params <= j < n_params + len(p.output_shapes):
                        ir_shape = _static_shape(step.node.outputs[j - n_params])
                        step.out_views.append(view.reshape(ir_shape))
        self._plans = []

    def _run_modes(self) -> list[int]:
        """Per step: `_CALL` for a kernel whose outputs only kernels read (through their
        buffers), `_SKIP` for a view nobody reads from Python, `_FULL` otherwise."""
        needed: set[Value] = set(self.graph.outputs)
        for step in self._steps:
            if step.kernel is None and step.view_shape is None:
                needed.update(v for v in [*step.node.inputs, *step.node.outer_values()] if v)
            for _pos, v, _shape, _dtype in step.staged:
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

    # -- running ------------------------------------------------------------------------------

    @property
    def kernels(self) -> list[Any]:
        """The distinct kernels (`kernel.NumbaKernel`), in first-use order."""
        seen: dict[str, Any] = {}
        for s in self._steps:
            if s.kernel is not None:
                seen.setdefault(s.kernel.plan.source, s.kernel)
        return list(seen.values())

    @property
    def num_kernels(self) -> int:
        """Top-level nodes that run as Numba kernels."""
        return sum(1 for s in self._steps if s.kernel is not None)

    def __call__(self, feeds: dict[str, Any]) -> dict[str, Any]:
        """Same as `run`."""
        return self.run(feeds)

    def run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        """Run the graph.

        Args:
            feeds: a value for every graph input, by name.

        Returns:
            Every graph output by name.

        Raises:
            InputError: an input is missing.
        """
        with self._lock, _threads.blas_threads(self.threads):
            return self._run(feeds)

    def profile(self, feeds: Mapping[str, Any], repeat: int = 10) -> list[dict[str, Any]]:
        """Time every step over `repeat` runs (after one warm-up run).

        Returns:
            One row per step kind (``label``: the group's ops, ``kind``: ``numba:<template>``,
            ``view`` or ``reference``) with ``count`` (steps per run), ``ms`` (median total
            per run) and ``share`` of the summed step time, slowest first.
        """
        with self._lock, _threads.blas_threads(self.threads):
            self._run(feeds)
            per_step = [[0.0] * repeat for _ in self._steps]
            for r in range(repeat):
                self._run(feeds, lambda i, dt, r=r: per_step[i].__setitem__(r, dt))  # type: ignore[misc]
        return profile_rows(self._steps, per_step, "numba")

    def _run(
        self, feeds: Mapping[str, Any], timer: Callable[[int, float], None] | None = None
    ) -> dict[str, Any]:
        graph = self.graph
        env: dict[Value, Any] = {}
        for v in graph.inputs:
            if v.name not in feeds:
                raise InputError(f"missing input {v.name!r}")
            env[v] = feeds[v.name]
        for c in graph.initializers.values():
            env[c] = c.const
        clock = time.perf_counter if timer is not None else None
        modes = self._modes
        use = _threads.use_threads
        current = use(self.threads, self.threads, None)
        for i, step in enumerate(self._steps):
            mode = modes[i]
            if step.threads != current and step.view_shape is None:
                current = use(*step.threads, current)
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
                for pos, v, shape, dtype in step.staged:
                    step.args[pos] = _staged(env[v], shape, dtype)
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


class NumbaExecutor:
    """The Numba backend's executor: a `StaticExecutor` per concrete input shape.

    A graph with static shapes has one, built at construction. A graph with symbolic
    dimensions is specialized (`lepton_compiler.specialize`) for every new input shape `run`
    meets (kernels of a shape seen before come from the in-process and disk caches); at
    construction it is built for every symbolic size 1, so compile errors, the report and
    the batch-1 case come first. Attributes describe the most recently used specialization.
    """

    #: Specializations kept at once (least recently used dropped first).
    MAX_SPECIALIZATIONS = 8

    def __init__(self, graph: Graph, threads: int) -> None:
        from lepton_compiler.specialize import has_symbolic_shapes

        self.graph = graph
        self.threads = int(threads)
        self.symbolic = has_symbolic_shapes(graph)
        self._by_shape: dict[tuple[Any, ...], StaticExecutor] = {}
        self._lock = threading.Lock()
        if not self.symbolic:
            self._current = StaticExecutor(graph, threads)
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
            ex = StaticExecutor(specialize(self.graph, shapes), self.threads)
        self._by_shape[key] = ex
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
        if self.symbolic:
            for v in self.graph.inputs:
                if v.name not in feeds:
                    raise InputError(f"missing input {v.name!r}")
            shapes = {
                v.name: np.shape(feeds[v.name])
                for v in self.graph.inputs
                if isinstance(v.type, TensorType)
            }
            with self._lock:
                self._current = self._specialization(shapes)
        return self._current

    def __getattr__(self, name: str) -> Any:
        # fallbacks, native_flops_share, build_errors, num_kernels, compile_s...
        if name.startswith("__") or name in ("_current", "_by_shape"):
            raise AttributeError(name)
        return getattr(self._current, name)

    @property
    def kernels(self) -> list[Any]:
        """Every distinct kernel of every specialization built so far."""
        seen: dict[str, Any] = {}
        for ex in [self._current, *self._by_shape.values()]:
            for k in ex.kernels:
                seen.setdefault(k.plan.source, k)
        return list(seen.values())


# -- helpers ------------------------------------------------------------------------------------


def _staged(x: Any, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    """A value from Python as a kernel parameter: C-contiguous, writable, declared dtype and
    shape (a copy only when needed)."""
    arr = np.asarray(x)
    if arr.dtype != dtype or not arr.flags.c_contiguous or not arr.flags.writeable:
        arr = np.array(arr, dtype=dtype, order="C")
    if arr.size != math.prod(shape):
        raise LeptonError(f"a kernel parameter has {arr.size} elements, expected shape {shape}")
    return arr.reshape(shape)


def _as_group(node: Node) -> tuple[Node, list[Value]] | None:
    """The node as a `lepton.Fused` group a template may accept, with the graph values its
    inputs stand for; None when there is no template to try."""
    if node.op == "lepton.Fused":
        return node, list(node.inputs)  # type: ignore[arg-type]
    from .templates import lone_ops

    if len(node.outputs) == 1 and not node.subgraphs() and node.op in lone_ops():
        return _wrap_single(node)
    return None
