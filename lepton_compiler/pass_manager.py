"""Pass infrastructure: the `Pass` base class, a registry by name, `PassContext`, instruments,
sequential and fixed-point composition.

A pass is a class with a `name`, a docstring that says what it does and where it belongs in a
pipeline, and `run(graph, ctx) -> PassResult`. Passes edit the graph in place and say whether
they changed it; the manager checks that contract and, with ``verify_each`` on, verifies the IR
after every pass so a broken pass is caught where it broke things. A failing pass raises
`PassError` naming the pass, the passes that ran before it and the node involved.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from .errors import InputError, LeptonError, PassError, VerificationError
from .ir import Graph, Node, format_graph, format_node, verify


@dataclass
class PassResult:
    """What a pass returns: the graph (the same object, edited in place) and whether it changed."""

    graph: Graph
    modified: bool


class Pass:
    """Base class of graph passes.

    Subclasses set `name` (used by pipelines and the CLI) and implement `run`. The class
    docstring's first line is the pass's one-line description in ``--list-passes``.
    """

    name: ClassVar[str] = ""
    #: opt level from which pipelines include this pass by default (documentation only).
    min_opt_level: ClassVar[int] = 1

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        """Transform `graph` in place; return it with ``modified`` set truthfully."""
        raise PassError(f"pass {type(self).__name__} does not implement run()")

    @classmethod
    def description(cls) -> str:
        """The first line of the class docstring."""
        doc = (cls.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""

    def __call__(self, graph: Graph, ctx: PassContext | None = None) -> PassResult:
        return PassManager([self]).run(graph, ctx or PassContext())

    def __repr__(self) -> str:
        return f"<pass {self.name}>"


class NodePass(Pass):
    """A pass that considers one node at a time, in the graph and every subgraph.

    Subclasses implement `visit(node, ctx) -> bool` (True when it changed something); the base
    class walks every graph (editing while walking is safe) and afterwards drops constants
    that the changes left unread.
    """

    def visit(self, node: Node, ctx: PassContext) -> bool:
        """Rewrite around `node` if the pass applies; return whether anything changed."""
        raise PassError(f"pass {type(self).__name__} does not implement visit()")

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        changed = False
        for g in [graph, *graph.subgraphs_recursive()]:
            for node in g:
                changed |= bool(self.visit(node, ctx))
        if changed:
            for g in [graph, *graph.subgraphs_recursive()]:
                g.remove_unused_constants()
        return PassResult(graph, changed)


_REGISTRY: dict[str, type[Pass]] = {}
P = TypeVar("P", bound=type[Pass])


def register_pass(cls: P) -> P:
    """Class decorator: make a pass available by its `name`."""
    if not cls.name:
        raise PassError(f"{cls.__name__} must set a class attribute `name` to be registered")
    existing = _REGISTRY.get(cls.name)
    if existing is not None and existing is not cls:
        raise PassError(
            f"two passes are named {cls.name!r}: {existing.__module__}.{existing.__name__} and "
            f"{cls.__module__}.{cls.__name__}"
        )
    _REGISTRY[cls.name] = cls
    return cls


def _load_builtin_passes() -> None:
    import importlib
    import pkgutil

    from . import passes as pkg

    for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
        importlib.import_module(info.name)


def get_pass(name: str) -> type[Pass]:
    """The pass class registered under `name`.

    Raises:
        PassError: no such pass (the message lists the known ones).
    """
    if name not in _REGISTRY:
        _load_builtin_passes()
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise PassError(f"unknown pass {name!r}; known passes: {known}") from None


def list_passes() -> list[type[Pass]]:
    """Every registered pass, sorted by name."""
    _load_builtin_passes()
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


# -- instruments ------------------------------------------------------------------------------


class Instrument:
    """Hooks around each pass run (timing, IR dumps, verification)."""

    def before(self, p: Pass, graph: Graph, ctx: PassContext) -> None:
        """Called before `p` runs."""

    def after(self, p: Pass, graph: Graph, ctx: PassContext, result: PassResult) -> None:
        """Called after `p` ran successfully."""


@dataclass
class PassTiming(Instrument):
    """Records wall time per pass run: ``records`` holds ``(pass name, seconds, modified)``."""

    records: list[tuple[str, float, bool]] = field(default_factory=list)
    _starts: list[float] = field(default_factory=list)  # a stack: composite passes nest

    def before(self, p: Pass, graph: Graph, ctx: PassContext) -> None:
        self._starts.append(time.perf_counter())

    def after(self, p: Pass, graph: Graph, ctx: PassContext, result: PassResult) -> None:
        self.records.append((p.name, time.perf_counter() - self._starts.pop(), result.modified))

    def summary(self) -> str:
        """A readable table: total time per pass name, slowest first."""
        totals: dict[str, list[float]] = {}
        for name, secs, _ in self.records:
            totals.setdefault(name, []).append(secs)
        rows = sorted(totals.items(), key=lambda kv: -sum(kv[1]))
        lines = [f"{'pass':<32} {'runs':>5} {'total ms':>10}"]
        lines += [f"{n:<32} {len(t):>5} {sum(t) * 1e3:>10.2f}" for n, t in rows]
        return "\n".join(lines)


@dataclass
class DumpIR(Instrument):
    """Writes the IR text before the first pass and after every pass that changed it."""

    folder: Path
    _count: int = 0

    def before(self, p: Pass, graph: Graph, ctx: PassContext) -> None:
        if self._count == 0:
            self._write("input", graph)

    def after(self, p: Pass, graph: Graph, ctx: PassContext, result: PassResult) -> None:
        if result.modified:
            self._write(p.name, graph)

    def _write(self, label: str, graph: Graph) -> None:
        self._count += 1
        try:
            os.makedirs(self.folder, exist_ok=True)
            path = Path(self.folder) / f"{self._count:03d}_{label}.txt"
            path.write_text(format_graph(graph) + "\n")
        except OSError as e:
            raise LeptonError(f"cannot write IR dumps to {self.folder}: {e.strerror or e}") from e


class VerifyEach(Instrument):
    """Verifies the IR after every pass (on in every test)."""

    def after(self, p: Pass, graph: Graph, ctx: PassContext, result: PassResult) -> None:
        verify(graph)


# -- context and manager ----------------------------------------------------------------------


@dataclass
class PassContext:
    """Options every pass can read.

    Attributes:
        opt_level: 0 (nothing) to 3 (target-specific rewrites too).
        target: target capabilities as data (architecture, features, vector width...).
        disabled: pass names never to run.
        enabled: pass names to run even when a pipeline would skip them.
        options: free-form options for passes (e.g. ``fold_max_bytes``, quantization config).
        instruments: hooks around each pass run.
        verify_each: verify the IR after each pass.
        trace_rules: ask pattern-rule passes to record why rules did not fire.
    """

    opt_level: int = 2
    target: dict[str, Any] = field(default_factory=dict)
    disabled: set[str] = field(default_factory=set)
    enabled: set[str] = field(default_factory=set)
    options: dict[str, Any] = field(default_factory=dict)
    instruments: list[Instrument] = field(default_factory=list)
    verify_each: bool = False
    trace_rules: bool = False
    history: list[str] = field(default_factory=list)
    traces: list[str] = field(default_factory=list)

    def option(self, name: str, default: Any = None) -> Any:
        """One option, or `default`."""
        return self.options.get(name, default)


def _node_of(e: BaseException) -> Node | None:
    node = getattr(e, "node", None)
    return node if isinstance(node, Node) else None


class PassManager:
    """Runs passes in order with the context's instruments; the unit pipelines are made of."""

    def __init__(self, passes: Iterable[Pass | str]) -> None:
        self.passes: list[Pass] = [get_pass(p)() if isinstance(p, str) else p for p in passes]

    def run(self, graph: Graph, ctx: PassContext | None = None) -> PassResult:
        """Run every pass not disabled; ``modified`` is true when any pass changed the graph."""
        ctx = ctx or PassContext()
        instruments = list(ctx.instruments)
        if ctx.verify_each and not any(isinstance(i, VerifyEach) for i in instruments):
            instruments.append(VerifyEach())
        modified = False
        for p in self.passes:
            if p.name in ctx.disabled:
                continue
            modified |= _run_one(p, graph, ctx, instruments).modified
        return PassResult(graph, modified)


