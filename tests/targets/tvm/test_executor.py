"""`compile(model, backend="tvm")` end to end on x86: TVM kernels for fused conv groups and lone
convs, reference kernels for the rest; outputs match ONNX Runtime; the report lists the
fallbacks; artifacts rebuild their kernels at load time."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

pytest.importorskip("tvm")
ort = pytest.importorskip("onnxruntime")

import lepton_compiler  # noqa: E402
from lepton_compiler import api  # noqa: E402
from lepton_compiler.errors import LeptonError  # noqa: E402

RTOL, ATOL = 1e-3, 1e-4


def conv_block_model() -> onnx.ModelProto:
    """Conv+bias+ReLU, Conv+bias + residual Add + ReLU, MaxPool, then a lone 1x1 Conv (no
    epilogue) as the output."""
    rng = np.random.default_rng(0)

    def init(name: str, shape: tuple[int, ...], scale: float = 0.2) -> onnx.TensorProto:
        return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype("f"), name)

    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c2", "x"], ["s"]),
        helper.make_node("Relu", ["s"], ["r2"]),
        helper.make_node("MaxPool", ["r2"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p", "w3"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "conv_block",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 32, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32, 16, 16])],
        [
            init("w1", (16, 16, 3, 3)),
            init("b1", (16,)),
            init("w2", (16, 16, 3, 3)),
            init("b2", (16,)),
            init("w3", (32, 16, 1, 1)),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def ort_outputs(path: Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feeds), strict=True))


def check_against_ort(model: lepton_compiler.CompiledModel, path: Path) -> None:
    feeds = model.random_inputs(seed=1)
    want = ort_outputs(path, feeds)
    got = model.run(feeds)
    assert set(got) == set(want)
    for name, ref in want.items():
        np.testing.assert_allclose(got[name], ref, rtol=RTOL, atol=ATOL, err_msg=name)


@pytest.fixture(scope="module")
def conv_block_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("models") / "conv_block.onnx"
    onnx.save(conv_block_model(), path)
    return path


def test_conv_block_matches_onnxruntime(conv_block_path: Path) -> None:
    with pytest.warns(UserWarning, match=r"MaxPool ×1 \(reference kernel\)"):
        model = lepton_compiler.compile(conv_block_path, backend="tvm")
    assert model.backend == "tvm"
    check_against_ort(model, conv_block_path)
    # Two fused groups and the lone 1x1 Conv are TVM kernels; MaxPool is the one fallback.
    assert model.report.fallbacks == ["MaxPool ×1 (reference kernel)"]
    assert any("100.0% of Conv/MatMul/Gemm FLOPs" in n for n in model.report.notes)
    assert "MaxPool ×1 (reference kernel)" in str(model.report)
    # Results stay valid after the next run (kernel buffers are reused between runs).
    feeds = model.random_inputs(seed=2)
    first = model.run(feeds)["y"]
    kept = first.copy()
    model.run(model.random_inputs(seed=3))
    np.testing.assert_array_equal(first, kept)


def test_executor_attributes(conv_block_path: Path) -> None:
    from lepton_compiler.targets.target import parse_target
    from lepton_compiler.targets.tvm.executor import TvmExecutor

    with pytest.warns(UserWarning):
        graph = lepton_compiler.compile(conv_block_path, backend="tvm").graph
    ex = TvmExecutor(graph, parse_target("host"))
    assert ex.num_kernels == 3
    assert ex.fallbacks == ["MaxPool ×1 (reference kernel)"]
    assert ex.native_flops_share == pytest.approx(1.0)
    assert ex.build_errors == {}
    x = np.random.default_rng(4).standard_normal((1, 16, 32, 32)).astype("f")
    ref = lepton_compiler.compile(conv_block_path).run({"x": x})["y"]
    np.testing.assert_allclose(ex.run({"x": x})["y"], ref, rtol=RTOL, atol=ATOL)


def test_artifact_rebuilds_kernels(conv_block_path: Path, tmp_path: Path) -> None:
    with pytest.warns(UserWarning):
        model = lepton_compiler.compile(conv_block_path, backend="tvm")
    saved = model.save(tmp_path / "m.lepton")
    loaded = lepton_compiler.load(saved)
    assert loaded.backend == "tvm"
    assert loaded.metadata["backend"] == "tvm"
    assert loaded.report.fallbacks == model.report.fallbacks
    feeds = model.random_inputs(seed=5)
    np.testing.assert_allclose(loaded.run(feeds)["y"], model.run(feeds)["y"], rtol=0, atol=0)


def test_small_cnn_matches_onnxruntime(tmp_path: Path) -> None:
    from benchmarks.models import build

    path = build("small_cnn", cache_dir=tmp_path)
    with pytest.warns(UserWarning, match="reference kernel"):
        model = lepton_compiler.compile(path, backend="tvm")
    check_against_ort(model, path)
    fallbacks = " ".join(model.report.fallbacks)
    assert "MaxPool ×2 (reference kernel)" in fallbacks
    assert "Conv" not in fallbacks


def test_resnet50_matches_onnxruntime(tmp_path: Path) -> None:
    """53 conv kernels; compiling took about 4-5 s on 2 cores (not marked slow)."""
    from benchmarks.models import build

    path = build("resnet50", cache_dir=tmp_path)
    start = time.perf_counter()
    with pytest.warns(UserWarning, match="reference kernel"):
        model = lepton_compiler.compile(path, backend="tvm")
    seconds = time.perf_counter() - start
    assert seconds < 120, f"compiling ResNet-50 for tvm took {seconds:.1f} s"
    check_against_ort(model, path)
    assert "Conv" not in " ".join(model.report.fallbacks)
    assert any("MaxPool ×1" in f for f in model.report.fallbacks)
    from lepton_compiler.targets.tvm.executor import TvmExecutor

    ex = model._executor
    assert isinstance(ex, TvmExecutor)
    assert ex.num_kernels == 53
    assert ex.native_flops_share > 0.9


def test_unsupported_conv_falls_back(tmp_path: Path) -> None:
    """A grouped (depthwise) Conv has no TVM kernel yet: it runs its reference kernel, is
    listed as a fallback, and lowers the native FLOP share."""
    rng = np.random.default_rng(6)
    w = numpy_helper.from_array(rng.standard_normal((8, 1, 3, 3)).astype("f"), "w")
    w2 = numpy_helper.from_array(rng.standard_normal((8, 8, 1, 1)).astype("f"), "w2")
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w"], ["d"], group=8, pads=[1, 1, 1, 1]),
            helper.make_node("Conv", ["d", "w2"], ["y"]),
        ],
        "dw",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16, 16])],
        [w, w2],
    )
    path = tmp_path / "dw.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    with pytest.warns(UserWarning, match=r"Conv ×1 \(reference kernel\)"):
        model = lepton_compiler.compile(path, backend="tvm")
    check_against_ort(model, path)
    ex = model._executor
    assert ex.num_kernels == 1
    assert list(ex.build_errors) and "group" in next(iter(ex.build_errors.values())).lower()
    # depthwise: 8*9 MACs per position; 1x1: 8*8 per position.
    assert ex.native_flops_share == pytest.approx(64 / (64 + 72))


def test_tvm_unavailable_is_a_clear_error(
    conv_block_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(api, "tvm_available", lambda: False)
    with pytest.raises(LeptonError, match=r"not available.*pip install 'lepton-compiler\[tvm\]'"):
        lepton_compiler.compile(conv_block_path, backend="tvm")
