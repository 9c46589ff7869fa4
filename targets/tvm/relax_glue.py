"""The Relax module that glues a `StaticExecutor`'s kernels, run by the Relax VM.

`RelaxProgram(executor)` writes one Relax function over the executor's steps:

- a kernel step is ``R.call_dps_packed("lepton.kernel.<digest>", args, out)``: the compiled
  kernel (built once, from the caches or an artifact) is registered as a global function, so
  the glue adds no code generation;
- a view op is ``R.reshape`` (a view in the VM, no copy);
- a reference fallback is ``R.call_dps_packed`` of a Python function registered for that node,
  which runs the op's reference kernel on NumPy views and writes into the VM's output tensors;
- weights (the executor's converted and packed constant tensors) are extra parameters of the
  function, passed as the very tensors the executor already holds (no copy in the module);
- the caller's input arrays are lent to the VM in place (`build.borrowed_tensor`), copied
  only when they are not C-contiguous or of another dtype.

Relax plans the memory of every intermediate (``StaticPlanBlockMemory``). The program is built
when every step can be expressed this way (static tensor types everywhere, no staged parameter
that needs packing at run time, no node with subgraphs); `build_program` returns None
otherwise and the executor keeps running the steps from Python.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import tvm
from tvm import relax

from lepton_compiler.interpreter import run_node
from lepton_compiler.ir import Node, TensorType, Value

from .build import borrowed_tensor

__all__ = ["RelaxProgram", "build_program"]

_program_ids = itertools.count()
#: Element types the glue passes between calls (NumPy names; TVM spells them the same).
_DTYPES = frozenset(
    {"float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16", "bool"}
)


def _contiguous(arr: np.ndarray) -> np.ndarray:
    """`arr` in C order, 0-d arrays kept 0-d (``np.ascontiguousarray`` makes them 1-d)."""
    return arr if arr.flags.c_contiguous else arr.copy(order="C")


def _input_tensor(arr: np.ndarray) -> Any:
    """The caller's array as a VM argument: lent in place when it can be (the kernels read
    it without a copy, `build.borrowed_tensor`), else copied into a fresh tensor."""
    lent = borrowed_tensor(arr)
    return lent if lent is not None else tvm.runtime.tensor(_contiguous(arr))


class _Unsupported(Exception):
    """A step the glue cannot express (the executor keeps its Python loop)."""


def _ttype(v: Value | None) -> tuple[tuple[int, ...], str]:
    if v is None or not isinstance(v.type, TensorType) or v.type.shape is None:
        raise _Unsupported("a value without a tensor type")
    if not all(isinstance(d, int) for d in v.type.shape):
        raise _Unsupported("a symbolic shape")
    dtype = np.dtype(v.type.dtype.numpy).name
    if dtype not in _DTYPES:
        raise _Unsupported(f"dtype {v.type.dtype}")
    shape = tuple(int(d) for d in v.type.shape)
    if math.prod(shape) == 0:
        raise _Unsupported("an empty tensor")
    return shape, dtype


def build_program(executor: Any) -> RelaxProgram | None:
    """The Relax program of `executor` (a `StaticExecutor`), or None when some step cannot be
    expressed (see the module docstring)."""
    try:
        _check_expressible(executor)
        return RelaxProgram(executor)
    except _Unsupported:
        return None


def _check_expressible(executor: Any) -> None:
    """Raise `_Unsupported` for what `RelaxProgram` cannot express, before any Relax is
    built (a BlockBuilder abandoned halfway prints a warning from TVM's C++ side)."""
    graph = executor.graph
    for v in graph.inputs:
        _ttype(v)
    for step in executor._steps:
        node: Node = step.node
        for v in node.outputs:
            if v is not None:
                _ttype(v)
        if step.kernel is None and step.view_shape is None:
            if node.subgraphs() or node.meta.get("omitted_outputs"):
                raise _Unsupported("a reference kernel with subgraphs or omitted outputs")
            for v in node.inputs:
                if v is not None:
                    _ttype(v)
        if step.kernel is not None:
            k = step.kernel
            for pos, v, _shape in step.staged:
                if v.const is None and (pos in k.packs or _ttype(v)[1] != k.param_dtypes[pos]):
                    raise _Unsupported("a parameter converted at run time")


class RelaxProgram:
    """A `StaticExecutor`'s steps as one Relax function, compiled for the Relax VM.

    Attributes:
        module: the Relax `IRModule` (printable: ``program.module.script()``).
        num_calls: kernel and fallback calls in the function.
    """

    def __init__(self, executor: Any) -> None:
        graph = executor.graph
        self._graph = graph
        self._uid = next(_program_ids)
        bb = relax.BlockBuilder()
        inputs = [relax.Var(v.name, relax.TensorType(*_ttype(v))) for v in graph.inputs]
        self._input_dtypes = [_ttype(v)[1] for v in graph.inputs]
        weights: list[Any] = []
        wvars: list[relax.Var] = []
        vals: dict[Value, relax.Expr] = dict(zip(graph.inputs, inputs, strict=True))
        calls = 0

        def weight(tensor: Any) -> relax.Var:
            ttype = relax.TensorType(tuple(tensor.shape), str(tensor.dtype))
            var = relax.Var(f"w{len(wvars)}", ttype)
            weights.append(tensor)
            wvars.append(var)
            return var

        def value(v: Value | None) -> relax.Expr:
            if v is None:
                raise _Unsupported("a missing input")
            if v in vals:
                return vals[v]
            if v.const is not None:
                shape, dtype = _ttype(v)
                arr = _contiguous(np.asarray(v.const, dtype).reshape(shape))
                vals[v] = weight(tvm.runtime.tensor(arr))
                return vals[v]
            raise _Unsupported(f"%{v.name} has no producer")

        def reshaped(expr: relax.Expr, shape: tuple[int, ...]) -> relax.Expr:
            current = tuple(int(d) for d in expr.ty.shape)
            if current == tuple(shape):
                return expr
            if math.prod(current) != math.prod(shape):
                raise _Unsupported(f"reshape {current} -> {shape}")
            return bb.emit(relax.op.reshape(expr, shape))

        # The function's parameters (inputs, then weights) are only known at the end: they
        # are given to `emit_func_output`.
        with bb.function("main"):
            with bb.dataflow():
                for step in executor._steps:
                    node: Node = step.node
                    if step.view_shape is not None:
                        vals[node.outputs[0]] = reshaped(value(node.inputs[0]), step.view_shape)
                        continue
                    if step.kernel is not None:
                        outs = self._kernel(bb, step, value, reshaped, weight)
                    else:
                        outs = self._fallback(bb, node, value)
                    calls += 1
                    for v, expr in zip(node.outputs, outs, strict=True):
                        vals[v] = expr
                results = [value(v) for v in graph.outputs]
                out = bb.emit_output(results[0] if len(results) == 1 else relax.Tuple(results))
            bb.emit_func_output(out, params=[*inputs, *wvars])
        self.module = bb.get()
        self.num_calls = calls
        self._weights = weights
        target = tvm.target.Target(dict(executor.target_dict))
        self._vm = relax.VirtualMachine(tvm.compile(self.module, target=target), tvm.cpu(0))
        self._main = self._vm["main"]

    def _kernel(self, bb: Any, step: Any, value: Any, reshaped: Any, weight: Any) -> list[Any]:
        k = step.kernel
        staged = {pos for pos, _v, _s in step.staged}
        args: list[relax.Expr] = []
        for pos, (v, shape) in enumerate(zip(step.params, k.param_shapes, strict=True)):
            dtype = k.param_dtypes[pos]
            if v.const is not None:
                args.append(weight(step.args[pos]))  # converted and packed at build time
                continue
            if pos in staged and (pos in k.packs or _ttype(v)[1] != dtype):
                raise _Unsupported("a parameter converted at run time")
            args.append(reshaped(value(v), shape))
        name = f"lepton.kernel.{k.digest}"
        tvm.register_global_func(name, k.func, override=True)
        types = [
            relax.TensorType(tuple(s), d)
            for s, d in zip(k.kernel_output_shapes, k.output_dtypes, strict=True)
        ]
        call = bb.emit(relax.call_dps_packed(name, args, types if len(types) > 1 else types[0]))
        outs = [call]
        if len(types) > 1:
            outs = [bb.emit(relax.TupleGetItem(call, i)) for i in range(len(types))]
        return [reshaped(o, tuple(s)) for o, s in zip(outs, k.output_shapes, strict=True)]

    def _fallback(self, bb: Any, node: Node, value: Any) -> list[Any]:
        if node.subgraphs() or node.meta.get("omitted_outputs"):
            raise _Unsupported("a reference kernel with subgraphs or omitted outputs")
        present = [(i, v) for i, v in enumerate(node.inputs) if v is not None]
        types = [_ttype(v) for v in node.outputs]
        passed = [(i, v) for i, v in present if v.const is None]
        args = [value(v) for _, v in passed]
        consts = {v: v.const for _, v in present if v.const is not None}
        name = f"lepton.fallback.{self._uid}.{node.name}"

        def run(*tensors: Any) -> None:
            env: dict[Value, Any] = dict(consts)
            for (_, v), t in zip(passed, tensors, strict=False):
                env[v] = np.from_dlpack(t)
            outs = run_node(node, env)
            if any(o is None for o in outs[: len(types)]):
                raise ValueError(f"{node.op} node {node.name!r} left an output unset")
            for t, o, (shape, dtype) in zip(tensors[len(passed) :], outs, types, strict=True):
                arr = np.asarray(o, dtype)
                if arr.shape != shape or math.prod(arr.shape) != math.prod(shape):
                    raise ValueError(f"{node.op} gave shape {arr.shape}, expected {shape}")
                t.copyfrom(_contiguous(arr))

        tvm.register_global_func(name, run, override=True)
        rtypes = [relax.TensorType(s, d) for s, d in types]
        call = bb.emit(relax.call_dps_packed(name, args, rtypes if len(rtypes) > 1 else rtypes[0]))
        if len(rtypes) == 1:
            return [call]
        return [bb.emit(relax.TupleGetItem(call, i)) for i in range(len(rtypes))]

    def run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        """Run the VM on `feeds` (by input name); outputs are fresh NumPy arrays."""
        args = [
            _input_tensor(np.asarray(feeds[v.name], dt))
            for v, dt in zip(self._graph.inputs, self._input_dtypes, strict=True)
        ]
        out = self._main(*args, *self._weights)
        outs = [out] if len(self._graph.outputs) == 1 else list(out)
        return {v.name: _to_numpy(o) for v, o in zip(self._graph.outputs, outs, strict=True)}


def _to_numpy(tensor: Any) -> np.ndarray:
    """A fresh NumPy copy of a VM output (through DLPack: ``Tensor.numpy()`` took 0.15 ms
    for ResNet-50's 4 KB output right after a run, this takes a few microseconds)."""
    try:
        return np.from_dlpack(tensor).copy()
    except (BufferError, TypeError, RuntimeError):
        return tensor.numpy()
