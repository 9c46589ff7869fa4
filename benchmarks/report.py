"""Write benchmark results: the JSON document, a markdown table and a PNG plot of the ratios.

The JSON (``results.json``) is the record: everything the runner measured, every raw time,
the machine and the thread settings. The markdown (``results.md``) is the table the README
quotes; the plot (``ratios.png``) shows each configuration's ratio to ONNX Runtime fp32 per
model on a log scale. The plot needs matplotlib (the ``bench`` extra); without it the PNG is
skipped and the markdown says so.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .configs import BASELINE
from .runner import fmt_float

JSON_NAME = "results.json"
MARKDOWN_NAME = "results.md"
PNG_NAME = "ratios.png"

#: Status messages longer than this are cut in the table (the JSON keeps them whole).
STATUS_WIDTH = 90


def write_json(doc: Mapping[str, Any], out_dir: str | os.PathLike[str]) -> Path:
    """Write `doc` to ``<out_dir>/results.json`` (atomically); return the path."""
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / JSON_NAME
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=1, default=_json_default) + "\n")
    os.replace(tmp, path)
    return path


def write_all(doc: Mapping[str, Any], out_dir: str | os.PathLike[str]) -> dict[str, Path | None]:
    """Write the JSON, the markdown table and the PNG plot into `out_dir`.

    Returns:
        ``{"json": path, "markdown": path, "png": path or None when matplotlib is missing}``.
    """
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    png = write_plot(doc, folder / PNG_NAME)
    markdown = folder / MARKDOWN_NAME
    markdown.write_text(markdown_report(doc, png_written=png is not None))
    return {"json": write_json(doc, folder), "markdown": markdown, "png": png}


def markdown_report(doc: Mapping[str, Any], png_written: bool | None = None) -> str:
    """The results as markdown: a header (machine, threads, peak, command), a model table and
    the results table."""
    machine = doc.get("machine", {})
    threads = doc.get("threads", {})
    settings = doc.get("settings", {})
    peak = doc.get("peak") or {}
    lines = ["# Lepton Compiler benchmarks", ""]
    cpus = machine.get("usable_cpus") or machine.get("logical_cpus")
    flags = ", ".join(machine.get("cpu_flags", [])) or "none listed"
    lines.append(
        f"- Machine: {machine.get('cpu_model', '?')}, {cpus} logical CPUs usable "
        f"(flags: {flags}), {machine.get('memory_gib', '?')} GiB, Python {machine.get('python')}"
    )
    load = machine.get("loadavg_start")
    if load:
        lines.append(
            f"- Load average at start: {', '.join(map(str, load))}"
            + (f"; at end: {', '.join(map(str, machine['loadavg_end']))}"
               if machine.get("loadavg_end") else "")
        )  # fmt: skip
    lines.append(
        f"- Threads: {threads.get('threads')} for every configuration (ONNX Runtime intra-op "
        f"{threads.get('threads')}, inter-op 1; OMP/OpenBLAS/TVM/Numba variables set to the same)"
    )
    if peak.get("gflops"):
        lines.append(f"- fp32 peak: {peak['gflops']:.0f} GFLOP/s ({peak.get('method', '')})")
    versions = machine.get("versions", {})
    known = [f"{k} {v}" for k, v in versions.items() if v]
    if known:
        lines.append(f"- Versions: {', '.join(known)}")
    lines.append(
        f"- Runs: {settings.get('warmup')} warm-up (no new one after "
        f"{settings.get('warmup_max_s')} s), then {settings.get('rounds')} interleaved "
        f"rounds (order rotated each round; each timed run preceded by a "
        f"{float(settings.get('settle_s', 0)) * 1e3:.0f} ms pause and "
        f"{settings.get('lead_in', 0)} untimed run(s) of the same configuration); limit "
        f"{settings.get('timeout_s')} s per configuration for compile + warm-up and again "
        "for its timed runs"
    )
    if doc.get("command"):
        lines.append(f"- Command: `{doc['command']}`")
    lines += [
        "",
        f"Ratio: the median over rounds of t(config) / t({BASELINE}) within the same round "
        "(>1 means slower than ONNX Runtime fp32). % of peak is for fp32 configurations only. "
        "Peak MiB: highest RSS above the RSS before, during compile + warm-up.",
        "",
    ]
    models = doc.get("models", [])
    if models:
        lines += ["| model | GFLOPs | inputs |", "|---|---:|---|"]
        for m in models:
            inputs = ", ".join(
                f"{n} {'x'.join(map(str, i['shape']))} {i['dtype']}"
                for n, i in m.get("inputs", {}).items()
            )
            if "error" in m:
                lines.append(f"| {m['name']} | — | {m['error']} |")
            else:
                lines.append(f"| {m['name']} | {m['flops']['gflops']:.3g} | {inputs} |")
        lines.append("")
    results = list(doc.get("results", []))
    skipped = _unavailable_everywhere(results)
    lines += [
        "| model | config | median ms | p90 ms | ratio vs ORT | GFLOP/s | % of peak "
        "| compile s | peak MiB | cosine vs ORT fp32 | status |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        if r["config"] in skipped:
            continue
        cells = [
            r["model"],
            r["config"],
            fmt_float(r.get("median_ms"), _digits(r.get("median_ms"))),
            fmt_float(r.get("p90_ms"), _digits(r.get("p90_ms"))),
            fmt_float(r.get("ratio_vs_baseline"), 2),
            fmt_float(r.get("gflops"), 1),
            fmt_float(r.get("pct_of_peak"), 0),
            fmt_float(r.get("compile_s"), 2),
            fmt_float(r.get("peak_mib"), 0),
            fmt_float(r.get("cosine"), 5),
            _status_cell(r),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if skipped:
        lines += ["", "Unavailable for every model (not measured):", ""]
        lines += [f"- `{name}`: {why}" for name, why in skipped.items()]
    if png_written is False:
        lines += ["", "(No plot: matplotlib is not installed; `pip install -e .[bench]`.)"]
    return "\n".join(lines) + "\n"


def write_plot(doc: Mapping[str, Any], path: str | os.PathLike[str]) -> Path | None:
    """A grouped bar chart of the ratios per model (log scale); None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    results = [
        r
        for r in doc.get("results", [])
        if r.get("ratio_vs_baseline") and r["config"] != BASELINE  # the line at 1 shows it
    ]
    models = list(dict.fromkeys(r["model"] for r in doc.get("results", [])))
    configs = list(dict.fromkeys(r["config"] for r in results))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(models) * max(len(configs), 1) / 2), 4.5))
    width = 0.8 / max(len(configs), 1)
    for i, config in enumerate(configs):
        xs, ys = [], []
        for j, model in enumerate(models):
            for r in results:
                if r["model"] == model and r["config"] == config:
                    xs.append(j - 0.4 + width * (i + 0.5))
                    ys.append(r["ratio_vs_baseline"])
        bars = ax.bar(xs, ys, width=width, label=config)
        ax.bar_label(bars, labels=[f"{y:.2g}" for y in ys], fontsize=7, padding=1)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_xticks(range(len(models)), models)
    ax.set_ylabel(f"time / time of {BASELINE} (log; >1 is slower)")
    threads = doc.get("threads", {}).get("threads")
    ax.set_title(f"Latency / ONNX Runtime fp32 ({threads} threads, interleaved)", fontsize=10)
    if configs:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _unavailable_everywhere(results: list[Mapping[str, Any]]) -> dict[str, str]:
    """Configurations unavailable for every model, with their reason(s)."""
    reasons: dict[str, list[str]] = {}
    for r in results:
        reasons.setdefault(r["config"], [])
    for r in results:
        if r["config"] not in reasons:
            continue
        if r.get("status") != "unavailable":
            del reasons[r["config"]]
        else:
            reasons[r["config"]].append(str(r.get("message") or ""))
    return {name: " / ".join(dict.fromkeys(msgs)) for name, msgs in reasons.items()}


def _digits(value: float | None) -> int:
    if value is None:
        return 2
    return 3 if value < 1 else 2 if value < 100 else 1


def _status_cell(result: Mapping[str, Any]) -> str:
    status = str(result.get("status", "?"))
    message = str(result.get("message") or "")
    text = f"{status}: {message}" if message else status
    if len(text) > STATUS_WIDTH:
        text = text[: STATUS_WIDTH - 3] + "..."
    return text.replace("|", "\\|").replace("\n", " ")


def _json_default(value: Any) -> Any:
    """NumPy scalars and paths in the results become plain JSON values."""
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return str(value)
