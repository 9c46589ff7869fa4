"""`compile(model, backend="tvm")` end to end on x86: TVM kernels for fused conv groups and lone
convs, reference kernels for the rest; outputs match ONNX Runtime; the report lists the
fallbacks; artifacts carry their kernels' libraries and load without compiling."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import warnings
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
    """Conv+bias+ReLU, Conv+bias + residual Add + ReLU, MaxPool, CumSum (an op no kernel
    family takes: the reference fallback), then a lone 1x1 Conv (no epilogue) as the
    output."""
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
        helper.make_node("CumSum", ["p", "axis"], ["cs"]),
        helper.make_node("Conv", ["cs", "w3"], ["y"]),
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
            numpy_helper.from_array(np.array(3, np.int64), "axis"),
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
    with pytest.warns(UserWarning, match=r"CumSum ×1 \(reference kernel\)"):
        model = lepton_compiler.compile(conv_block_path, backend="tvm")
    assert model.backend == "tvm"
    check_against_ort(model, conv_block_path)
    # Two fused groups, the MaxPool and the lone 1x1 Conv are TVM kernels; CumSum falls back.
    assert model.report.fallbacks == ["CumSum ×1 (reference kernel)"]
    assert any("100.0% of Conv/MatMul/Gemm FLOPs" in n for n in model.report.notes)
    assert "CumSum ×1 (reference kernel)" in str(model.report)
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
    assert ex.num_kernels == 4
    assert ex.fallbacks == ["CumSum ×1 (reference kernel)"]
    assert ex.native_flops_share == pytest.approx(1.0)
    assert ex.build_errors == {}
    x = np.random.default_rng(4).standard_normal((1, 16, 32, 32)).astype("f")
    ref = lepton_compiler.compile(conv_block_path).run({"x": x})["y"]
    np.testing.assert_allclose(ex.run({"x": x})["y"], ref, rtol=RTOL, atol=ATOL)


def test_artifact_runs_without_compiling(conv_block_path: Path, tmp_path: Path) -> None:
    """A saved TVM artifact holds its kernels' libraries; a fresh process with no kernel
    cache loads and runs it with kernel compilation disabled (only the Relax glue is built)."""
    with pytest.warns(UserWarning):
        model = lepton_compiler.compile(conv_block_path, backend="tvm")
    saved = model.save(tmp_path / "m.lepton")
    manifest = json.loads((saved / "manifest.json").read_text())
    count = len(model.executor.kernels)
    assert manifest["tvm"]["kernels"] == [k.digest for k in model.executor.kernels]
    assert count >= 3
    # one library holds every kernel
    assert manifest["tvm"]["libraries"] == ["kernels.so"]
    assert sorted(p.name for p in (saved / "kernels").iterdir()) == ["kernels.so"]
    assert "kernels/kernels.so" in manifest["files"]
    feeds = model.random_inputs(seed=5)
    np.save(tmp_path / "x.npy", feeds["x"])
    np.save(tmp_path / "want.npy", model.run(feeds)["y"])
    script = f"""
import numpy as np, lepton_compiler
from lepton_compiler.targets.tvm import build
def refuse(*a, **k):
    raise AssertionError("a kernel was compiled while loading an artifact")
build.compile_kernel = refuse
m = lepton_compiler.load({str(saved)!r})
assert all(k.from_disk for k in m.executor.kernels), "a kernel was rebuilt"
assert m.executor.program is not None, "not run by the Relax VM"
y = m.run({{"x": np.load({str(tmp_path / "x.npy")!r})}})["y"]
np.testing.assert_array_equal(y, np.load({str(tmp_path / "want.npy")!r}))
print("ok", len(m.executor.kernels))
"""
    env = {**os.environ, "LEPTON_CACHE_DIR": "off"}
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == f"ok {count}"


def test_loaded_artifact_saves_again_without_compiling(
    conv_block_path: Path, tmp_path: Path
) -> None:
    """With no kernel cache, a loaded artifact has no object code to link: saving it again
    ships a copy of the library its kernels came from, and that artifact loads and runs
    without compiling too."""
    with pytest.warns(UserWarning):
        model = lepton_compiler.compile(conv_block_path, backend="tvm")
    saved = model.save(tmp_path / "m.lepton")
    feeds = model.random_inputs(seed=5)
    np.save(tmp_path / "x.npy", feeds["x"])
    np.save(tmp_path / "want.npy", model.run(feeds)["y"])
    script = f"""