def _run_one(
    p: Pass, graph: Graph, ctx: PassContext, instruments: Sequence[Instrument]
) -> PassResult:
    for inst in instruments:
        inst.before(p, graph, ctx)
    try:
        result = p.run(graph, ctx)
    except (PassError, InputError):
        raise  # a pass's own report, or bad user data a pass read (calibration inputs)
    except (LeptonError, Exception) as e:
        raise _pass_error(p, ctx, e) from e
    if not isinstance(result, PassResult):
        raise PassError(
            f"pass {p.name!r} returned {type(result).__name__}; a pass must return "
            f"PassResult(graph, modified)"
        )
    if result.graph is not graph:
        raise PassError(
            f"pass {p.name!r} returned a different graph object; passes edit the graph in place "
            "and return it"
        )
    ctx.history.append(p.name)
    try:
        for inst in instruments:
            inst.after(p, graph, ctx, result)
    except VerificationError as e:
        raise _pass_error(p, ctx, e, "left the IR broken") from e
    return result


def _pass_error(p: Pass, ctx: PassContext, e: BaseException, what: str = "failed") -> PassError:
    before = ", ".join(ctx.history[-8:]) or "none"
    node = _node_of(e)
    where = f"\n  at node: {format_node(node, '').strip()}" if node is not None else ""
    return PassError(
        f"pass {p.name!r} {what}: {type(e).__name__}: {e}{where}\n  passes before it: {before}"
    )


class Sequential(Pass):
    """Runs a list of passes in order as one pass."""

    name = "sequential"

    def __init__(self, passes: Iterable[Pass | str], name: str = "sequential") -> None:
        self.inner = PassManager(passes)
        self.name = name  # type: ignore[misc]

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        return self.inner.run(graph, ctx)


class FixedPoint(Pass):
    """Repeats a list of passes until none changes the graph, at most `max_iterations` times."""

    name = "fixed_point"

    def __init__(
        self, passes: Iterable[Pass | str], max_iterations: int = 8, name: str = "fixed_point"
    ) -> None:
        self.inner = PassManager(passes)
        self.max_iterations = max_iterations
        self.name = name  # type: ignore[misc]

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        changed = False
        for _ in range(self.max_iterations):
            if not self.inner.run(graph, ctx).modified:
                break
            changed = True
        return PassResult(graph, changed)


def function_pass(name: str) -> Callable[[Callable[[Graph, PassContext], bool]], type[Pass]]:
    """Decorator turning ``fn(graph, ctx) -> modified`` into a registered pass class."""

    def deco(fn: Callable[[Graph, PassContext], bool]) -> type[Pass]:
        cls = type(
            fn.__name__,
            (Pass,),
            {
                "name": name,
                "__doc__": fn.__doc__,
                "__module__": fn.__module__,
                "run": lambda self, g, ctx: PassResult(g, bool(fn(g, ctx))),
            },
        )
        return register_pass(cls)

    return deco
