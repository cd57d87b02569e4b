"""Atomic writers: round trips, failures leave the old file and no temp files; figures."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import torch

from dfc import io as dio
from dfc.errors import DataError, OutputError
from dfc.io import (
    atomic_save_figure,
    atomic_save_npy,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    ensure_out_dir,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def listing(d):
    return sorted(p.name for p in d.iterdir())


# --------------------------------------------------------------------------- round trips


def test_round_trips_and_parent_creation(tmp_path):
    p = atomic_write_bytes(tmp_path / "a" / "b" / "x.bin", b"\x00\x01hello")
    assert p.read_bytes() == b"\x00\x01hello"
    atomic_write_text(tmp_path / "t.txt", "héllo\nworld\n")
    assert (tmp_path / "t.txt").read_text(encoding="utf-8") == "héllo\nworld\n"

    obj = {"b": 1, "a": [1.5, None, True, "s"], "nested": {"z": 0.25}}
    atomic_write_json(tmp_path / "o.json", obj)
    text = (tmp_path / "o.json").read_text()
    assert json.loads(text) == obj
    assert text.startswith('{\n  "b": 1,')  # indent 2, key order kept
    assert text.endswith("\n")

    arr = np.arange(12, dtype=np.float32).reshape(3, 4)
    atomic_save_npy(tmp_path / "arr.npy", arr)
    back = np.load(tmp_path / "arr.npy", allow_pickle=False)
    assert back.dtype == arr.dtype and np.array_equal(back, arr)
    atomic_save_npy(tmp_path / "t.npy", torch.ones(2, 3, dtype=torch.float64))
    assert np.array_equal(np.load(tmp_path / "t.npy"), np.ones((2, 3)))

    assert listing(tmp_path) == ["a", "arr.npy", "o.json", "t.npy", "t.txt"]


def test_overwrite_replaces_content_and_keeps_normal_permissions(tmp_path):
    p = tmp_path / "f.txt"
    atomic_write_text(p, "one")
    assert (p.stat().st_mode & 0o777) == (0o666 & ~dio._UMASK)  # not a temp file's 0o600
    atomic_write_text(p, "two")
    assert p.read_text() == "two"
    assert listing(tmp_path) == ["f.txt"]


def test_json_converts_numpy_torch_tuples_paths(tmp_path):
    obj = {
        "np_float": np.float64(0.5),
        "np_int": np.int64(3),
        "np_bool": np.bool_(True),
        "array": np.array([[1, 2], [3, 4]]),
        "tensor": torch.tensor([0.5, 1.5]),
        "scalar_tensor": torch.tensor(2.0),
        "tuple": (1, 2),
        "path": tmp_path / "x",
    }
    atomic_write_json(tmp_path / "o.json", obj)
    back = json.loads((tmp_path / "o.json").read_text())
    assert back == {
        "np_float": 0.5,
        "np_int": 3,
        "np_bool": True,
        "array": [[1, 2], [3, 4]],
        "tensor": [0.5, 1.5],
        "scalar_tensor": 2.0,
        "tuple": [1, 2],
        "path": str(tmp_path / "x"),
    }


# --------------------------------------------------------------------------- failures


@pytest.mark.parametrize(
    "payload, key",
    [
        ({"metrics": {"w2": float("nan")}}, "metrics.w2"),
        ({"curve": [1.0, 2.0, math.inf]}, "curve[2]"),
        ({"x": np.array([1.0, -np.inf])}, "x[1]"),
        ({"t": torch.tensor(float("nan"))}, "'t'"),
        (float("nan"), "top-level"),
    ],
)
def test_json_non_finite_raises_naming_the_key_and_writes_nothing(tmp_path, payload, key):
    p = tmp_path / "out.json"
    atomic_write_json(p, {"old": 1})
    with pytest.raises(DataError) as err:
        atomic_write_json(p, payload)
    assert key in err.value.message
    assert json.loads(p.read_text()) == {"old": 1}
    assert listing(tmp_path) == ["out.json"]
    # A fresh target is not created either.
    with pytest.raises(DataError):
        atomic_write_json(tmp_path / "new.json", payload)
    assert listing(tmp_path) == ["out.json"]


def test_json_unsupported_type_raises(tmp_path):
    with pytest.raises(DataError, match="'a.b'.*object"):
        atomic_write_json(tmp_path / "o.json", {"a": {"b": object()}})
    assert listing(tmp_path) == []


@pytest.mark.parametrize("broken", ["replace", "fsync"])
def test_failure_during_write_keeps_old_file_and_leaves_no_temp(tmp_path, monkeypatch, broken):
    p = tmp_path / "data.npy"
    atomic_save_npy(p, np.arange(3))

    def boom(*args, **kwargs):
        raise OSError("disk on fire")

    monkeypatch.setattr(os, broken, boom)
    with pytest.raises(OutputError, match="disk on fire"):  # the system's words, in one clean error
        atomic_save_npy(p, np.arange(1000))
    with pytest.raises(OutputError, match="disk on fire"):
        atomic_write_text(tmp_path / "fresh.txt", "x")
    monkeypatch.undo()
    assert np.array_equal(np.load(p), np.arange(3))
    assert listing(tmp_path) == ["data.npy"]


def test_keyboard_interrupt_during_write_cleans_up(tmp_path, monkeypatch):
    p = tmp_path / "f.txt"
    atomic_write_text(p, "old")

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupt)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_text(p, "new")
    monkeypatch.undo()
    assert p.read_text() == "old"
    assert listing(tmp_path) == ["f.txt"]


def test_npy_refuses_object_arrays(tmp_path):
    with pytest.raises(DataError, match="pickling"):
        atomic_save_npy(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object))
    assert listing(tmp_path) == []


def test_ensure_out_dir(tmp_path):
    d = ensure_out_dir(tmp_path / "x" / "y")
    assert d.is_dir()
    assert ensure_out_dir(d) == d  # already there: fine
    (tmp_path / "file").write_text("I am a file")
    with pytest.raises(DataError, match="exists as a file"):
        ensure_out_dir(tmp_path / "file")
    with pytest.raises(DataError, match="parents is a file"):
        ensure_out_dir(tmp_path / "file" / "sub")
    with pytest.raises(DataError, match="directory"):
        atomic_write_text(tmp_path / "x", "target is a directory")


# --------------------------------------------------------------------------- figures


def test_every_plot_saves_a_valid_png(tmp_path):
    from dfc.plot import image_grid, line_plot, scatter_over_density

    rng = np.random.default_rng(0)
    x = rng.standard_normal((30_000, 2)) * 0.3 + np.array([1.0, -1.0])
    x[5] = np.nan

    def log_density(p):
        assert p.shape == (300 * 300, 2) and p.dtype == np.float64
        return -0.5 * np.sum(((p - np.array([1.0, -1.0])) / 0.3) ** 2, axis=1)

    figs = {
        "density.png": scatter_over_density(x, log_density, ((-1, 3), (-3, 1)), "target"),
        "auto.png": scatter_over_density(x[:100], None, None, "auto bounds"),
        "one_d.png": scatter_over_density(x[:500, 0], lambda p: -0.5 * p[:, 0] ** 2, None, "1-D"),
        "grid.png": image_grid(np.tanh(rng.standard_normal((20, 8, 8))), nrow=8),
        "grid_flat.png": image_grid(rng.uniform(-1, 1, (64, 64)), title="flat"),
        "lines.png": line_plot(
            [1, 2, 4, 8], {"euler": [1.0, 0.5, 0.25, None], "heun": [0.5, 0.1, 0.02, 0.004]},
            "NFE", "sliced W2", "quality vs NFE", logx=True, logy=True,
        ),
    }
    for name, fig in figs.items():
        atomic_save_figure(tmp_path / name, fig, dpi=60)
        data = (tmp_path / name).read_bytes()
        assert data[:8] == PNG_MAGIC, name
        assert len(data) > 1000, name
    atomic_save_figure(tmp_path / "lines.pdf", figs["lines.png"])
    assert (tmp_path / "lines.pdf").read_bytes()[:5] == b"%PDF-"
    with pytest.raises(DataError, match="image format"):
        atomic_save_figure(tmp_path / "lines.xyz", figs["lines.png"])
    assert sorted(listing(tmp_path)) == sorted(list(figs) + ["lines.pdf"])


def test_plot_input_errors():
    from dfc.plot import image_grid, line_plot, scatter_over_density

    with pytest.raises(DataError, match="one log density per row"):
        scatter_over_density(np.zeros((10, 2)), lambda p: np.zeros(3), ((0, 1), (0, 1)), "")
    with pytest.raises(DataError, match="low < high"):
        scatter_over_density(np.zeros((10, 2)), None, ((1, 0), (0, 1)), "")
    with pytest.raises(DataError, match="square number"):
        image_grid(np.zeros((4, 10)))
    with pytest.raises(DataError, match="one y value per x value"):
        line_plot([1, 2, 3], {"a": [1.0, 2.0]}, "x", "y", "t")
