"""Several labelled roots as one training table (``data.root`` as a list): identities and
cameras kept apart by per-root offsets, query/gallery of the first root, one-line errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from unreid.config import load_config
from unreid.data.dataset import load_dataset, merge_datasets
from unreid.data.roots import data_roots, load_run_dataset, missing_folders, resolve_data_roots
from unreid.data.synth import SynthConfig, generate_world
from unreid.errors import ConfigError, DataError


def _touch(folder: Path, *names: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"")  # the reader lists names; nothing is decoded here


def _root_a(root: Path) -> Path:
    """pids 1, 3 (train), 5 (test); cameras c1..c3 -> 3 cameras."""
    _touch(root / "bounding_box_train", "0001_c1s1_000001_00.jpg", "0001_c2s1_000002_00.jpg",
           "0003_c3s1_000003_00.jpg")
    _touch(root / "query", "0005_c1s1_000004_00.jpg")
    _touch(root / "bounding_box_test", "0005_c2s1_000005_00.jpg", "0000_c3s1_000006_00.jpg")
    return root


def _root_b(root: Path) -> Path:
    """pids 0, 2 (train), 9 (test); cameras c1, c2 -> 2 cameras."""
    _touch(root / "bounding_box_train", "0000_c1s1_000001_00.jpg", "0002_c1s1_000002_00.jpg",
           "0002_c2s1_000003_00.jpg", "0002_c2s1_000004_00.jpg")
    _touch(root / "query", "0009_c1s1_000005_00.jpg")
    _touch(root / "bounding_box_test", "0009_c2s1_000006_00.jpg")
    return root


def test_merged_identities_and_cameras_are_offset_per_root(tmp_path: Path) -> None:
    a, b = load_dataset(_root_a(tmp_path / "a")), load_dataset(_root_b(tmp_path / "b"))
    ds = merge_datasets([a, b])
    # root a: pids as they are; root b: + (largest pid of a, test included, 5) + 1 = +6;
    # cameras of b: + the 3 cameras of a
    assert ds.train.pids.tolist() == [1, 1, 3, 6, 8, 8, 8]
    assert ds.train.camids.tolist() == [0, 1, 2, 3, 3, 4, 4]
    assert ds.train.paths[:3] == a.train.paths and ds.train.paths[3:] == b.train.paths
    # evaluated on the first root, untouched
    assert ds.query is a.query and ds.gallery is a.gallery
    assert ds.root == a.root and ds.distractor_pid == 0 and ds.has_cameras
    assert ds.num_cameras == 5
    assert len(ds.train.identities()) == len(a.train.identities()) + len(b.train.identities())


def test_the_order_of_the_roots_picks_the_evaluated_one(tmp_path: Path) -> None:
    a, b = load_dataset(_root_a(tmp_path / "a")), load_dataset(_root_b(tmp_path / "b"))
    ds = merge_datasets([b, a])
    # b first: its pids and cameras unchanged; a: + (9 + 1) pids, + 2 cameras
    assert ds.train.pids.tolist() == [0, 2, 2, 2, 11, 11, 13]
    assert ds.train.camids.tolist() == [0, 0, 1, 1, 2, 3, 4]
    assert ds.query is b.query


def test_unknown_identities_stay_unknown_and_a_root_without_cameras_is_one_camera(
    tmp_path: Path,
) -> None:
    a = load_dataset(_root_a(tmp_path / "a"))
    _touch(tmp_path / "footage", "x.jpg", "y.jpg")
    footage = load_dataset(tmp_path / "footage")  # folder layout: pid -1, camera 0
    ds = merge_datasets([a, footage])
    assert ds.train.pids.tolist()[3:] == [-1, -1]
    assert ds.train.camids.tolist()[3:] == [3, 3]
    assert ds.layout == "folder+market"


def test_one_root_is_the_dataset_itself(tmp_path: Path) -> None:
    a = load_dataset(_root_a(tmp_path / "a"))
    assert merge_datasets([a]) is a
    with pytest.raises(DataError):
        merge_datasets([])


def test_data_root_may_be_a_string_or_a_list(tmp_path: Path) -> None:
    assert data_roots("x") == ["x"]
    cfg = load_config([], [f"data.root=[{tmp_path / 'a'},{tmp_path / 'b'}]"])
    assert data_roots(cfg.data.root) == [str(tmp_path / "a"), str(tmp_path / "b")]
    with pytest.raises(ConfigError, match=r"data.root=\[\] is not allowed"):
        load_config([], ["data.root=[]"])


def test_a_missing_root_of_several_is_one_line_naming_it(tmp_path: Path) -> None:
    _root_a(tmp_path / "a")
    with pytest.raises(DataError) as err:
        resolve_data_roots([str(tmp_path / "a"), str(tmp_path / "gone")])
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"data.root[1]={tmp_path / 'gone'} is not a folder")


def test_missing_folders_names_each_missing_entry_and_never_a_synthetic_world(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a").mkdir()
    monkeypatch.chdir(tmp_path)
    fix = "give a folder"
    assert missing_folders(str(tmp_path / "a"), "k", fix) == []
    assert missing_folders("synth:quick", "k", fix) == []  # generated, never looked for
    assert missing_folders(str(tmp_path / "b"), "k", fix) == \
        [f"k={tmp_path / 'b'} is not a folder: give a folder"]
    assert missing_folders(["synth:default", "a", "b", "c"], "k", fix) == [
        f"k[{i}]={name} is not a folder (from {tmp_path}: {tmp_path / name}): give a folder"
        for i, name in ((2, "b"), (3, "c"))]


def test_two_synthetic_worlds_train_as_one_table(tmp_path: Path) -> None:
    worlds = [
        generate_world(SynthConfig(ids=6, cameras=2, images_per_id=4, height=32, width=16,
                                   seed=seed, occluders=0.0, distractors=2),
                       tmp_path / f"world{seed}", progress=False)
        for seed in (0, 1)
    ]
    one = [load_dataset(w) for w in worlds]
    cfg = load_config([], [f"data.root=[{worlds[0]},{worlds[1]}]"])
    ds = load_run_dataset(cfg)
    assert len(ds.train) == len(one[0].train) + len(one[1].train) == 2 * 3 * 4
    # each world has the train pids 1..3 and the test pids 0 (distractors), 4..6
    assert np.unique(ds.train.pids).tolist() == [1, 2, 3, 8, 9, 10]
    assert np.unique(ds.train.camids).tolist() == [0, 1, 2, 3]
    for split, alone in ((ds.query, one[0].query), (ds.gallery, one[0].gallery)):
        assert split.paths == alone.paths
        assert np.array_equal(split.pids, alone.pids)
        assert np.array_equal(split.camids, alone.camids)
