"""TVM data-movement kernels (`te_movement`): ``Transpose`` with any permutation, ``Slice``
with constant parameters (negative, clamped, stepped, reversed) and ``Concat`` on any axis
run as TVM kernels and match ONNX Runtime; a ``Slice`` whose starts are computed at run
time stays with the reference kernel."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

pytest.importorskip("tvm")
os.environ.setdefault("TVM_NUM_THREADS", "2")

import lepton_compiler
from lepton_compiler.testing import run_onnxruntime

DTYPES = {"float32": TensorProto.FLOAT, "int64": TensorProto.INT64, "int32": TensorProto.INT32}


def _model(
    node: onnx.NodeProto,
    inputs: dict[str, tuple[tuple[int, ...], str]],
    out: tuple[str, tuple[int, ...], str],
    inits: dict[str, np.ndarray] | None = None,
) -> onnx.ModelProto:
    graph = helper.make_graph(
        [node], "movement",
        [helper.make_tensor_value_info(n, DTYPES[dt], s) for n, (s, dt) in inputs.items()],
        [helper.make_tensor_value_info(out[0], DTYPES[out[2]], out[1])],
        [numpy_helper.from_array(v, k) for k, v in (inits or {}).items()],
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _check(model: onnx.ModelProto, tmp_path: Path, native: bool = True) -> None:
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        compiled = lepton_compiler.compile(str(path), backend="tvm")
    assert (compiled.executor.fallbacks == []) is native, compiled.executor.fallbacks
    rng = np.random.default_rng(0)
    feeds = {}
    for vi in model.graph.input:
        shape = [d.dim_value for d in vi.type.tensor_type.shape.dim]
        dt = helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
        feeds[vi.name] = (rng.standard_normal(shape) * 10).astype(dt)
    want = run_onnxruntime(str(path), feeds)
    got = compiled.run(feeds)
    for key, ref in want.items():
        assert got[key].dtype == ref.dtype and got[key].shape == ref.shape
        np.testing.assert_array_equal(got[key], ref)


@pytest.mark.parametrize(
    ("shape", "perm"),
    [((1, 6, 5, 7), (0, 2, 3, 1)), ((3, 17), (1, 0)), ((2, 3, 4, 5, 6), (4, 2, 0, 3, 1)),
     ((2, 33, 16), None)],
)  # fmt: skip
def test_transpose_any_permutation(shape: tuple[int, ...], perm: tuple[int, ...] | None,
                                   tmp_path: Path) -> None:  # fmt: skip
    rank = len(shape)
    p = perm or tuple(reversed(range(rank)))
    attrs = {"perm": list(perm)} if perm else {}
    node = helper.make_node("Transpose", ["x"], ["y"], **attrs)
    out = tuple(shape[i] for i in p)
    _check(_model(node, {"x": (shape, "float32")}, ("y", out, "float32")), tmp_path)


SLICES = {
    # name: (input shape, starts, ends, axes, steps, output shape)
    "ultraface_head": ((1, 4420, 4), [0], [2], [2], None, (1, 4420, 2)),
    "negative_clamped": ((5, 9, 7), [-3, 1], [100, -1], [0, 2], None, (3, 9, 5)),
    "stepped": ((4, 20), [1, 2], [4, 19], [0, 1], [2, 3], (2, 6)),
    "reversed": ((6, 8), [-1], [-100], [1], [-2], (6, 4)),
    "default_axes": ((3, 4, 5), [1, 0], [3, 2], None, None, (2, 2, 5)),
}


@pytest.mark.parametrize("name", sorted(SLICES))
def test_slice_with_constant_parameters(name: str, tmp_path: Path) -> None:
    shape, starts, ends, axes, steps, out = SLICES[name]
    inits = {"starts": np.array(starts, np.int64), "ends": np.array(ends, np.int64)}
    names = ["x", "starts", "ends"]
    if axes is not None or steps is not None:
        inits["axes"] = np.array(axes if axes is not None else range(len(starts)), np.int64)
        names.append("axes")
    if steps is not None:
        inits["steps"] = np.array(steps, np.int64)
        names.append("steps")
    node = helper.make_node("Slice", names, ["y"])
    _check(_model(node, {"x": (shape, "float32")}, ("y", out, "float32"), inits), tmp_path)


def test_slice_of_int64(tmp_path: Path) -> None:
    inits = {"starts": np.array([1], np.int64), "ends": np.array([3], np.int64)}
    node = helper.make_node("Slice", ["x", "starts", "ends"], ["y"])
    _check(_model(node, {"x": ((4, 3), "int64")}, ("y", (2, 3), "int64"), inits), tmp_path)


def test_slice_with_computed_starts_falls_back(tmp_path: Path) -> None:
    node = helper.make_node("Slice", ["x", "starts", "ends"], ["y"])
    inits = {"ends": np.array([3], np.int64)}
    model = _model(node, {"x": ((4, 3), "float32"), "starts": ((1,), "int64")},
                   ("y", (2, 3), "float32"), inits)  # fmt: skip
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    with pytest.warns(UserWarning, match="Slice"):
        compiled = lepton_compiler.compile(str(path), backend="tvm")
    assert compiled.executor.fallbacks == ["Slice ×1 (reference kernel)"]
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    got = compiled.run({"x": x, "starts": np.array([1], np.int64)})["y"]
    np.testing.assert_array_equal(got, x[1:3])


@pytest.mark.parametrize(
    ("shapes", "axis"),
    [([(1, 3, 5, 5), (1, 13, 5, 5)], 1), ([(2, 7), (2, 1), (2, 16)], -1),
     ([(1, 4420, 2), (1, 100, 2), (1, 3, 2)], 1), ([(3, 4), (0, 4), (5, 4)], 0)],
)  # fmt: skip
def test_concat_on_any_axis(shapes: list[tuple[int, ...]], axis: int, tmp_path: Path) -> None:
    names = [f"x{i}" for i in range(len(shapes))]
    rank = len(shapes[0])
    ax = axis % rank
    out = list(shapes[0])
    out[ax] = sum(s[ax] for s in shapes)
    node = helper.make_node("Concat", names, ["y"], axis=axis)
    inputs = {n: (s, "float32") for n, s in zip(names, shapes, strict=True)}
    _check(_model(node, inputs, ("y", tuple(out), "float32")), tmp_path)


PADS = {
    # name: (input shape, pads, mode, axes)
    "constant_nchw": ((1, 3, 5, 7), [0, 0, 1, 2, 0, 0, 3, 1], "constant", None),
    "edge": ((2, 6, 9), [0, 2, 1, 0, 3, 4], "edge", None),
    "reflect": ((1, 2, 6, 5), [0, 0, 2, 3, 0, 0, 3, 1], "reflect", None),
    "axes_input": ((4, 10), [3, 2], "constant", [-1]),
}


@pytest.mark.parametrize("name", sorted(PADS))
def test_pad_modes(name: str, tmp_path: Path) -> None:
    shape, pads, mode, axes = PADS[name]
    inits = {"pads": np.array(pads, np.int64), "value": np.array(1.5, np.float32)}
    names = ["x", "pads", "value"]
    if axes is not None:
        inits["axes"] = np.array(axes, np.int64)
        names.append("axes")
    dims = [d % len(shape) for d in axes] if axes is not None else range(len(shape))
    out = list(shape)
    for j, d in enumerate(dims):
        out[d] += pads[j] + pads[len(pads) // 2 + j]
    node = helper.make_node("Pad", names, ["y"], mode=mode)
    _check(_model(node, {"x": (shape, "float32")}, ("y", tuple(out), "float32"), inits), tmp_path)


@pytest.mark.parametrize(
    ("op", "shape", "param", "out"),
    [("Expand", (3, 1, 5), [2, 3, 4, 5], (2, 3, 4, 5)), ("Expand", (1, 7), [7, 1], (7, 7)),
     ("Tile", (2, 3, 4), [1, 3, 2], (2, 9, 8))],
)  # fmt: skip
def test_expand_and_tile(op: str, shape: tuple[int, ...], param: list[int],
                         out: tuple[int, ...], tmp_path: Path) -> None:  # fmt: skip
    node = helper.make_node(op, ["x", "p"], ["y"])
    inits = {"p": np.array(param, np.int64)}
    _check(_model(node, {"x": (shape, "float32")}, ("y", out, "float32"), inits), tmp_path)


@pytest.mark.parametrize(
    ("shape", "axis", "sizes"),
    [((2, 12, 5), 1, [3, 4, 5]), ((4, 34), -1, [17, 17]), ((6, 3), 0, None)],
)  # fmt: skip
def test_split(shape: tuple[int, ...], axis: int, sizes: list[int] | None,
               tmp_path: Path) -> None:  # fmt: skip
    """Split into sizes given as an input, or into equal parts (``num_outputs``)."""
    ax = axis % len(shape)
    parts = sizes or [shape[ax] // 3] * 3
    outs = [f"y{k}" for k in range(len(parts))]
    inits = {"split": np.array(parts, np.int64)} if sizes else {}
    attrs = {"axis": axis} if sizes else {"axis": axis, "num_outputs": 3}
    node = helper.make_node("Split", ["x", "split"] if sizes else ["x"], outs, **attrs)
    graph = helper.make_graph(
        [node], "split", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT,
                                       (*shape[:ax], n, *shape[ax + 1:]))
         for o, n in zip(outs, parts, strict=True)],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )  # fmt: skip
    _check(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), tmp_path)


RESIZES = {
    # name: (input shape, scales or None, sizes or None, attrs)
    "yolo_nearest_x2": ((1, 8, 5, 7), [1, 1, 2, 2], None, {"mode": "nearest"}),
    "nearest_asymmetric_floor": ((1, 3, 6, 9), [1, 1, 1.5, 0.5], None,
                                 {"mode": "nearest", "coordinate_transformation_mode":
                                  "asymmetric", "nearest_mode": "floor"}),
    "nearest_sizes_ceil": ((2, 2, 5, 5), None, [2, 2, 8, 3],
                           {"mode": "nearest", "nearest_mode": "ceil"}),
    "bilinear_half_pixel": ((1, 4, 6, 7), [1, 1, 2, 2], None, {"mode": "linear"}),
    "bilinear_align_corners": ((1, 2, 5, 6), None, [1, 2, 9, 4],
                               {"mode": "linear",
                                "coordinate_transformation_mode": "align_corners"}),
    "linear_pytorch_down": ((2, 3, 8, 10), [1, 1, 0.5, 0.6], None,
                            {"mode": "linear",
                             "coordinate_transformation_mode": "pytorch_half_pixel"}),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(RESIZES))
def test_resize(name: str, tmp_path: Path) -> None:
    shape, scales, sizes, attrs = RESIZES[name]
    inits: dict[str, np.ndarray] = {}
    names = ["x", ""]
    if scales is not None:
        inits["scales"] = np.array(scales, np.float32)
        names.append("scales")
        out = tuple(int(np.floor(n * s)) for n, s in zip(shape, scales, strict=True))
    else:
        inits["sizes"] = np.array(sizes, np.int64)
        names += ["", "sizes"]
        out = tuple(sizes)  # type: ignore[arg-type]
    node = helper.make_node("Resize", names, ["y"], **attrs)
    model = _model(node, {"x": (shape, "float32")}, ("y", out, "float32"), inits)
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        compiled = lepton_compiler.compile(str(path), backend="tvm")
    assert compiled.executor.fallbacks == []
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    want = run_onnxruntime(str(path), {"x": x})["y"]
    np.testing.assert_allclose(compiled.run({"x": x})["y"], want, rtol=1e-5, atol=1e-5)
