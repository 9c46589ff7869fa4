"""The benchmark runner (`benchmarks`): results documents, statuses, the FLOP counter.

Benchmarks are not tests; these only check that the runner produces complete, well-formed
results on tiny models in a few seconds. No assertion looks at a timing value.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import onnx
import pytest
from onnx import TensorProto, helper

from benchmarks import configs, runner
from benchmarks.__main__ import main as bench_main
from benchmarks.configs import BASELINE, BenchConfig
from benchmarks.flops import count_flops
from benchmarks.report import markdown_report, write_all
from benchmarks.runner import BenchSettings, DeadlineExceeded, deadline, run_matrix

RESULT_FIELDS = {
    "model", "config", "kind", "options", "status", "message", "compile_s", "times_ms",
    "median_ms", "p90_ms", "ratio_vs_baseline", "gflops", "pct_of_peak", "peak_mib",
}  # fmt: skip
TABLE_HEADER = (
    "| model | config | median ms | p90 ms | ratio vs ORT | GFLOP/s | % of peak "
    "| compile s | peak MiB | cosine vs ORT fp32 | status |"
)
MISSING = BenchConfig("lepton-missing", "lepton", {"backend": "no-such-backend"}, "never there")


def _settings(tmp_path: Path, **overrides: Any) -> BenchSettings:
    values: dict[str, Any] = {
        "warmup": 1,
        "rounds": 3,
        "timeout_s": 60.0,
        "progress": False,
        "cache_dir": tmp_path / "models",
        "peak_gflops": 100.0,  # measuring it is a benchmark of its own
        "settle_s": 0.0,
    }
    values.update(overrides)
    return BenchSettings(**values)


@pytest.fixture(scope="module")
def quick_doc(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    tmp = tmp_path_factory.mktemp("bench")
    doc = run_matrix(["mlp", "small_cnn"], ["lepton-ref", MISSING], _settings(tmp))
    return doc, tmp / "out"


def _results(doc: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["model"], r["config"]): r for r in doc["results"]}


# -- the runner -----------------------------------------------------------------------------------
def test_quick_run_records_every_cell(quick_doc: tuple[dict[str, Any], Path]) -> None:
    doc, _ = quick_doc
    for key in ("machine", "threads", "peak", "settings", "models", "results"):
        assert key in doc
    assert doc["threads"]["threads"] == 2
    assert doc["threads"]["onnxruntime"]["inter_op_num_threads"] == 1
    assert doc["peak"]["gflops"] == 100.0
    assert [m["name"] for m in doc["models"]] == ["mlp", "small_cnn"]
    assert all(m["flops"]["total"] > 0 for m in doc["models"])
    results = _results(doc)
    assert set(results) == {
        (m, c) for m in ("mlp", "small_cnn") for c in (BASELINE, "lepton-ref", MISSING.name)
    }
    for model in ("mlp", "small_cnn"):
        for config in (BASELINE, "lepton-ref"):
            r = results[model, config]
            assert RESULT_FIELDS <= set(r), RESULT_FIELDS - set(r)
            assert r["status"] == "ok", r["message"]
            assert len(r["times_ms"]) == 3 and all(t is not None for t in r["times_ms"])
            assert r["median_ms"] is not None and r["p90_ms"] is not None
            assert r["ratio_vs_baseline"] is not None and len(r["ratios"]) == 3
            assert r["gflops"] is not None and r["pct_of_peak"] is not None
            assert r["compile_s"] is not None
        assert results[model, BASELINE]["ratio_vs_baseline"] == pytest.approx(1.0)
        # the reference interpreter computes what ONNX Runtime computes
        assert results[model, "lepton-ref"]["max_rel_diff"] < 1e-3


def test_unavailable_config_is_recorded_not_raised(
    quick_doc: tuple[dict[str, Any], Path],
) -> None:
    doc, _ = quick_doc
    for model in ("mlp", "small_cnn"):
        r = _results(doc)[model, MISSING.name]
        assert r["status"] == "unavailable"
        assert "no-such-backend" in r["message"]
        assert r["median_ms"] is None and r["ratio_vs_baseline"] is None


def test_planned_lepton_backends_are_unavailable_or_measured(tmp_path: Path) -> None:
    doc = run_matrix(["mlp"], ["lepton-tvm", "tvm-stock"], _settings(tmp_path, rounds=1))
    for r in doc["results"]:
        assert r["status"] in ("ok", "unavailable"), (r["config"], r["message"])
        if r["status"] == "unavailable":
            assert r["message"]


def test_int8_peer_gets_a_cached_qdq_model(tmp_path: Path) -> None:
    doc = run_matrix(["mlp"], ["ort-int8"], _settings(tmp_path, rounds=1))
    r = _results(doc)["mlp", "ort-int8"]
    assert r["status"] == "ok", r["message"]
    int8 = doc["models"][0]["int8_model"]
    assert Path(int8["path"]).exists() and int8["quantize_s"] is not None
    assert r["pct_of_peak"] is None  # int8 is not measured against the fp32 peak
    again = run_matrix(["mlp"], ["ort-int8"], _settings(tmp_path, rounds=1))
    assert again["models"][0]["int8_model"] == {"path": int8["path"], "quantize_s": None}


def test_json_markdown_and_plot(quick_doc: tuple[dict[str, Any], Path]) -> None:
    doc, out = quick_doc
    paths = write_all(doc, out)
    again = json.loads(paths["json"].read_text())
    assert again["results"] == json.loads(json.dumps(doc["results"]))
    text = paths["markdown"].read_text()
    assert TABLE_HEADER in text
    for model in ("mlp", "small_cnn"):
        assert f"| {model} | lepton-ref |" in text
        assert f"| {model} | {BASELINE} |" in text
    assert "Unavailable for every model" in text and f"`{MISSING.name}`" in text
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert paths["png"] is None
        assert "No plot" in text
    else:
        assert paths["png"] is not None and paths["png"].stat().st_size > 0


def test_failures_and_timeouts_are_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("time limits interrupt only the main thread")
    real = runner._prepare_lepton

    def fake(config: BenchConfig, ctx: runner.ModelContext) -> runner.Prepared:
        if config.name == "slow":
            time.sleep(30)
        if config.name == "broken":
            raise RuntimeError("kaboom")
        return real(config, ctx)

    real_build = runner.build

    def build(name: str, **kwargs: Any) -> Path:
        if name == "small_cnn":
            raise OSError("disk full")
        return real_build(name, **kwargs)

    monkeypatch.setattr(runner, "_prepare_lepton", fake)
    monkeypatch.setattr(runner, "build", build)
    slow = BenchConfig("slow", "lepton", {"backend": "reference"})
    broken = BenchConfig("broken", "lepton", {"backend": "reference"})
    start = time.perf_counter()
    doc = run_matrix(
        ["small_cnn", "mlp"], [slow, broken, "lepton-ref"], _settings(tmp_path, timeout_s=3.0)
    )
    assert time.perf_counter() - start < 25  # the 30 s sleep was cut short
    results = _results(doc)
    assert results["mlp", "slow"]["status"] == "timeout"
    assert "3 s limit" in results["mlp", "slow"]["message"]
    assert results["mlp", "broken"]["status"] == "failed"
    assert "kaboom" in results["mlp", "broken"]["message"]
    assert results["mlp", "lepton-ref"]["status"] == "ok"
    assert doc["models"][0] == {"name": "small_cnn", "error": "model: OSError: disk full"}
    for config in (BASELINE, "slow", "broken", "lepton-ref"):
        assert results["small_cnn", config]["status"] == "failed"
    text = markdown_report(doc)
    assert "| mlp | slow |" in text and "timeout" in text and "failed" in text


def test_deadline_interrupts_python_code() -> None:
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("time limits interrupt only the main thread")
    start = time.perf_counter()
    with pytest.raises(DeadlineExceeded), deadline(0.05):
        time.sleep(2)
    assert time.perf_counter() - start < 1
    with deadline(None):
        pass


def test_cli_writes_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in runner.THREAD_ENV_VARS:  # main() sets them; restore them afterwards
        monkeypatch.setenv(name, "x")
    out = tmp_path / "out"
    argv = ["--models", "mlp", "--configs", "lepton-ref", "--quick", "--rounds", "2",
            "--peak", "100", "--out", str(out), "--no-progress", "--threads", "1",
            "--cache-dir", str(tmp_path / "models")]  # fmt: skip
    assert bench_main(argv) == 0
    printed = capsys.readouterr().out
    assert TABLE_HEADER in printed
    doc = json.loads((out / "results.json").read_text())
    assert doc["threads"]["threads"] == 1
    assert doc["threads"]["env"]["OMP_NUM_THREADS"] == "1"
    assert doc["command"].startswith("python -m benchmarks --models mlp")
    assert (out / "results.md").exists()


def test_cli_list_and_bad_names(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_main(["--list"]) == 0
    listed = capsys.readouterr().out
    assert "lepton-ref" in listed and "resnet50" in listed
    with pytest.raises(SystemExit):
        bench_main(["--models", "nope"])
    with pytest.raises(SystemExit):
        bench_main(["--configs", "nope"])


def test_select_puts_the_baseline_first() -> None:
    chosen = configs.select(["lepton-ref"])
    assert [c.name for c in chosen] == [BASELINE, "lepton-ref"]
    assert configs.select(["lepton-ref", BASELINE])[0].name == BASELINE
    assert configs.select(None)[0].name == BASELINE
    with pytest.raises(KeyError, match="unknown config"):
        configs.select(["nope"])


# -- FLOPs ----------------------------------------------------------------------------------------
def _model(nodes: list[onnx.NodeProto], inputs: dict[str, list[int]],
           inits: dict[str, list[int]], output: str) -> onnx.ModelProto:  # fmt: skip
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs.items()],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)],
        [
            helper.make_tensor(n, TensorProto.FLOAT, s, [0.0] * int(_prod(s)))
            for n, s in inits.items()
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _prod(shape: list[int]) -> int:
    out = 1
    for d in shape:
        out *= d
    return out


def test_flops_of_a_conv() -> None:
    conv = helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])
    relu = helper.make_node("Relu", ["y"], ["z"])
    model = _model([conv, relu], {"x": [1, 3, 8, 8]}, {"w": [4, 3, 3, 3]}, "z")
    count = count_flops(model)
    assert count.total == 2 * 1 * 4 * 8 * 8 * 3 * 3 * 3  # 2 N Cout Hout Wout Cin kh kw
    assert count.by_op == {"Conv": count.total}


def test_flops_of_a_grouped_strided_conv() -> None:
    conv = helper.make_node("Conv", ["x", "w"], ["y"], group=4, strides=[2, 2])
    model = _model([conv], {"x": [1, 4, 8, 8]}, {"w": [4, 1, 3, 3]}, "y")
    assert count_flops(model).total == 2 * 1 * 4 * 3 * 3 * (4 // 4) * 3 * 3


def test_flops_of_matmul_with_batch_dims_and_gemm() -> None:
    matmul = helper.make_node("MatMul", ["a", "b"], ["c"])
    model = _model([matmul], {"a": [2, 3, 4, 5]}, {"b": [5, 6]}, "c")
    assert count_flops(model).total == 2 * (2 * 3) * 4 * 6 * 5  # batch * 2 M N K
    gemm = helper.make_node("Gemm", ["a", "b", "c"], ["y"], transA=1)
    model = _model([gemm], {"a": [5, 4]}, {"b": [5, 6], "c": [6]}, "y")
    assert count_flops(model).total == 2 * 4 * 6 * 5


def test_flops_symbolic_dims_count_as_given() -> None:
    matmul = helper.make_node("MatMul", ["a", "b"], ["c"])
    model = _model([matmul], {"a": ["n", 8]}, {"b": [8, 2]}, "c")  # type: ignore[list-item]
    count = count_flops(model, dims={"n": 3})
    assert count.total == 2 * 3 * 2 * 8
    assert count.symbolic_dims == {"n": 3}


def test_lead_in_runs_precede_every_timed_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``lead_in=2`` each timed run comes after two untimed runs of the same config."""
    real = runner._prepare_lepton
    calls: list[str] = []

    def counting(config: BenchConfig, ctx: runner.ModelContext) -> runner.Prepared:
        prepared = real(config, ctx)
        inner = prepared.run

        def run() -> Any:
            calls.append(config.name)
            return inner()

        prepared.run = run
        return prepared

    monkeypatch.setattr(runner, "_prepare_lepton", counting)
    doc = run_matrix(["mlp"], ["lepton-ref"], _settings(tmp_path, warmup=1, rounds=3, lead_in=2))
    assert _results(doc)["mlp", "lepton-ref"]["status"] == "ok"
    assert len(calls) == 1 + 3 * (1 + 2)  # warm-up, then (2 lead-in + 1 timed) per round
    assert doc["settings"]["lead_in"] == 2


def test_a_pause_precedes_every_lead_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With ``settle_s`` set, the runner sleeps that long before each configuration's lead-in
    (another runtime's threads may still be spinning), once per configuration and round."""
    pauses: list[float] = []
    monkeypatch.setattr(runner, "_settle", pauses.append)
    settings = _settings(tmp_path, warmup=1, rounds=3, settle_s=0.02)
    doc = run_matrix(["mlp"], ["lepton-ref"], settings)
    assert _results(doc)["mlp", "lepton-ref"]["status"] == "ok"
    assert pauses.count(0.02) == 3 * 2  # lepton-ref and the baseline, three rounds
    assert doc["settings"]["settle_s"] == 0.02
