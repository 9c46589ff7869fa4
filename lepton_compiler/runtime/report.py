"""The compile report: what compiling a model did, how long each step took, what it produced.

Users read it (`print(model.report)`, ``lepton-compile --report``) to see how much the passes
changed the model and whether any op fell back to the reference kernels; artifacts store it as
a dict (`to_dict` / `from_dict`) so a loaded model reports what its compilation did.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..ir import Graph


@dataclass
class CompileReport:
    """What one compilation did.

    Attributes:
        model_name: the model's name (file stem or ONNX graph name).
        backend: backend that built the model (``"reference"``, ``"tvm"``, ``"numba"``).
        target: the target string the model was compiled for (``"host"``, ``"x86:avx512"``).
        opt_level: optimization level 0..3.
        timings: seconds per compile step, in order (``import``, ``optimize``, ``verify``,
            ``compile``).
        passes: one ``(pass name, milliseconds, modified)`` entry per pass run, in order.
        op_counts_before: nodes per op right after import.
        op_counts_after: nodes per op after the pass pipeline.
        num_nodes: top-level nodes after the pipeline.
        num_constants: constants (weights and other initializers) after the pipeline.
        weights_bytes: bytes held by those constants.
        fallbacks: ops the backend did not lower natively and runs with reference kernels.
        notes: what the importer changed or skipped (opset conversion, simplifier failures).
        kernels_before: kernels the model would need unfused (one per node after import).
        kernels_after: kernels after fusion (one per top-level node: fused groups and the
            single ops left between them).
        fused_groups: per fused group: ``name``, ``anchor`` op, ``epilogue`` ops and
            ``bytes_saved`` (intermediate tensor bytes that never leave the kernel).
        rule_traces: with rule tracing on, per pattern rule: how often it fired, or the best
            partial match and why it did not fire.
        int8: with int8 quantization: the accuracy report as text (summary line, then one row
            per layer, most sensitive first; see ``passes/quant/report.py``).
        int8_layers: the same rows as dicts (``name``, ``op``, ``local_sqnr_db``,
            ``sqnr_db``, ``cosine``, ``quantized``).
    """

    model_name: str
    backend: str
    target: str
    opt_level: int
    timings: dict[str, float] = field(default_factory=dict)
    passes: list[tuple[str, float, bool]] = field(default_factory=list)
    op_counts_before: dict[str, int] = field(default_factory=dict)
    op_counts_after: dict[str, int] = field(default_factory=dict)
    num_nodes: int = 0
    num_constants: int = 0
    weights_bytes: int = 0
    fallbacks: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    rule_traces: list[str] = field(default_factory=list)
    kernels_before: int = 0
    kernels_after: int = 0
    fused_groups: list[dict[str, Any]] = field(default_factory=list)
    int8: str = ""
    int8_layers: list[dict[str, Any]] = field(default_factory=list)

    @property
    def total_seconds(self) -> float:
        """Sum of all step timings."""
        return sum(self.timings.values())

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists)."""
        d = asdict(self)
        d["passes"] = [list(p) for p in self.passes]
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CompileReport:
        """Rebuild a report from `to_dict` output; unknown keys are ignored.

        Raises:
            TypeError, ValueError: `data` is not a report dict.
        """
        if not isinstance(data, dict):
            raise TypeError(f"a report must be a dict, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        kwargs["passes"] = [
            (str(name), float(ms), bool(mod)) for name, ms, mod in kwargs.get("passes", [])
        ]
        return cls(**kwargs)

    def __str__(self) -> str:
        lines = [
            f"Compile report: {self.model_name}",
            *_pairs(
                [
                    ("backend", self.backend),
                    ("target", self.target),
                    ("opt level", f"O{self.opt_level}"),
                    ("nodes", str(self.num_nodes)),
                    ("constants", str(self.num_constants)),
                    ("weights", format_bytes(self.weights_bytes)),
                ]
            ),
            "",
            _table(
                ["step", "ms"],
                [[step, f"{secs * 1e3:.1f}"] for step, secs in self.timings.items()]
                + [["total", f"{self.total_seconds * 1e3:.1f}"]],
            ),
        ]
        if self.passes:
            lines += ["", _pass_table(self.passes)]
        lines += ["", _op_table(self.op_counts_before, self.op_counts_after)]
        if self.fused_groups:
            lines += ["", _group_table(self.fused_groups, self.kernels_before, self.kernels_after)]
        lines += ["", "fallbacks: " + (", ".join(self.fallbacks) if self.fallbacks else "none")]
        if self.int8:
            lines += ["", self.int8]
        if self.notes:
            lines += ["import notes:", *(f"  - {n}" for n in self.notes)]
        return "\n".join(lines)


def fused_groups_summary(graph: Graph) -> list[dict[str, Any]]:
    """One entry per fused group of the graph: ``name``, ``anchor`` op, ``epilogue`` ops and
    ``bytes_saved`` (intermediate tensor bytes that never leave the kernel)."""
    out = []
    for n in graph:
        if n.op == "lepton.Fused":
            out.append(
                {
                    "name": n.name,
                    "anchor": n.attrs.get("anchor"),
                    "epilogue": list(n.attrs.get("epilogue", [])),
                    "bytes_saved": int(n.meta.get("bytes_saved", 0)),
                }
            )
    return out


def format_bytes(n: int) -> str:
    """A size in B, KiB, MiB or GiB with one decimal."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"  # pragma: no cover


def _pairs(items: list[tuple[str, str]]) -> list[str]:
    width = max(len(k) for k, _ in items)
    return [f"  {k:<{width}}  {v}" for k, v in items]


def _table(header: list[str], rows: list[list[str]]) -> str:
    """Left-aligned first column, right-aligned others, a dashed rule under the header."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def fmt(row: list[str]) -> str:
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        return "  ".join(cells).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([fmt(header), rule, *(fmt(r) for r in rows)])


def _pass_table(passes: list[tuple[str, float, bool]]) -> str:
    totals: dict[str, list[Any]] = {}
    for name, ms, modified in passes:
        entry = totals.setdefault(name, [0, 0.0, 0])
        entry[0] += 1
        entry[1] += ms
        entry[2] += int(modified)
    rows = [[n, str(r), f"{ms:.2f}", str(m)] for n, (r, ms, m) in totals.items()]
    return _table(["pass", "runs", "ms", "changed"], rows)


def _group_table(groups: list[dict[str, Any]], before: int, after: int) -> str:
    by_shape: dict[tuple[str, tuple[str, ...]], list[int]] = {}
    for g in groups:
        key = (str(g.get("anchor")), tuple(g.get("epilogue", ())))
        entry = by_shape.setdefault(key, [0, 0])
        entry[0] += 1
        entry[1] += int(g.get("bytes_saved", 0))
    rows = [
        [anchor, " + ".join(epi) or "-", str(n), format_bytes(saved)]
        for (anchor, epi), (n, saved) in sorted(by_shape.items(), key=lambda kv: -kv[1][0])
    ]
    head = f"fused groups: {len(groups)}; kernels {before} -> {after}"
    return head + "\n" + _table(["anchor", "epilogue", "groups", "bytes kept on chip"], rows)


def _op_table(before: dict[str, int], after: dict[str, int]) -> str:
    ops = sorted(set(before) | set(after), key=lambda op: (-after.get(op, 0), op))
    rows = [[op, str(before.get(op, 0)), str(after.get(op, 0))] for op in ops]
    rows.append(["total", str(sum(before.values())), str(sum(after.values()))])
    return _table(["op", "before", "after"], rows)