import json, numpy as np, lepton_compiler
from pathlib import Path
from lepton_compiler.targets.tvm import build
def refuse(*a, **k):
    raise AssertionError("a kernel was compiled")
build.compile_kernel = refuse
again = lepton_compiler.load({str(saved)!r}).save({str(tmp_path / "again.lepton")!r})
libs = json.loads((Path(again) / "manifest.json").read_text())["tvm"]["libraries"]
assert len(libs) == 1 and libs[0].startswith("lib-"), libs
m = lepton_compiler.load(again)
assert all(k.from_disk for k in m.executor.kernels)
y = m.run({{"x": np.load({str(tmp_path / "x.npy")!r})}})["y"]
np.testing.assert_array_equal(y, np.load({str(tmp_path / "want.npy")!r}))
print("ok")
"""
    env = {**os.environ, "LEPTON_CACHE_DIR": "off"}
    proc = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", script], capture_output=True, text=True, env=env,
        timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "ok"


def test_artifact_with_damaged_kernel_library(conv_block_path: Path, tmp_path: Path) -> None:
    """A kernel library that does not load is rebuilt (the checksum check catches edits;
    this is a library from another build that has the right checksum)."""
    with pytest.warns(UserWarning):
        model = lepton_compiler.compile(conv_block_path, backend="tvm")
    saved = model.save(tmp_path / "m.lepton")
    manifest = json.loads((saved / "manifest.json").read_text())
    lib = saved / "kernels" / manifest["tvm"]["libraries"][0]
    lib.write_bytes(b"not a library")
    with pytest.raises(lepton_compiler.errors.ArtifactError, match="checksum mismatch"):
        lepton_compiler.load(saved)


def test_small_cnn_matches_onnxruntime(tmp_path: Path) -> None:
    from benchmarks.models import build

    path = build("small_cnn", cache_dir=tmp_path)
    model = lepton_compiler.compile(path, backend="tvm")
    check_against_ort(model, path)
    assert model.report.fallbacks == []  # Flatten is a view; everything else a kernel
    assert model.executor.native_flops_share == 1.0


def test_resnet50_matches_onnxruntime(tmp_path: Path) -> None:
    """53 conv kernels; compiling took about 4-5 s on 2 cores (not marked slow)."""
    from benchmarks.models import build

    path = build("resnet50", cache_dir=tmp_path)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no fallback left
        model = lepton_compiler.compile(path, backend="tvm")
    seconds = time.perf_counter() - start
    assert seconds < 120, f"compiling ResNet-50 for tvm took {seconds:.1f} s"
    check_against_ort(model, path)
    assert "Conv" not in " ".join(model.report.fallbacks)
    from lepton_compiler.targets.tvm.executor import TvmExecutor

    ex = model._executor
    assert isinstance(ex, TvmExecutor)
    assert ex.num_kernels >= 53  # 53 conv groups, and other families' kernels
    assert ex.native_flops_share > 0.9


def test_unsupported_conv_falls_back(tmp_path: Path) -> None:
    """A 1-D Conv has no TVM kernel: it runs its reference kernel, is listed as a fallback
    with the reason, and lowers the native FLOP share."""
    rng = np.random.default_rng(6)
    w = numpy_helper.from_array(rng.standard_normal((8, 8, 3)).astype("f"), "w")
    w2 = numpy_helper.from_array(rng.standard_normal((8, 8, 1, 1)).astype("f"), "w2")
    axes = numpy_helper.from_array(np.array([3], np.int64), "axes")
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w"], ["d"], pads=[1, 1]),
            helper.make_node("Unsqueeze", ["d", "axes"], ["d4"]),
            helper.make_node("Conv", ["d4", "w2"], ["y"]),
        ],
        "conv1d",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16, 1])],
        [w, w2, axes],
    )
    path = tmp_path / "conv1d.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    with pytest.warns(UserWarning, match=r"Conv ×1 \(reference kernel\)"):
        model = lepton_compiler.compile(path, backend="tvm")
    check_against_ort(model, path)
    ex = model.executor
    assert ex.num_kernels == 1
    assert list(ex.build_errors) and "2-D" in next(iter(ex.build_errors.values()))
    # 1-D conv: 8*8*3 MACs per position; 1x1: 8*8 per position.
    assert ex.native_flops_share == pytest.approx(64 / (64 + 192))


def test_tvm_unavailable_is_a_clear_error(
    conv_block_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(api, "tvm_available", lambda: False)
    with pytest.raises(LeptonError, match=r"not available.*pip install 'lepton-compiler\[tvm\]'"):
        lepton_compiler.compile(conv_block_path, backend="tvm")


def test_symbolic_batch_compiles_once_runs_batch_1_and_8(tmp_path: Path) -> None:
    """A model with a symbolic batch is compiled once; each new batch size is specialized
    on first use and matches ONNX Runtime; the original graph keeps its symbolic dims."""
    from benchmarks.models import build

    path = build("small_cnn", batch="batch", cache_dir=tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no fallback left
        model = lepton_compiler.compile(path, backend="tvm")
    ex = model.executor
    assert ex.symbolic
    assert model.graph.inputs[0].type.shape[0] == "batch"
    assert ex.num_kernels >= 3  # built for batch 1 at compile time
    rng = np.random.default_rng(7)
    for batch in (1, 8, 1):
        x = rng.standard_normal((batch, 3, 32, 32)).astype("f")
        want = ort_outputs(path, {"input": x})
        got = model.run({"input": x})
        for name, ref in want.items():
            assert got[name].shape == ref.shape
            np.testing.assert_allclose(got[name], ref, rtol=RTOL, atol=ATOL, err_msg=name)
    assert len(ex._by_shape) == 2
    assert all(k.param_shapes for k in ex.kernels)


def test_relax_vm_and_python_steps_agree(
    conv_block_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Relax program (kernels and the CumSum fallback as packed calls) gives exactly the
    outputs of the Python step loop; ``LEPTON_TVM_VM=0`` keeps the Python loop."""
    from lepton_compiler.targets.target import parse_target
    from lepton_compiler.targets.tvm.executor import StaticExecutor

    with pytest.warns(UserWarning):
        graph = lepton_compiler.compile(conv_block_path, backend="tvm").graph
    vm = StaticExecutor(graph, parse_target("host"))
    assert vm.program is not None
    assert vm.program.num_calls == 5  # 4 kernels and the CumSum fallback
    assert "call_dps_packed" in vm.program.module.script()
    monkeypatch.setenv("LEPTON_TVM_VM", "0")
    steps = StaticExecutor(graph, parse_target("host"))
    assert steps.program is None
    for seed in (0, 1):
        x = np.random.default_rng(seed).standard_normal((1, 16, 32, 32)).astype("f")
        np.testing.assert_array_equal(vm.run({"x": x})["y"], steps.run({"x": x})["y"])
    with pytest.raises(lepton_compiler.errors.InputError, match="missing input 'x'"):
        vm.run({})


