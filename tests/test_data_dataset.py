"""Dataset readers: Market-style, MSMT17 and plain folders, and their error messages."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from unreid.data import load_dataset
from unreid.data.check import check_data, format_report
from unreid.errors import DataError


def _img(path: Path, value: int = 100, size: tuple[int, int] = (8, 16)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(path)
    return path


def _market(root: Path) -> Path:
    for name in ["0002_c1s1_000451_03.jpg", "0002_c3s1_000551_01.jpg", "0007_c2s1_000001_00.jpg",
                 "-1_c1s1_000001_00.jpg", "notes.txt"]:
        if name.endswith(".txt"):
            (root / "bounding_box_train").mkdir(parents=True, exist_ok=True)
            (root / "bounding_box_train" / name).write_text("not an image")
        else:
            _img(root / "bounding_box_train" / name)
    for name in ["0005_c1s1_000010_00.jpg", "0009_c2s1_000020_00.jpg"]:
        _img(root / "query" / name)
    for name in ["0005_c2s1_000011_00.jpg", "0005_c1s1_000012_00.jpg", "0000_c3s1_000013_00.jpg",
                 "-1_c1s1_000014_00.jpg"]:
        _img(root / "bounding_box_test" / name)
    return root


def test_market_layout_tables(tmp_path):
    ds = load_dataset(_market(tmp_path / "m"))
    assert ds.layout == "market" and ds.has_cameras and ds.distractor_pid == 0
    # junk (-1) left out everywhere, distractor (0) kept in the gallery, camid 0-based
    assert [Path(p).name for p in ds.train.paths] == [
        "0002_c1s1_000451_03.jpg", "0002_c3s1_000551_01.jpg", "0007_c2s1_000001_00.jpg"]
    assert ds.train.pids.tolist() == [2, 2, 7] and ds.train.camids.tolist() == [0, 2, 1]
    assert ds.query.pids.tolist() == [5, 9] and ds.query.camids.tolist() == [0, 1]
    assert sorted(ds.gallery.pids.tolist()) == [0, 5, 5]
    assert ds.gallery.identities(ds.distractor_pid).tolist() == [5]
    assert ds.num_cameras == 3
    # query identity 9 has no gallery image: reported, not an error
    assert len(ds.warnings) == 1 and ds.warnings[0].startswith("1 query identities (1 images)")


def test_duke_and_cuhk03_np_names_read_as_market(tmp_path):
    root = tmp_path / "duke"
    _img(root / "bounding_box_train" / "0001_c2_f0046182.jpg")
    _img(root / "bounding_box_train" / "0001_c6_f0046300.png")
    ds = load_dataset(root, layout="market")
    assert ds.train.pids.tolist() == [1, 1] and ds.train.camids.tolist() == [1, 5]
    assert len(ds.query) == 0 and len(ds.gallery) == 0


def test_market_name_mismatch_lists_examples_and_pattern(tmp_path):
    root = _market(tmp_path / "m")
    _img(root / "bounding_box_train" / "person_a.jpg")
    _img(root / "bounding_box_train" / "IMG_0001.jpg")
    with pytest.raises(DataError) as err:
        load_dataset(root)
    msg = str(err.value)
    assert "\n" not in msg and "2 of 6 file names" in msg and "IMG_0001.jpg" in msg
    assert "PID_cCAM" in msg and "--layout folder" in msg


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(tmp_path / "nowhere")
    (tmp_path / "e" / "bounding_box_train").mkdir(parents=True)
    with pytest.raises(DataError, match="no images"):
        load_dataset(tmp_path / "e")
    (tmp_path / "f").mkdir()
    with pytest.raises(DataError, match="no images"):
        load_dataset(tmp_path / "f")
    with pytest.raises(DataError, match="not in the Market-1501 layout"):
        load_dataset(tmp_path / "f", layout="market")
    with pytest.raises(DataError, match="unknown"):
        load_dataset(tmp_path / "f", layout="duke")


def test_msmt17_lists(tmp_path):
    root = tmp_path / "msmt"
    lines = {"list_train.txt": ["0000/0000_000_01_0303morning_0015_0.jpg 0",
                                "0001/0001_004_15_0303afternoon_0010_1.jpg 1"],
             "list_val.txt": ["0000/0000_009_03_0303noon_0031_0.jpg 0"],
             "list_query.txt": ["0003/0003_000_02_0303morning_0001_0.jpg 3"],
             "list_gallery.txt": ["0003/0003_001_05_0303morning_0002_0.jpg 3"]}
    for name, rows in lines.items():
        sub = "train" if name in ("list_train.txt", "list_val.txt") else "test"
        for row in rows:
            _img(root / sub / row.split()[0])
        (root / name).write_text("\n".join(rows) + "\n")
    ds = load_dataset(root)
    assert ds.layout == "msmt17"
    assert ds.train.pids.tolist() == [0, 1, 0] and ds.train.camids.tolist() == [0, 14, 2]
    assert ds.query.camids.tolist() == [1] and ds.gallery.camids.tolist() == [4]
    assert all(Path(p).is_file() for s in ds.splits for p in s.paths)
    (root / "list_query.txt").write_text("garbage line here\n")
    with pytest.raises(DataError, match=r"list_query.txt:1: expected"):
        load_dataset(root)


def test_folder_regex_maps_camera_names_and_numbers(tmp_path):
    root = tmp_path / "footage"
    for name in ["north_p12_a.jpg", "south_p3_b.jpg", "north_p3_c.jpg", "sub/east_p12_d.jpg"]:
        _img(root / name)
    ds = load_dataset(root, camera_regex=r"^(?P<camid>[a-z]+)_p(?P<pid>\d+)")
    assert ds.layout == "folder" and ds.has_cameras
    names = [Path(p).name for p in ds.train.paths]
    cams = dict(zip(names, ds.train.camids.tolist()))
    assert cams == {"north_p12_a.jpg": 1, "north_p3_c.jpg": 1, "south_p3_b.jpg": 2,
                    "east_p12_d.jpg": 0}  # sorted names: east, north, south
    assert dict(zip(names, ds.train.pids.tolist()))["south_p3_b.jpg"] == 3
    num = load_dataset(root, camera_regex=r"_p(?P<pid>\d+)")
    assert not num.has_cameras and set(num.train.camids.tolist()) == {0}
    with pytest.raises(DataError, match="do not match --camera-regex"):
        load_dataset(root, camera_regex=r"^cam(?P<camid>\d+)")
    with pytest.raises(DataError, match="named group"):
        load_dataset(root, camera_regex=r"^\w+")


def test_folder_numeric_cameras_sort_numerically(tmp_path):
    root = tmp_path / "f"
    for name in ["c10_0.jpg", "c2_0.jpg", "c9_0.jpg"]:
        _img(root / name)
    ds = load_dataset(root, camera_regex=r"^c(?P<camid>\d+)_")
    names = [Path(p).name for p in ds.train.paths]
    assert dict(zip(names, ds.train.camids.tolist())) == {"c2_0.jpg": 0, "c9_0.jpg": 1,
                                                          "c10_0.jpg": 2}


def test_folder_without_cameras_and_csv(tmp_path):
    root = tmp_path / "f"
    for name in ["a.jpg", "b.png"]:
        _img(root / name)
    plain = load_dataset(root)
    assert plain.layout == "folder" and not plain.has_cameras
    assert plain.train.camids.tolist() == [0, 0] and plain.train.pids.tolist() == [-1, -1]
    table = tmp_path / "t.csv"
    table.write_text("path,camid,pid\na.jpg,7,1\nb.png,3,2\n")
    ds = load_dataset(root, csv=str(table))
    assert ds.has_cameras and ds.train.camids.tolist() == [1, 0]
    assert ds.train.pids.tolist() == [1, 2]
    table.write_text("a.jpg,1\nmissing.jpg,2\n")
    with pytest.raises(DataError, match=r"row 2: image .*missing.jpg does not exist"):
        load_dataset(root, csv=str(table))
    with pytest.raises(DataError, match="not both"):
        load_dataset(root, csv=str(table), camera_regex="(?P<camid>a)")


def test_check_data_lists_unreadable_images(tmp_path):
    root = _market(tmp_path / "m")
    (root / "query" / "0005_c2s1_000099_00.jpg").write_bytes(b"")
    (root / "bounding_box_test" / "0005_c3s1_000100_00.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    report = check_data(root, progress=False)
    assert report.decoded == 10 and len(report.unreadable) == 2
    text = format_report(report)
    assert "0005_c2s1_000099_00.jpg is empty (0 bytes)" in text
    assert "0005_c3s1_000100_00.jpg cannot be decoded" in text
    assert "decoded 10 images: 2 unreadable" in text
    lines = text.splitlines()
    assert lines[1].split() == ["split", "images", "identities", "cameras", "distractors"]
    assert lines[2].split() == ["train", "3", "2", "3", "0"]
    assert lines[4].split() == ["gallery", "4", "1", "3", "1"]


def test_cli_check_data_exit_codes(tmp_path, capsys):
    from unreid.cli import main

    root = _market(tmp_path / "m")
    assert main(["check-data", str(root)]) == 0
    assert "images per camera" in capsys.readouterr().out
    (root / "query" / "0005_c2s1_000099_00.jpg").write_bytes(b"")
    assert main(["check-data", str(root)]) == 1
    assert main(["check-data", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: dataset folder") and err.count("\n") == 1


@pytest.mark.realdata
def test_cuhk03_detected_counts_match_its_readme(cuhk03_root):
    ds = load_dataset(cuhk03_root)
    counts = [(len(s), len(s.identities(ds.distractor_pid))) for s in ds.splits]
    assert counts == [(7239, 743), (200, 100), (738, 100)]
    assert ds.num_cameras == 2 and not ds.warnings
    # query = one image of every (identity, camera); every query has a cross-camera match
    assert len({(p, c) for p, c in zip(ds.query.pids, ds.query.camids)}) == 200
