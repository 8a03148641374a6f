"""Outputs never overwrite inputs: ``masks``, ``export`` and ``search`` refuse an
``--out`` that is (or is inside) what they read, ``report`` a folder that is not a run."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from unreid.cli import main
from unreid.config import load_config, to_container
from unreid.engine.checkpoint import model_signature, save_checkpoint
from unreid.models import build_model


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _one_line_refusal(capsys, argv: list[str], *words: str) -> str:
    assert main(argv) == 2, argv
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    for word in words:
        assert word in err, (word, err)
    return err


@pytest.fixture(scope="module")
def png_market(tmp_path_factory) -> Path:
    """A Market-layout dataset of PNG images (the format masks would overwrite)."""
    root = tmp_path_factory.mktemp("pngdata") / "data"
    rng = np.random.default_rng(0)
    for split, names in {
        "bounding_box_train": ["0001_c1s1_000001_00", "0001_c2s1_000002_00"],
        "query": ["0002_c1s1_000003_00"],
        "bounding_box_test": ["0002_c2s1_000004_00", "0003_c1s1_000005_00"],
    }.items():
        (root / split).mkdir(parents=True)
        for name in names:
            Image.fromarray(rng.integers(0, 256, (32, 16, 3), dtype=np.uint8)).save(
                root / split / f"{name}.png")
    return root


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    cfg = load_config([], ["data.root=unused", "data.height=32", "data.width=16",
                           "model.backbone=tiny_cnn", "model.pretrained=none"])
    torch.manual_seed(0)
    model = build_model(cfg.model, 0)
    cfg_dict = to_container(cfg)
    state = {"config": cfg_dict, "model_signature": model_signature(model, cfg_dict),
             "model": model.state_dict(), "num_classes": 0}
    return save_checkpoint(state, tmp_path_factory.mktemp("run") / "checkpoint.pt")


def test_masks_out_in_the_data_folder_is_refused(png_market, capsys):
    before = _digest(png_market)
    for out in (png_market, png_market / "query", png_market / "masks"):
        _one_line_refusal(capsys, ["masks", "--provider", "none", "--data", str(png_market),
                                   "--out", str(out)], str(out), str(png_market))
    assert _digest(png_market) == before  # no image overwritten, no mask file added


def test_export_out_equal_to_the_checkpoint_is_refused(checkpoint, capsys):
    before = checkpoint.read_bytes()
    for source in (checkpoint, checkpoint.parent):
        _one_line_refusal(capsys, ["export", "--checkpoint", str(source), "--out",
                                   str(checkpoint)], str(checkpoint))
    assert checkpoint.read_bytes() == before


def test_search_out_over_a_query_or_into_the_gallery_is_refused(
    png_market, checkpoint, capsys, tmp_path
):
    query = png_market / "query" / "0002_c1s1_000003_00.png"
    gallery = png_market / "bounding_box_test"
    before = _digest(png_market)
    base = ["search", "--checkpoint", str(checkpoint), "--gallery", str(gallery),
            "--query", str(query), "--device", "cpu", "--out"]
    _one_line_refusal(capsys, [*base, str(query)], str(query))
    _one_line_refusal(capsys, [*base, str(gallery / "ranked.png")], str(gallery))
    # a features file as gallery: its images' folder is protected the same way
    npz = tmp_path / "feats.npz"
    assert main(["extract", "--checkpoint", str(checkpoint), "--data", str(png_market),
                 "--out", str(npz)]) == 0
    capsys.readouterr()
    base[base.index("--gallery") + 1] = str(npz)
    _one_line_refusal(capsys, [*base, str(gallery / "ranked.png")], str(gallery))
    assert _digest(png_market) == before
    assert main([*base, str(tmp_path / "ranked.png")]) == 0  # elsewhere: written
    assert (tmp_path / "ranked.png").is_file()


def test_refuse_overlap_compares_resolved_paths(tmp_path):
    from unreid.errors import ConfigError
    from unreid.io import refuse_overlap

    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    (data / "a.png").write_bytes(b"x")
    (tmp_path / "link").symlink_to(data)
    refuse_overlap(tmp_path / "elsewhere", data, what="the data folder")
    refuse_overlap(tmp_path / "data2", data, what="the data folder")  # a prefix, not inside
    refuse_overlap(tmp_path, data / "a.png", what="the image")  # a parent of an input file
    for out in (data, data / "sub" / "m", tmp_path / "link" / "m", data / ".." / "data"):
        with pytest.raises(ConfigError, match="is (inside )?the data folder"):
            refuse_overlap(out, tmp_path / "x", data, what="the data folder")
    (tmp_path / "hard.png").hardlink_to(data / "a.png")
    with pytest.raises(ConfigError) as err:
        refuse_overlap(tmp_path / "hard.png", data / "a.png", what="the image", flag="--save",
                       fix="pick another")
    assert str(err.value) == (f"--save {tmp_path / 'hard.png'} is the image "
                              f"{data / 'a.png'}: pick another --save")
