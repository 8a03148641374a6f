"""unreid.io: atomic writes, exception first lines, the features file, device resolution."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from unreid.errors import ConfigError, DataError
from unreid.io import (
    FeatureFile,
    atomic_dir,
    atomic_path,
    atomic_write,
    atomic_write_bytes,
    atomic_write_text,
    first_line,
    resolve_device,
)

# ---------------------------------------------------------------- atomic writes


def test_atomic_write_bytes_replaces_the_file_and_leaves_no_temp(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "a.bin"
    assert atomic_write_bytes(out, b"one") == out
    assert atomic_write_bytes(out, b"two", fsync=True) == out
    assert out.read_bytes() == b"two"
    assert atomic_write_text(tmp_path / "t.json", "{}\n").read_text() == "{}\n"
    assert sorted(p.name for p in out.parent.iterdir()) == ["a.bin"]


def test_a_writer_that_raises_keeps_the_old_file_and_no_temp(tmp_path: Path) -> None:
    out = tmp_path / "model.pt"
    out.write_bytes(b"old")
    seen = []

    def half_writer(tmp: Path) -> None:
        seen.append(tmp)
        tmp.write_bytes(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(out, half_writer, fsync=True)
    assert out.read_bytes() == b"old"
    assert seen[0].parent == tmp_path and seen[0] != out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]


def test_atomic_files_get_the_usual_permissions(tmp_path: Path) -> None:
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    written = atomic_write_text(tmp_path / "atomic.txt", "x")
    assert written.stat().st_mode == plain.stat().st_mode


def test_atomic_path_keeps_the_suffix_for_path_taking_libraries(tmp_path: Path) -> None:
    out = tmp_path / "f.npz"
    with atomic_path(out) as tmp:
        assert tmp.suffix == ".npz" and tmp.parent == tmp_path and not out.exists()
        np.savez(tmp, x=np.arange(3))  # would write tmp + ".npz" for any other suffix
    with np.load(out) as z:
        np.testing.assert_array_equal(z["x"], [0, 1, 2])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.npz"]


def _tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_atomic_dir_builds_aside_then_replaces_an_existing_folder(tmp_path: Path) -> None:
    out = tmp_path / "world"
    (out / "old").mkdir(parents=True)
    (out / "old" / "a.txt").write_text("old")
    with atomic_dir(out) as tmp:
        assert tmp.parent == tmp_path and _tree(tmp) == [] and _tree(out) == ["old", "old/a.txt"]
        (tmp / "new.txt").write_text("new")
    assert _tree(tmp_path) == ["world", "world/new.txt"]


def test_atomic_dir_without_replace_keeps_the_first_finished_folder(tmp_path: Path) -> None:
    out = tmp_path / "world"
    with atomic_dir(out, replace=False) as tmp:
        (out / "winner").mkdir(parents=True)  # a concurrent builder finished first
        (tmp / "loser").mkdir()
    assert _tree(tmp_path) == ["world", "world/winner"]
    (out / "winner").rmdir()
    with atomic_dir(out, replace=False) as tmp:  # an empty folder is taken over
        (tmp / "mine").mkdir()
    assert _tree(tmp_path) == ["world", "world/mine"]


def test_atomic_dir_error_leaves_the_old_folder_and_no_temp(tmp_path: Path) -> None:
    out = tmp_path / "world"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(KeyboardInterrupt), atomic_dir(out) as tmp:
        (tmp / "half").mkdir()
        raise KeyboardInterrupt
    assert _tree(tmp_path) == ["world", "world/keep.txt"]


# ---------------------------------------------------------------- first_line


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (ValueError("bad value\nsecond line"), "bad value"),
        (ValueError("\n  \n  indented first\nnext"), "indented first"),
        (KeyError(), "KeyError"),
        (OSError("   "), "OSError"),
        (RuntimeError("x" * 500), "x" * 200),
    ],
)
def test_first_line(exc: BaseException, expected: str) -> None:
    assert first_line(exc) == expected


def test_first_line_limit() -> None:
    assert first_line(ValueError("abcdef"), limit=3) == "abc"


# ---------------------------------------------------------------- FeatureFile


def _features(n: int = 5, d: int = 3) -> FeatureFile:
    rng = np.random.default_rng(0)
    return FeatureFile(
        feats=rng.normal(size=(n, d)).astype(np.float32),
        pids=np.arange(n, dtype=np.int64) - 1,
        camids=np.zeros(n, np.int64),
        split=np.array(["train", "query", "gallery", "gallery", "query"][:n]),
        paths=np.array([f"img/{i}.jpg" for i in range(n)]),
    )


def test_feature_file_round_trip(tmp_path: Path) -> None:
    ff = _features()
    out = ff.save(tmp_path / "f.npz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.npz"]
    with np.load(out, allow_pickle=False) as z:
        assert sorted(z.files) == sorted(FeatureFile.KEYS)
    back = FeatureFile.load(out, require=FeatureFile.KEYS)
    for k in FeatureFile.KEYS:
        np.testing.assert_array_equal(getattr(back, k), getattr(ff, k))
        assert getattr(back, k).dtype == getattr(ff, k).dtype
    g = back.rows(back.split == "gallery")
    assert len(g) == 2 and list(g.paths) == ["img/2.jpg", "img/3.jpg"]


def test_feature_file_optional_keys_stay_absent(tmp_path: Path) -> None:
    path = tmp_path / "g.npz"
    np.savez(path, feats=np.eye(2, 4, dtype=np.float32), paths=np.array(["a", "b"]), extra=[1])
    ff = FeatureFile.load(path, require=("paths",))
    assert ff.pids is None and ff.split is None and list(ff.paths) == ["a", "b"]
    assert set(ff.present()) == {"feats", "paths"}


def _expect(path: Path, pattern: str, **kwargs) -> None:
    with pytest.raises(DataError, match=pattern) as info:
        FeatureFile.load(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message and path.name in message and "unreid extract" in message


@pytest.mark.parametrize(
    ("arrays", "pattern"),
    [
        ({"paths": np.array(["a"])}, r"missing key\(s\) feats"),
        ({"feats": np.array([["a", "b"]])}, r"feats must be numeric, got dtype <U1"),
        ({"feats": np.ones(4, np.float32)}, r"feats must be 2-D \(N, D\), got shape \(4,\)"),
        ({"feats": np.array([[0.0, np.nan]])}, "feats contains NaN or inf"),
        ({"feats": np.array([[np.inf, 1.0]], np.float32)}, "feats contains NaN or inf"),
        ({"feats": np.ones((3, 2)), "pids": np.zeros(2, np.int64)},
         r"pids must have shape \(3,\) like feats, got \(2,\)"),
        ({"feats": np.ones((2, 2)), "camids": np.zeros(2)}, "camids must be integers"),
        ({"feats": np.ones((2, 2)), "split": np.zeros(2, np.int64)}, "split must be strings"),
    ],
)
def test_feature_file_validation_errors(tmp_path: Path, arrays: dict, pattern: str) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    _expect(path, pattern)


def test_feature_file_missing_required_keys_and_unreadable_files(tmp_path: Path) -> None:
    path = tmp_path / "f.npz"
    np.savez(path, feats=np.ones((2, 2)))
    _expect(path, r"missing key\(s\) pids, split; expected feats, pids, split",
            require=("pids", "split"))
    _expect(tmp_path / "none.npz", "no such feature file")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip")
    _expect(junk, "not a readable .npz of plain arrays")
    pickled = tmp_path / "obj.npz"
    np.savez(pickled, feats=np.array([object(), 1], dtype=object))
    _expect(pickled, "not a readable .npz of plain arrays")


def test_feature_file_save_validates_and_writes_nothing_when_bad(tmp_path: Path) -> None:
    bad = FeatureFile(feats=np.ones((2, 2)), pids=np.zeros(3, np.int64))
    with pytest.raises(DataError, match="pids must have shape"):
        bad.save(tmp_path / "f.npz")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- devices


def test_resolve_device_cpu_and_auto() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda:0" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto") == torch.device(expected)
    assert resolve_device(None) == torch.device(expected)


@pytest.mark.parametrize("spec", ["gpu", "cuda:x", "CPU", "cuda:", "mps"])
def test_resolve_device_rejects_unknown_specs(spec: str) -> None:
    with pytest.raises(ConfigError, match=rf"run.device='{spec}' is unknown: use auto, cpu"):
        resolve_device(spec, setting="run.device")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message without CUDA")
@pytest.mark.parametrize("spec", ["cuda", "cuda:1"])
def test_resolve_device_cuda_without_cuda_is_one_line(spec: str) -> None:
    with pytest.raises(ConfigError, match=f"--device={spec} but CUDA is not available: use "
                                          "--device=cpu"):
        resolve_device(spec, setting="--device")


def test_resolve_device_cuda_takes_the_local_rank(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("cuda", local_rank=1) == torch.device("cuda:1")
    assert resolve_device("auto", local_rank=2) == torch.device("cuda:2")
    assert resolve_device("cuda:3", local_rank=1) == torch.device("cuda:3")
