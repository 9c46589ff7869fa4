"""`CudaExecutor`: run a compiled graph with generated CUDA kernels where a template takes the
group, reference kernels on the host elsewhere.

At construction the top-level graph is walked in order. Each ``lepton.Fused`` group, and each
lone node whose op some template takes (wrapped as a one-node group), becomes one CUDA kernel
(`templates.plan_group`, `kernel.build_kernel`); view ops (Reshape, Flatten, Squeeze,
Unsqueeze, Identity with static shapes) reshape in place, on the device or the host; every
other node is a *fallback*: its inputs are copied to the host and its op's reference kernel
(`interpreter.run_node`) runs there; it is listed in `fallbacks`, with the template's refusal
in `build_errors`.

Device memory is planned once per input shape: every kernel output gets a buffer, and
buffers share memory when their lifetimes do not overlap (greedy by first write, best fit; a
buffer is free after the step of its last read, views included). Values made on the host
(graph inputs, fallback outputs) that kernels read get a device buffer of their own in the
same plan, filled once per run by the first kernel that reads them. Weights are converted
and copied to the device once. Kernels are launched in graph order on the default stream;
graph outputs are copied back to the host.

Symbolic shapes: `CudaExecutor` builds one `StaticCudaExecutor` per concrete input shape
(`lepton_compiler.specialize`); kernels of equal source are built once per process.
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

from ...graph_steps import by_count as _by_count
from ...graph_steps import label as _label
from ...graph_steps import model_flops, profile_rows
from ...graph_steps import static_shape as _static_shape
from ...graph_steps import view_shape as _view_shape
from ...graph_steps import wrap_single as _wrap_single

__all__ = ["CudaExecutor", "StaticCudaExecutor"]

#: Ops that only reinterpret their first input's memory with another (static) shape.


@dataclass(eq=False)
class _Buf:
    """A planned device buffer: written at step `first`, read last at step `last`."""

    nbytes: int
    first: int
    last: int = -1
    base: Any = None  # the uint8 device array it lives in, once allocated

    def view(self, shape: tuple[int, ...], dtype: str) -> Any:
        n = math.prod(shape) * np.dtype(dtype).itemsize
        return self.base[:n].view(np.dtype(dtype)).reshape(shape)


@dataclass
class _Stage:
    """A host value a kernel reads, copied into a planned device buffer once per run."""

    value: Value
    dtype: str
    buf: _Buf
    size: int
    flat: Any = None  # the device view it is copied into


@dataclass
class _Step:
    """One top-level node and how it runs."""

    node: Node
    kernel: Any | None = None  # CudaKernel, or None for a fallback or a view
    view_shape: tuple[int, ...] | None = None  # a view op: output = input reshaped
    #: per argument: ("const", device array) | ("dev", buf, shape, dtype) | ("stage", stage,
    #: shape) | ("out", buf, shape, dtype)
    plan: list[tuple[Any, ...]] = field(default_factory=list)
    args: list[Any] = field(default_factory=list)
    stages: list[_Stage] = field(default_factory=list)
    out_views: list[Any] = field(default_factory=list)  # outputs in the IR's shapes


class StaticCudaExecutor:
    """Runs a graph with static shapes: CUDA kernels for the groups templates take, host
    reference kernels elsewhere.

    Attributes:
        graph: the graph it runs (top level).
        fallbacks: ``"<op> ×<count> (reference kernel)"`` per op that runs without a CUDA
            kernel, most frequent first.
        native_flops_share: the share of the graph's Conv/MatMul/Gemm FLOPs that run in CUDA
            kernels; 1.0 when the graph has none.
        build_errors: per fallback node that a template refused, why (node name -> text).
        device_bytes: bytes of planned device memory for activations (after sharing).
        unshared_bytes: what the planned buffers would take without sharing.
        compile_s: seconds spent building kernels (or loading them from Numba's cache).
    """

    def __init__(self, graph: Graph) -> None:
        """Write and build every kernel, then plan and allocate device memory.

        Raises:
            LeptonError: there is neither a GPU nor the simulator.
        """
        from numba.core.errors import NumbaError

        from .kernel import build_kernel, check_device
        from .templates import plan_group

        check_device()
        self.graph = graph
        self.build_errors: dict[str, str] = {}
        self.compile_s = 0.0
        self._steps: list[_Step] = []
        self._dev: dict[Value, _Buf] = {}  # device-resident values -> their buffer
        self._stages: dict[tuple[Value, str], _Stage] = {}
        self._consts: dict[tuple[int, tuple[int, ...], str, int], Any] = {}
        native: Counter[str] = Counter()
        fallback: Counter[str] = Counter()
        for i, node in enumerate(graph.nodes):
            view_shape = _view_shape(node)
            if view_shape is not None:
                src = self._dev.get(node.inputs[0])  # type: ignore[arg-type]
                if src is not None:
                    self._dev[node.outputs[0]] = src
                self._steps.append(_Step(node, view_shape=view_shape))
                continue
            step = _Step(node)
            group = _as_group(node)
            if group is not None:
                try:
                    step.kernel = build_kernel(plan_group(group[0]))
                    self.compile_s += step.kernel.compile_s
                except LoweringError as e:
                    self.build_errors[node.name] = str(e)
                except NumbaError as e:  # Numba refused the generated code
                    self.build_errors[node.name] = f"{type(e).__name__}: {str(e)[:500]}"
            if step.kernel is not None:
                assert group is not None
                self._plan_kernel(step, [group[1][j] for j in step.kernel.plan.input_indices], i)
                native[_label(node)] += 1
            else:
                fallback[_label(node)] += 1
            self._steps.append(step)
        self.device_bytes, self.unshared_bytes = self._allocate()
        self._materialize()
        self.fallbacks = [
            f"{op} ×{n} (reference kernel)" for op, n in sorted(fallback.items(), key=_by_count)
        ]
        self.native_ops = dict(native)
        total = done = 0
        for step in self._steps:
            f = model_flops(step.node)
            total += f
            done += f if step.kernel is not None else 0
        self.native_flops_share = done / total if total else 1.0
        self._lock = threading.Lock()

    # -- planning -----------------------------------------------------------------------------

    def _plan_kernel(self, step: _Step, params: list[Value], index: int) -> None:
        """How each argument is made: weights copied to the device now, a producing kernel's
        buffer viewed, or a host value staged per run; outputs get planned buffers."""
        k = step.kernel
        assert k is not None
        p = k.plan
        for pos, v in enumerate(params):
            shape, dtype = p.param_shapes[pos], p.param_dtypes[pos]
            src = self._dev.get(v)
            if v.const is not None:
                step.plan.append(("const", self._const(v, pos, k)))
            elif src is not None and pos not in p.packs and _fits(v, shape, dtype):
                src.last = max(src.last, index)
                step.plan.append(("dev", src, shape, dtype))
            else:
                if pos in p.packs:
                    raise LoweringError(f"{step.node.name}: a packed parameter is not a constant")
                stage = self._stages.get((v, dtype))
                if stage is None:
                    size = math.prod(shape)
                    buf = _Buf(size * np.dtype(dtype).itemsize, index)
                    stage = self._stages[(v, dtype)] = _Stage(v, dtype, buf, size)
                stage.buf.last = max(stage.buf.last, index)
                if all(s is not stage for s in step.stages):
                    step.stages.append(stage)
                step.plan.append(("stage", stage, shape))
        for v, shape, dtype in zip(
            step.node.outputs, p.output_shapes, p.output_dtypes, strict=True
        ):
            buf = _Buf(math.prod(shape) * np.dtype(dtype).itemsize, index, index)
            self._dev[v] = buf
            step.plan.append(("out", buf, shape, dtype))
        for shape, dtype in p.scratch:
            buf = _Buf(math.prod(shape) * np.dtype(dtype).itemsize, index, index)
            step.plan.append(("out", buf, shape, dtype))

    def _const(self, v: Value, pos: int, kernel: Any) -> Any:
        """A weight as the kernel declares it, on the device (shared by kernels that declare
        it alike)."""
        from numba import cuda

        p = kernel.plan
        packed = pos in p.packs
        key = (id(v), p.param_shapes[pos], p.param_dtypes[pos], id(p.packs[pos]) if packed else 0)
        arr = self._consts.get(key)
        if arr is None:
            host = np.asarray(v.const)
            host = p.packs[pos](host) if packed else host
            host = np.ascontiguousarray(host, dtype=p.param_dtypes[pos]).reshape(
                p.param_shapes[pos]
            )
            arr = self._consts[key] = cuda.to_device(host)
        return arr

    def _allocate(self) -> tuple[int, int]:
        """Give every planned buffer device memory, reusing buffers no longer read (greedy by
        first write, best fit); a buffer is free only after the step of its last read.

        Returns:
            (bytes allocated, bytes without reuse).
        """
        from numba import cuda

        bufs: list[_Buf] = list(dict.fromkeys(self._dev.values()))
        bufs += [s.buf for s in self._stages.values()]
        bufs += [a[1] for step in self._steps for a in step.plan if a[0] == "out"]
        bufs = list(dict.fromkeys(bufs))
        end = len(self._steps)
        for i, node in enumerate(self.graph.nodes):
            for v in [*node.inputs, *node.outer_values()]:
                b = self._dev.get(v) if v is not None else None
                if b is not None:
                    b.last = max(b.last, i)
        for v in self.graph.outputs:
            if v in self._dev:
                self._dev[v].last = end
        free: list[Any] = []
        active: list[_Buf] = []
        total = 0
        for b in sorted(bufs, key=lambda b: b.first):
            for a in [a for a in active if a.last < b.first]:
                active.remove(a)
                free.append(a.base)
            fits = [t for t in free if t.shape[0] >= b.nbytes]
            if fits:
                base = min(fits, key=lambda t: t.shape[0])
                free = [t for t in free if t is not base]
            else:
                base = cuda.device_array(max(b.nbytes, 256), np.uint8)
                total += base.shape[0]
            b.base = base
            active.append(b)
        return total, sum(b.nbytes for b in bufs)

    def _materialize(self) -> None:
        """Turn every kernel step's plan into its device argument arrays."""
        for stage in self._stages.values():
            stage.flat = stage.buf.view((stage.size,), stage.dtype)
        for step in self._steps:
            if step.kernel is None:
                continue
            outs = 0
            for entry in step.plan:
                kind = entry[0]
                if kind == "const":
                    step.args.append(entry[1])
                elif kind == "stage":
                    step.args.append(entry[1].flat.reshape(entry[2]))
                else:
                    view = entry[1].view(entry[2], entry[3])
                    step.args.append(view)
                    if kind == "out" and outs < len(step.node.outputs):
                        ir_shape = _static_shape(step.node.outputs[outs])
                        step.out_views.append(view.reshape(ir_shape))
                        outs += 1

    # -- running ------------------------------------------------------------------------------

    @property
    def kernels(self) -> list[Any]:
        """The distinct kernels (`kernel.CudaKernel`), in first-use order."""
        seen: dict[str, Any] = {}
        for s in self._steps:
            if s.kernel is not None:
                seen.setdefault(s.kernel.plan.source, s.kernel)
        return list(seen.values())

    @property
    def sources(self) -> list[str]:
        """The generated source of every distinct kernel."""
        return [k.source for k in self.kernels]

    @property
    def num_kernels(self) -> int:
        """Top-level nodes that run as CUDA kernels."""
        return sum(1 for s in self._steps if s.kernel is not None)

    def __call__(self, feeds: dict[str, Any]) -> dict[str, Any]:
        """Same as `run`."""
        return self.run(feeds)

    def run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        """Run the graph.

        Args:
            feeds: a value for every graph input, by name (host arrays).

        Returns:
            Every graph output by name, on the host.

        Raises:
            InputError: an input is missing.
        """
        with self._lock:
            return self._run(feeds)

    def profile(self, feeds: Mapping[str, Any], repeat: int = 10) -> list[dict[str, Any]]:
        """Time every step over `repeat` runs (after one warm-up run), waiting for the device
        after each step, so a step's time includes its launch, its kernel and its copies.

        Returns:
            One row per step kind (``label``: the group's ops, ``kind``: ``cuda:<template>``,
            ``view`` or ``reference``) with ``count`` (steps per run), ``ms`` (median total
            per run) and ``share`` of the summed step time, slowest first.
        """
        with self._lock:
            self._run(feeds)
            per_step = [[0.0] * repeat for _ in self._steps]
            for r in range(repeat):
                self._run(feeds, lambda i, dt, r=r: per_step[i].__setitem__(r, dt))  # type: ignore[misc]
        return profile_rows(self._steps, per_step, "cuda")

    def _run(
        self, feeds: Mapping[str, Any], timer: Callable[[int, float], None] | None = None
    ) -> dict[str, Any]:
        sync = None
        if timer is not None:
            from numba import cuda

            sync = cuda.synchronize
        env: dict[Value, Any] = {}
        for v in self.graph.inputs:
            if v.name not in feeds:
                raise InputError(f"missing input {v.name!r}")
            env[v] = feeds[v.name]
        for c in self.graph.initializers.values():
            env[c] = c.const
        staged: set[int] = set()
        for i, step in enumerate(self._steps):
            node = step.node
            t0 = time.perf_counter() if sync is not None else 0.0
            if step.view_shape is not None:
                x = env[node.inputs[0]]  # type: ignore[index]
                env[node.outputs[0]] = (
                    x.reshape(step.view_shape) if hasattr(x, "reshape") else run_node(node, env)[0]
                )
            elif step.kernel is not None:
                for stage in step.stages:
                    if id(stage) not in staged:
                        host = np.ascontiguousarray(_host(env[stage.value]), dtype=stage.dtype)
                        if host.size != stage.size:
                            raise LeptonError(
                                f"{node.name}: a kernel parameter has {host.size} elements, "
                                f"expected {stage.size}"
                            )
                        stage.flat.copy_to_device(host.reshape(stage.size))
                        staged.add(id(stage))
                step.kernel.launch(*step.args)
                for v, view in zip(node.outputs, step.out_views, strict=True):
                    env[v] = view
            else:
                inputs = [v for v in [*node.inputs, *node.outer_values()] if v is not None]
                outs = run_node(node, {v: _host(env[v]) for v in inputs})
                for v, r in zip(node.outputs, outs, strict=False):
                    env[v] = r
            if sync is not None and timer is not None:
                sync()
                timer(i, time.perf_counter() - t0)
        return {v.name: _host(env[v], copy=True) for v in self.graph.outputs}


class CudaExecutor:
    """The CUDA executor of the Numba backend: a `StaticCudaExecutor` per concrete input
    shape.

    A graph with static shapes has one, built at construction. A graph with symbolic
    dimensions is specialized (`lepton_compiler.specialize`) for every new input shape `run`
    meets; at construction it is built for every symbolic size 1, so compile errors and the
    report come first. Attributes (`fallbacks`, `native_flops_share`, `build_errors`...)
    describe the most recently used specialization.

    Args:
        graph: the optimized, verified graph.
        target: the CUDA target (`targets.target.Target`, its text such as ``"cuda:sm_80"``,
            or None); recorded for `emit_ptx`'s compute capability.
    """

    #: Specializations kept at once (least recently used dropped first).
    MAX_SPECIALIZATIONS = 8

    def __init__(self, graph: Graph, target: Any = None) -> None:
        from lepton_compiler.specialize import has_symbolic_shapes

        self.graph = graph
        self.target = _cuda_target(target)
        self.symbolic = has_symbolic_shapes(graph)
        self._by_shape: dict[tuple[Any, ...], StaticCudaExecutor] = {}
        self._lock = threading.Lock()
        if not self.symbolic:
            self._current = StaticCudaExecutor(graph)
        else:
            ones = {
                v.name: [d if isinstance(d, int) else 1 for d in v.type.shape]
                for v in graph.inputs
                if isinstance(v.type, TensorType) and v.type.shape is not None
            }
            self._current = self._specialization(ones)

    @property
    def cc(self) -> tuple[int, int]:
        """The target's compute capability, e.g. ``(8, 0)`` (``(8, 0)`` without a target)."""
        sm = getattr(self.target, "sm", None) or 80
        return (sm // 10, sm % 10)

    def _specialization(self, shapes: Mapping[str, Sequence[int]]) -> StaticCudaExecutor:
        from lepton_compiler.specialize import specialize

        key = tuple(sorted((k, tuple(int(d) for d in v)) for k, v in shapes.items()))
        ex = self._by_shape.pop(key, None)
        if ex is None:
            ex = StaticCudaExecutor(specialize(self.graph, shapes))
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
        """`StaticCudaExecutor.profile` of the specialization for the feeds' shapes."""
        return self._for(feeds).profile(feeds, repeat)

    def _for(self, feeds: Mapping[str, Any]) -> StaticCudaExecutor:
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

    def emit_ptx(self) -> dict[str, str]:
        """PTX of every distinct kernel of the current specialization for the target's
        compute capability, by kernel file name (no GPU needed; see `ptx.plan_ptx`)."""
        from .ptx import plan_ptx

        return {k.path.name: plan_ptx(k.plan, self.cc) for k in self._current.kernels}

    def __getattr__(self, name: str) -> Any:
        # fallbacks, native_flops_share, build_errors, num_kernels, compile_s, sources...
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


def _cuda_target(target: Any) -> Any:
    """The target as a `Target` (None stays None); a CPU target is an error."""
    if target is None:
        return None
    if isinstance(target, str):
        from lepton_compiler.targets.target import parse_target

        target = parse_target(target)
    if not getattr(target, "is_cuda", False):
        raise LeptonError(f"CudaExecutor needs a CUDA target such as 'cuda:sm_80', got {target}")
    return target


def _host(x: Any, copy: bool = False) -> Any:
    """A value on the host: device arrays copied back, host arrays as they are (or copied)."""
    if hasattr(x, "copy_to_host"):
        return x.copy_to_host()
    if copy and isinstance(x, (np.ndarray, np.generic)):
        return np.array(x, copy=True)
    return x


def _fits(v: Value, shape: tuple[int, ...], dtype: str) -> bool:
    """The device value can be passed as declared: same dtype and element count."""
    s = _static_shape(v)
    return (
        s is not None
        and isinstance(v.type, TensorType)
        and np.dtype(v.type.dtype.numpy) == np.dtype(dtype)
        and math.prod(s) == math.prod(shape)
    )


def _as_group(node: Node) -> tuple[Node, list[Value]] | None:
    """The node as a ``lepton.Fused`` group a template may accept, with the graph values its
    inputs stand for; None when there is no template to try."""
    if node.op == "lepton.Fused":
        return node, list(node.inputs)  # type: ignore[arg-type]
    from .templates import lone_ops

    if len(node.outputs) == 1 and not node.subgraphs() and node.op in lone_ops():
        return _wrap_single(node)
    return None