def _misaligned(x: np.ndarray, offset: int) -> np.ndarray:
    """A C-contiguous copy of `x` whose data starts `offset` elements past a 64-byte
    boundary (kernels read callers' arrays in place, at whatever address they have)."""
    raw = np.empty(x.size + 64, x.dtype)
    start = (-(raw.ctypes.data // x.itemsize)) % (64 // x.itemsize) + offset
    out = raw[start : start + x.size].reshape(x.shape)
    out[...] = x
    assert out.ctypes.data % 64 == offset * x.itemsize and out.flags.c_contiguous
    return out


@pytest.mark.parametrize("vm", ["1", "0"])
def test_misaligned_inputs_are_read_in_place(
    conv_block_path: Path, monkeypatch: pytest.MonkeyPatch, vm: str
) -> None:
    """Inputs at any address (NumPy's are 16-byte aligned, TVM's own 64) give the outputs
    of an aligned copy, in the Relax VM and in the Python step loop; the kernels are
    compiled without an alignment promise on their parameters."""
    from lepton_compiler.targets.target import parse_target
    from lepton_compiler.targets.tvm.build import borrowed_tensor
    from lepton_compiler.targets.tvm.executor import StaticExecutor

    monkeypatch.setenv("LEPTON_TVM_VM", vm)
    with pytest.warns(UserWarning):
        graph = lepton_compiler.compile(conv_block_path, backend="tvm").graph
    ex = StaticExecutor(graph, parse_target("host"))
    assert (ex.program is not None) == (vm == "1")
    x = np.random.default_rng(5).standard_normal((1, 16, 32, 32)).astype("f")
    want = ex.run({"x": x.copy()})["y"]
    for offset in (1, 3, 4):
        odd = _misaligned(x, offset)
        lent = borrowed_tensor(odd)
        assert lent is not None and np.shares_memory(np.from_dlpack(lent), odd)
        np.testing.assert_array_equal(ex.run({"x": odd})["y"], want)
    assert borrowed_tensor(x[:, :, ::2]) is None  # not contiguous: copied instead
    np.testing.assert_array_equal(ex.run({"x": np.asfortranarray(x)})["y"], want)
