"""Whole standard models end to end: build, import, verify, reference run, ONNX Runtime.

Every model of `benchmarks.models` (random weights, real topologies) is built into a session
folder, checked by ONNX and run by ONNX Runtime, then imported (onnxsim included), verified
and run on the reference interpreter; the outputs must match ONNX Runtime on the *original*
model within ``rtol=1e-3, atol=1e-4``, once at batch 1 and once with a symbolic batch fed
with batch 2. Structural checks pin the op counts of the original and the imported graphs,
so a change of the builders or of the import canonicalization is noticed.

Full-size BERT-base (436 MB) is marked ``slow``: building and importing it takes about 15 s.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

import benchmarks.models
from benchmarks.models import MODELS, bert_tiny, build, small_cnn
from benchmarks.models._builder import count_parameters
from lepton_compiler.frontend.onnx import import_model
from lepton_compiler.interpreter import run_graph
from lepton_compiler.ir import verify
from lepton_compiler.testing import assert_outputs_close, run_onnxruntime

from .conftest import ModelCache

TOL = {"rtol": 1e-3, "atol": 1e-4}
#: The models compared numerically with ONNX Runtime, fastest first.
COMPARED = ("small_cnn", "mlp", "bert_tiny", "mobilenetv2", "resnet50")
#: Op counts of the models as built (what an exporter without BN folding writes).
BUILT_OPS: dict[str, dict[str, int]] = {
    "resnet50": {"Conv": 53, "BatchNormalization": 53, "Relu": 49, "Add": 16, "MaxPool": 1,
                 "GlobalAveragePool": 1, "Flatten": 1, "Gemm": 1},
    "mobilenetv2": {"Conv": 52, "BatchNormalization": 52, "Clip": 35, "Add": 10,
                    "GlobalAveragePool": 1, "Flatten": 1, "Gemm": 1},
    "bert_tiny": {"Gather": 3, "Add": 22, "LayerNormalization": 5, "Unsqueeze": 1, "Cast": 1,
                  "Sub": 1, "Mul": 5, "MatMul": 16, "Reshape": 8, "Transpose": 8, "Div": 4,
                  "Softmax": 2, "Erf": 2},
    "mlp": {"MatMul": 3, "Add": 3, "Relu": 2},
    "small_cnn": {"Conv": 3, "BatchNormalization": 3, "Relu": 3, "MaxPool": 2,
                  "GlobalAveragePool": 1, "Flatten": 1, "Gemm": 1},
}  # fmt: skip
#: Op counts after `import_model` at batch 1, as measured with onnxsim 0.8.1: each
#: BatchNormalization is folded into its Conv; a MatMul followed by a bias Add becomes Gemm
#: (between two Reshapes on 3-d activations); BERT's position/token-type lookups and their Add
#: are folded into one constant.
IMPORTED_OPS: dict[str, dict[str, int]] = {
    "resnet50": {"Conv": 53, "Relu": 49, "Add": 16, "MaxPool": 1, "GlobalAveragePool": 1,
                 "Flatten": 1, "Gemm": 1},
    "mobilenetv2": {"Conv": 52, "Clip": 35, "Add": 10, "GlobalAveragePool": 1, "Flatten": 1,
                    "Gemm": 1},
    "bert_tiny": {"Gather": 1, "Add": 10, "Gemm": 12, "MatMul": 4, "Reshape": 22,
                  "Transpose": 8, "LayerNormalization": 5, "Unsqueeze": 1, "Cast": 1, "Sub": 1,
                  "Mul": 5, "Div": 4, "Softmax": 2, "Erf": 2},
    "mlp": {"Gemm": 3, "Relu": 2},
    "small_cnn": {"Conv": 3, "Relu": 3, "MaxPool": 2, "GlobalAveragePool": 1, "Flatten": 1,
                  "Gemm": 1},
}  # fmt: skip
#: Where a symbolic batch changes the imported op counts: the MLP keeps its MatMul + Add (no
#: Gemm fusion on a [batch, k] input of unknown batch), and BERT's GELU runs on the 3-d
#: activations (a Reshape back and forth around it per layer) instead of the 2-d Gemm output.
IMPORTED_OPS_SYMBOLIC: dict[str, dict[str, int]] = {
    "mlp": BUILT_OPS["mlp"],
    "bert_tiny": {**IMPORTED_OPS["bert_tiny"], "Reshape": 26},
}
PARAMETERS = {"resnet50": 25_610_152, "mobilenetv2": 3_538_986, "bert_tiny": 106_414,
              "mlp": 235_146, "small_cnn": 24_634}  # fmt: skip


def make_feeds(name: str, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Deterministic inputs for `name` at batch size `batch`.

    BERT gets token ids over its vocabulary and an attention mask whose rows hide a
    different number of trailing tokens (row 0 hides none).
    """
    rng = np.random.default_rng(seed)
    if name == "bert_tiny":
        seq, vocab = 16, 100
        mask = np.ones((batch, seq), np.int64)
        for row in range(1, batch):
            mask[row, seq - 3 * row :] = 0
        return {"input_ids": rng.integers(0, vocab, (batch, seq)), "attention_mask": mask}
    shape = {"mlp": (784,), "small_cnn": (3, 32, 32)}.get(name, (3, 224, 224))
    return {"input": rng.standard_normal((batch, *shape)).astype(np.float32)}


