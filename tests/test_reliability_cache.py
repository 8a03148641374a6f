"""Where unreid keeps what it can rebuild: a private per-user cache (not the working
folder), its size report and clearing, and ``synth --out`` never deleting a user's files."""

from __future__ import annotations

import stat
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from unreid.cli import main
from unreid.config import load_config
from unreid.data import load_images
from unreid.data.synth import SynthConfig, generate_world
from unreid.errors import ConfigError, DataError

TINY = SynthConfig(ids=4, cameras=2, images_per_id=4, height=32, width=16, seed=1,
                   occluders=0.0, distractors=2)


def _images(folder: Path, n: int = 3) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"{i}.png"
        Image.fromarray(np.full((16, 8, 3), 10 * i, np.uint8)).save(path)
        paths.append(str(path))
    return paths


def test_user_cache_root_is_unreid_cache_else_xdg_else_home(tmp_path, monkeypatch):
    from unreid.data.cache import resolve_cache_dir, user_cache_root

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("UNREID_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert user_cache_root() == tmp_path / "home" / ".cache" / "unreid"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")  # the XDG spec: absolute only
    assert user_cache_root() == tmp_path / "home" / ".cache" / "unreid"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert user_cache_root() == tmp_path / "xdg" / "unreid"
    monkeypatch.setenv("UNREID_CACHE", "~/mine")
    assert user_cache_root() == tmp_path / "home" / "mine"
    assert resolve_cache_dir("auto") == tmp_path / "home" / "mine" / "decoded"
    assert resolve_cache_dir("") is None and resolve_cache_dir(None) is None
    assert resolve_cache_dir("~/c") == tmp_path / "home" / "c"


def test_default_image_cache_is_per_user_and_private(tmp_path, monkeypatch):
    monkeypatch.setenv("UNREID_CACHE", str(tmp_path / "cache"))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert load_config([], []).data.cache_dir == "auto"
    got = load_images(_images(tmp_path / "img"), 8, 4, cache_dir="auto", progress=False)
    assert got.shape == (3, 3, 8, 4)
    decoded = tmp_path / "cache" / "decoded"
    assert len(list(decoded.glob("images-*.npy"))) == 1
    for folder in (tmp_path / "cache", decoded):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    assert not any(work.iterdir())


def test_an_unwritable_cache_folder_is_one_line_naming_the_setting(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(DataError) as err:
        load_images(_images(tmp_path / "img"), 8, 4, cache_dir=tmp_path / "file" / "c",
                    progress=False)
    msg = str(err.value)
    assert "\n" not in msg and str(tmp_path / "file" / "c") in msg
    assert "data.cache_dir" in msg


def test_training_with_the_defaults_writes_nothing_in_the_working_folder(
    tiny_world, tmp_path, monkeypatch
):
    """What a read-only working folder needs: the run goes where run.out_dir says, the
    decoded images to the user's cache, nothing to the current folder."""
    from unreid.engine import train

    monkeypatch.setenv("UNREID_CACHE", str(tmp_path / "cache"))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    cfg = load_config([], [
        f"data.root={tiny_world}", "data.height=64", "data.width=32",
        "model.backbone=tiny_cnn", "model.pretrained=none", "optim.epochs=1", "optim.iters=2",
        "optim.num_identities=4", "optim.num_instances=4", "optim.warmup_epochs=0",
        "cluster.k1=10", "cluster.k2=3", "run.device=cpu", "run.report=false",
        f"run.out_dir={tmp_path / 'run'}",
    ])
    train(cfg)
    assert not list(work.iterdir())
    assert list((tmp_path / "cache" / "decoded").glob("images-*.npy"))


def test_cache_info_and_clear_remove_only_what_unreid_wrote(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("UNREID_CACHE", str(tmp_path / "cache"))
    assert main(["cache", "info"]) == 0
    assert f"cache {tmp_path / 'cache'}: empty" in capsys.readouterr().out
    paths = _images(tmp_path / "img")
    load_images(paths, 8, 4, cache_dir="auto", progress=False)
    load_images(paths, 16, 8, cache_dir="auto", progress=False)
    decoded = tmp_path / "cache" / "decoded"
    size = sum(p.stat().st_size for p in decoded.glob("images-*.npy"))
    (decoded / "notes.txt").write_text("mine")  # not unreid's: never deleted
    assert main(["cache", "info"]) == 0
    out = capsys.readouterr().out
    assert f"decoded images: 2 files, {size / 1e6:.1f} MB" in out
    assert main(["cache", "clear"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"removed 2 files ({size / 1e6:.1f} MB) from {tmp_path / 'cache'}")
    assert [p.name for p in decoded.iterdir()] == ["notes.txt"]
    # another folder (a config's own data.cache_dir) is named with --dir
    load_images(paths, 8, 4, cache_dir=tmp_path / "own", progress=False)
    assert main(["cache", "clear", "--dir", str(tmp_path / "own")]) == 0
    assert not list((tmp_path / "own").iterdir())


def test_synth_out_refuses_a_world_holding_files_the_user_added(tmp_path, capsys):
    out = tmp_path / "world"
    generate_world(TINY, out, progress=False)
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    generate_world(TINY, out, progress=False)  # a world unreid wrote is replaced
    added = [out / "notes.txt", out / "bounding_box_train" / "0001_c1s1_999999_00.jpg"]
    for path in added:
        path.write_bytes(b"the user's")
        with pytest.raises(ConfigError) as err:
            generate_world(TINY, out, progress=False)
        msg = str(err.value)
        assert "\n" not in msg and str(path.relative_to(out)) in msg and str(out) in msg
        assert path.read_bytes() == b"the user's"
        path.unlink()
    added[0].write_bytes(b"x")
    code = main(["synth", "--out", str(out), "--ids", "4", "--cameras", "2",
                 "--images-per-id", "4", "--size", "32", "16", "--distractors", "2"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: --out") and err.count("\n") == 1
    assert added[0].exists()
