"""load_calibration_data / count_samples: npz, npy, folders, batching and bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lepton_compiler.errors import InputError
from lepton_compiler.passes.quant.data import count_samples, load_calibration_data


def images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, 4, 4)).astype(np.float32)


def test_npz_one_sample_at_a_time_with_symbolic_batch(tmp_path: Path) -> None:
    x = images(5)
    np.savez(tmp_path / "d.npz", x=x)
    items = list(load_calibration_data([tmp_path / "d.npz"], ["x"], {"x": ["N", 3, 4, 4]}))
    assert len(items) == 5
    for i, item in enumerate(items):
        assert list(item) == ["x"] and item["x"].shape == (1, 3, 4, 4)
        np.testing.assert_array_equal(item["x"][0], x[i])


def test_without_shapes_samples_keep_a_batch_axis(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", x=images(3))
    shapes = [it["x"].shape for it in load_calibration_data([tmp_path / "d.npz"], ["x"])]
    assert shapes == [(1, 3, 4, 4)] * 3
    unknown = load_calibration_data([tmp_path / "d.npz"], ["x"], {"x": [None, 3, 4, 4]})
    assert [it["x"].shape for it in unknown] == [(1, 3, 4, 4)] * 3


def test_static_batch_size_cuts_batches(tmp_path: Path) -> None:
    x = images(7)
    np.savez(tmp_path / "d.npz", x=x)
    with pytest.warns(UserWarning, match="last 1 are left out"):
        items = list(load_calibration_data([tmp_path / "d.npz"], ["x"], {"x": [3, 3, 4, 4]}))
    assert [it["x"].shape for it in items] == [(3, 3, 4, 4)] * 2
    np.testing.assert_array_equal(items[1]["x"], x[3:6])
    assert count_samples([tmp_path / "d.npz"]) == 7
    with pytest.warns(UserWarning):
        assert count_samples([tmp_path / "d.npz"], ["x"], {"x": [3, 3, 4, 4]}) == 2


def test_fewer_samples_than_the_batch(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", x=images(2))
    with pytest.raises(InputError, match="2 samples, fewer than the model's batch size 4"):
        load_calibration_data([tmp_path / "d.npz"], ["x"], {"x": [4, 3, 4, 4]})


def test_samples_that_are_whole_inputs(tmp_path: Path) -> None:
    # One axis more than the input: each entry along the first axis is one whole input.
    x = images(4)[:, None]  # [4, 1, 3, 4, 4] for an input [1, 3, 4, 4]
    np.savez(tmp_path / "d.npz", x=x)
    items = list(load_calibration_data([tmp_path / "d.npz"], ["x"], {"x": [1, 3, 4, 4]}))
    assert [it["x"].shape for it in items] == [(1, 3, 4, 4)] * 4
    flat = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.save(tmp_path / "f.npy", flat)
    items = list(load_calibration_data([tmp_path / "f.npy"], ["v"], {"v": [4]}))
    assert [it["v"].tolist() for it in items] == flat.tolist()


def test_multiple_inputs(tmp_path: Path) -> None:
    ids = np.arange(12, dtype=np.int64).reshape(3, 4)
    mask = np.ones((3, 4), np.int64)
    np.savez(tmp_path / "d.npz", mask=mask, ids=ids)
    items = list(
        load_calibration_data(
            [tmp_path / "d.npz"], ["ids", "mask"], {"ids": ["B", "S"], "mask": ["B", "S"]}
        )
    )
    assert len(items) == 3 and list(items[2]) == ["ids", "mask"]
    np.testing.assert_array_equal(items[2]["ids"], ids[2:3])
    assert items[0]["ids"].dtype == np.int64


def test_lone_array_with_any_key(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", images(2))  # stored as "arr_0"
    items = list(load_calibration_data([tmp_path / "d.npz"], ["input.1"]))
    assert len(items) == 2 and list(items[0]) == ["input.1"]


def test_npy_and_compressed_npz_and_folders(tmp_path: Path) -> None:
    folder = tmp_path / "calib"
    folder.mkdir()
    a, b, c = images(2, 1), images(3, 2), images(1, 3)
    np.save(folder / "b.npy", b)
    np.savez_compressed(folder / "a.npz", x=a)
    np.save(folder / "c.npy", c)
    (folder / "notes.txt").write_text("not data")
    items = list(load_calibration_data([folder], ["x"], {"x": ["N", 3, 4, 4]}))
    got = np.concatenate([it["x"] for it in items])
    np.testing.assert_array_equal(got, np.concatenate([a, b, c]))  # sorted by file name
    assert count_samples([folder]) == 6
    assert count_samples([folder / "a.npz", folder / "c.npy"]) == 3


def test_float64_is_cast_to_the_input_dtype(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", x=images(2).astype(np.float64))
    (item, _) = load_calibration_data([tmp_path / "d.npz"], ["x"], input_dtypes={"x": "float32"})
    assert item["x"].dtype == np.float32
    (item, _) = load_calibration_data([tmp_path / "d.npz"], ["x"])
    assert item["x"].dtype == np.float64


def test_items_are_writable_copies(tmp_path: Path) -> None:
    np.save(tmp_path / "d.npy", images(2))
    (item, _) = load_calibration_data([tmp_path / "d.npy"], ["x"])
    assert isinstance(item["x"], np.ndarray) and item["x"].flags.writeable


def test_feeds_collect_ranges(tmp_path: Path) -> None:
    from lepton_compiler.passes.quant.calibrate import collect_ranges
    from lepton_compiler.testing import graph_from_text

    g = graph_from_text(
        '<ir_version: 8, opset_import: ["" : 18]>\n'
        'g (float["N",3,4,4] x) => (float["N",3,4,4] y) { y = Relu(x) }'
    )
    x = images(6)
    np.savez(tmp_path / "d.npz", x=x)
    data = load_calibration_data([tmp_path / "d.npz"], ["x"], {"x": ["N", 3, 4, 4]})
    obs = collect_ranges(g, data, ["y"], progress=False)
    assert obs["y"].max == float(x.max()) and obs["y"].count == x.size


# -- bad files ----------------------------------------------------------------------------------


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file or folder"):
        load_calibration_data([tmp_path / "nope.npz"], ["x"])


def test_no_paths() -> None:
    with pytest.raises(InputError, match="no calibration data files"):
        load_calibration_data([], ["x"])


def test_wrong_suffix(tmp_path: Path) -> None:
    (tmp_path / "d.csv").write_text("1,2,3\n")
    with pytest.raises(InputError, match=r"not an \.npz or \.npy file"):
        load_calibration_data([tmp_path / "d.csv"], ["x"])


def test_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"holds no \.npz or \.npy files"):
        load_calibration_data([tmp_path], ["x"])


@pytest.mark.parametrize("name", ["d.npz", "d.npy"])
def test_corrupt_files(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_bytes(b"this is not numpy data")
    with pytest.raises(InputError, match=f"{name}' could not be read"):
        load_calibration_data([tmp_path / name], ["x"])


def test_truncated_npz(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", x=images(4))
    data = (tmp_path / "d.npz").read_bytes()
    (tmp_path / "d.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="could not be read"):
        list(load_calibration_data([tmp_path / "d.npz"], ["x"]))


def test_truncated_npy_data(tmp_path: Path) -> None:
    np.save(tmp_path / "d.npy", images(4))
    data = (tmp_path / "d.npy").read_bytes()
    (tmp_path / "d.npy").write_bytes(data[:-100])  # the header is intact, the data is not
    with pytest.raises(InputError, match="could not be read"):
        list(load_calibration_data([tmp_path / "d.npy"], ["x"]))


def test_object_arrays_are_refused(tmp_path: Path) -> None:
    np.save(tmp_path / "d.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match="Python objects"):
        load_calibration_data([tmp_path / "d.npy"], ["x"])


def test_keys_must_match_input_names(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", ids=np.zeros((2, 4)), labels=np.zeros((2,)))
    with pytest.raises(InputError) as e:
        load_calibration_data([tmp_path / "d.npz"], ["ids", "mask"])
    msg = str(e.value)
    assert "missing ['mask']" in msg and "unexpected ['labels']" in msg
    assert "named ['ids', 'mask']" in msg


def test_npy_for_a_multi_input_model(tmp_path: Path) -> None:
    np.save(tmp_path / "d.npy", np.zeros((2, 4)))
    with pytest.raises(InputError, match=r"\.npy file \(one array\), but the model has 2 inputs"):
        load_calibration_data([tmp_path / "d.npy"], ["ids", "mask"])


def test_sample_counts_must_agree(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", ids=np.zeros((2, 4)), mask=np.zeros((3, 4)))
    with pytest.raises(InputError, match="different numbers of samples"):
        load_calibration_data([tmp_path / "d.npz"], ["ids", "mask"])


def test_scalar_arrays_are_refused(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", x=np.float32(1.0))
    with pytest.raises(InputError, match="is a scalar"):
        load_calibration_data([tmp_path / "d.npz"], ["x"])


@pytest.mark.parametrize(
    "shape", [(4, 3, 5, 4), (4, 3, 4), (4, 1, 3, 4, 5)], ids=["dim", "rank", "whole"]
)
def test_shapes_must_fit_the_input(tmp_path: Path, shape: tuple) -> None:
    np.savez(tmp_path / "d.npz", x=np.zeros(shape, np.float32))
    with pytest.raises(InputError, match="array 'x' for input 'x' has shape"):
        load_calibration_data([tmp_path / "d.npz"], ["x"], {"x": ["N", 3, 4, 4]})