def ort_timed(path: Any, feeds: dict[str, np.ndarray], repeat: int = 1) -> tuple[dict, float]:
    """ONNX Runtime outputs and the best wall time of `repeat` runs after one warm-up."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    session.run(names, feeds)
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        results = session.run(names, feeds)
        best = min(best, time.perf_counter() - start)
    return dict(zip(names, results, strict=True)), best


# -- the builders ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", COMPARED)
def test_built_model_is_valid(models: ModelCache, name: str) -> None:
    model = onnx.load(models.path(name))
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version == 18 and model.ir_version == 9
    assert dict(Counter(n.op_type for n in model.graph.node)) == BUILT_OPS[name]
    assert count_parameters(model) == PARAMETERS[name]
    (out,) = run_onnxruntime(model, make_feeds(name, 1)).values()
    assert np.isfinite(out).all()
    assert 0.1 < float(out.std()) < 10, "activations neither vanish nor explode"


def test_builders_are_deterministic() -> None:
    a, b = bert_tiny(seed=3), bert_tiny(seed=3)
    assert a.SerializeToString() == b.SerializeToString()
    assert bert_tiny(seed=4).SerializeToString() != a.SerializeToString()


def test_registry_names() -> None:
    assert set(MODELS) == {"resnet50", "mobilenetv2", "bert", "bert_tiny", "mlp", "small_cnn"}


def test_build_reuses_the_cached_file(models: ModelCache) -> None:
    first = models.path("mlp", sizes=(8, 4, 2))
    stamp = first.stat().st_mtime_ns
    assert models.path("mlp", sizes=(8, 4, 2)) == first and first.stat().st_mtime_ns == stamp
    assert models.path("mlp", sizes=(8, 4, 3)) != first


def test_big_models_keep_their_weights_beside_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over the 2 GB protobuf limit `build` writes external data; simulated with a 0 limit."""
    monkeypatch.setattr(benchmarks.models, "_EXTERNAL_DATA_BYTES", 0)
    path = build("small_cnn", cache_dir=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name, f"{path.name}.data"]
    assert path.stat().st_size < 20_000, "the weights are not inside the model file"
    feeds = make_feeds("small_cnn", 1)
    expected = run_onnxruntime(small_cnn(), feeds)
    assert_outputs_close(run_graph(import_model(path), feeds), expected, **TOL)


def test_resnet50_structure(models: ModelCache) -> None:
    model = onnx.load(models.path("resnet50"))
    ops = Counter(n.op_type for n in model.graph.node)
    assert ops["Conv"] == 53 and ops["BatchNormalization"] == 53
    strided = [n.name for n in model.graph.node if n.op_type == "Conv"
               and next(a.ints for a in n.attribute if a.name == "strides") == [2, 2]]  # fmt: skip
    # v1.5: the stem, and per downsampling stage the 3x3 conv and the projection shortcut.
    assert strided == ["/conv1/Conv", "/layer2.0.conv2/Conv", "/layer2.0.downsample.0/Conv",
                       "/layer3.0.conv2/Conv", "/layer3.0.downsample.0/Conv",
                       "/layer4.0.conv2/Conv", "/layer4.0.downsample.0/Conv"]  # fmt: skip


def test_mobilenetv2_depthwise_convs(models: ModelCache) -> None:
    model = onnx.load(models.path("mobilenetv2"))
    groups = [next(a.i for a in n.attribute if a.name == "group")
              for n in model.graph.node if n.op_type == "Conv"]  # fmt: skip
    assert sum(g > 1 for g in groups) == 17
    clip = next(n for n in model.graph.node if n.op_type == "Clip")
    assert len(clip.input) == 3, "ReLU6 is Clip with min/max inputs"


# -- import, verify, reference interpreter versus ONNX Runtime ----------------------------------
@pytest.mark.parametrize("batch", [1, "batch"], ids=["batch1", "symbolic"])
@pytest.mark.parametrize("name", COMPARED)
def test_matches_onnxruntime(
    models: ModelCache, timings: list[tuple[str, str, float]], name: str, batch: int | str
) -> None:
    path = models.path(name, batch=batch)
    graph = models.graph(name, batch=batch)
    verify(graph)
    if batch == "batch":
        assert all(v.shape[0] == "batch" for v in [*graph.inputs, *graph.outputs])
    feeds = make_feeds(name, 2 if batch == "batch" else 1)
    expected, ort_s = ort_timed(path, feeds, repeat=3)
    start = time.perf_counter()
    actual = run_graph(graph, feeds)
    ref_s = time.perf_counter() - start
    assert_outputs_close(actual, expected, **TOL)
    if batch == 1 and name in ("resnet50", "mobilenetv2"):
        timings.append((name, "reference interpreter, batch 1", ref_s))
        timings.append((name, "onnxruntime CPU, batch 1", ort_s))


@pytest.mark.parametrize("batch", [1, "batch"], ids=["batch1", "symbolic"])
@pytest.mark.parametrize("name", COMPARED)
def test_imported_op_counts(models: ModelCache, name: str, batch: int | str) -> None:
    expected = IMPORTED_OPS[name]
    if batch == "batch":
        expected = IMPORTED_OPS_SYMBOLIC.get(name, expected)
    assert models.graph(name, batch=batch).op_counts() == expected


@pytest.mark.parametrize("name", COMPARED)
def test_matches_onnxruntime_without_onnxsim(models: ModelCache, name: str) -> None:
    """Without onnxsim the graph keeps every op as built (BatchNormalization, MatMul + Add)."""
    path = models.path(name)
    graph = import_model(path, simplify=False)
    verify(graph)
    assert graph.op_counts() == BUILT_OPS[name]
    feeds = make_feeds(name, 1)
    assert_outputs_close(run_graph(graph, feeds), run_onnxruntime(str(path), feeds), **TOL)


def test_bert_mask_hides_masked_tokens(models: ModelCache) -> None:
    graph = models.graph("bert_tiny", batch="batch")
    feeds = make_feeds("bert_tiny", 2)
    changed = {k: v.copy() for k, v in feeds.items()}
    changed["input_ids"][1, -3:] = (changed["input_ids"][1, -3:] + 1) % 100
    before = run_graph(graph, feeds)["last_hidden_state"]
    after = run_graph(graph, changed)["last_hidden_state"]
    np.testing.assert_allclose(after[:, :-3], before[:, :-3], rtol=1e-5, atol=1e-6)
    assert not np.allclose(after[1, -3:], before[1, -3:]), "the masked tokens themselves change"


# -- full-size BERT-base ------------------------------------------------------------------------
@pytest.mark.slow
def test_bert_base(models: ModelCache, timings: list[tuple[str, str, float]]) -> None:
    """BERT-base (436 MB): build, import, verify, and one run against ONNX Runtime."""
    start = time.perf_counter()
    path = models.path("bert")
    built = time.perf_counter()
    graph = models.graph("bert")
    imported = time.perf_counter()
    verify(graph)
    verified = time.perf_counter()
    timings.append(("bert", "build + save (436 MB)", built - start))
    timings.append(("bert", "import_model (onnxsim included)", imported - built))
    timings.append(("bert", "verify", verified - imported))
    assert [v.name for v in graph.inputs] == ["input_ids", "attention_mask"]
    assert graph.outputs[0].shape == (1, 128, 768)
    assert graph.op_counts() == {
        "Gather": 1, "Add": 50, "Gemm": 72, "MatMul": 24, "Reshape": 132, "Transpose": 48,
        "LayerNormalization": 25, "Unsqueeze": 1, "Cast": 1, "Sub": 1, "Mul": 25, "Div": 24,
        "Softmax": 12, "Erf": 12,
    }  # fmt: skip

    rng = np.random.default_rng(0)
    mask = np.ones((1, 128), np.int64)
    mask[:, 100:] = 0
    feeds = {"input_ids": rng.integers(0, 30522, (1, 128)), "attention_mask": mask}
    expected, ort_s = ort_timed(path, feeds)
    start = time.perf_counter()
    actual = run_graph(graph, feeds)
    timings.append(("bert", "reference interpreter, batch 1, seq 128", time.perf_counter() - start))
    timings.append(("bert", "onnxruntime CPU, batch 1, seq 128", ort_s))
    assert_outputs_close(actual, expected, **TOL)
