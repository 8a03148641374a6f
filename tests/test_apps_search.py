"""unreid search: ranking an image folder or an extract .npz for query images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from unreid.apps.inference import extract_to_npz
from unreid.apps.search import parse_market_name, search
from unreid.cli import main
from unreid.config import load_config, to_container
from unreid.data import list_images, load_dataset, load_images
from unreid.engine.checkpoint import model_signature, save_checkpoint
from unreid.errors import DataError, WeightsError
from unreid.models import build_model
from unreid.viz.montage import GREEN, GREY, RED

H, W = 64, 32


def make_checkpoint(path: Path, images: np.ndarray, backbone: str = "tiny_cnn") -> Path:
    """A checkpoint as the trainer writes it (config, signature, weights) for a random
    model whose BN statistics are those of ``images``, so its features spread out."""
    cfg = load_config(
        [], ["data.root=unused", f"data.height={H}", f"data.width={W}",
             f"model.backbone={backbone}", "model.pretrained=none"]
    )
    cfg.data.cache_dir = ""  # decoded images stay in memory
    torch.manual_seed(0)
    model = build_model(cfg.model, 0)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = None  # cumulative average: one pass sets the statistics
    model.train()
    with torch.no_grad():
        model(torch.from_numpy(images).float() / 255.0)
    cfg_dict = to_container(cfg)
    state = {
        "config": cfg_dict,
        "model_signature": model_signature(model, cfg_dict),
        "model": model.state_dict(),
        "num_classes": 0,
    }
    return save_checkpoint(state, path)


@pytest.fixture(scope="module")
def gallery_dir(tiny_world: Path) -> Path:
    return tiny_world / "bounding_box_test"


def find_images(folder: Path) -> list[Path]:
    return list_images(folder, recursive=True)


@pytest.fixture(scope="module")
def ckpt(gallery_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    images = load_images(find_images(gallery_dir)[:64], H, W, progress=False)
    return make_checkpoint(tmp_path_factory.mktemp("search") / "checkpoint.pt", images)


@pytest.fixture(scope="module")
def gallery_npz(ckpt: Path, tiny_world: Path, tmp_path_factory) -> Path:
    """The tiny world's features as ``unreid extract`` writes them (train, query, gallery)."""
    out = tmp_path_factory.mktemp("npz") / "feats.npz"
    return extract_to_npz(ckpt, load_dataset(tiny_world), out, device="cpu")


def pixel(path: Path, x: int, y: int) -> tuple[int, int, int]:
    return Image.open(path).convert("RGB").getpixel((x, y))


def test_a_gallery_image_finds_itself_first_in_an_image_folder(
    ckpt: Path, gallery_dir: Path
) -> None:
    q = find_images(gallery_dir)[7]
    result = search(ckpt, gallery_dir, [q], topk=5)
    (r,) = result.queries
    assert result.gallery_size == len(find_images(gallery_dir)) and result.metric == "cosine"
    assert len(r.matches) == 5
    assert Path(r.matches[0].path) == q and abs(r.matches[0].distance) < 1e-5
    assert r.matches[0].same_id is True and r.pid == parse_market_name(q)[0]
    dists = [m.distance for m in r.matches]
    assert dists == sorted(dists) and dists[1] > 1e-4


def test_npz_gallery_uses_only_its_gallery_rows_and_finds_the_query(
    ckpt: Path, gallery_npz: Path, gallery_dir: Path
) -> None:
    g_paths = [str(p) for p in find_images(gallery_dir)]
    assert set(np.load(gallery_npz)["split"]) == {"train", "query", "gallery"}
    q = g_paths[3]
    result = search(ckpt, gallery_npz, [q], topk=len(g_paths) + 50)
    (r,) = result.queries
    assert result.gallery_size == len(g_paths)
    assert len(r.matches) == len(g_paths)  # topk clamps to the gallery
    assert {m.path for m in r.matches} == set(g_paths)  # no train rows
    assert r.matches[0].path == q and abs(r.matches[0].distance) < 1e-5


def test_rerank_keeps_the_self_match_first(ckpt: Path, gallery_dir: Path) -> None:
    qs = find_images(gallery_dir)[:3]
    cos = search(ckpt, gallery_dir, qs, topk=5)
    rr = search(ckpt, gallery_dir, qs, topk=5, rerank=True)
    assert rr.metric == "rerank"
    for q, r in zip(qs, rr.queries):
        assert Path(r.matches[0].path) == q
    assert [m.distance for m in rr.queries[0].matches] != [
        m.distance for m in cos.queries[0].matches
    ]


def test_ranked_list_png_has_one_row_per_query_and_coloured_frames(
    ckpt: Path, gallery_dir: Path, tmp_path: Path
) -> None:
    qs = find_images(gallery_dir)[:2]
    k = 4
    result = search(ckpt, gallery_dir, qs, topk=k, out=tmp_path / "sub" / "ranked.png")
    assert result.image == tmp_path / "sub" / "ranked.png"
    tile_w, row_h = W + 6, H + 6 + 14  # 3-pixel frames, a 14-pixel label line
    with Image.open(result.image) as im:
        assert im.size == ((k + 1) * tile_w + 4 * k, 2 * row_h + 4)
    # rank 1 is the query itself: green; colour of the other frames by identity
    assert pixel(result.image, tile_w + 4 + 1, 1) == GREEN
    for i, m in enumerate(result.queries[0].matches):
        want = GREEN if m.same_id else RED
        assert pixel(result.image, (i + 1) * (tile_w + 4) + 1, 1) == want


def test_unknown_identities_give_grey_frames(
    ckpt: Path, gallery_dir: Path, tmp_path: Path
) -> None:
    q = tmp_path / "someone.png"
    Image.open(find_images(gallery_dir)[0]).save(q)
    result = search(ckpt, gallery_dir, [q], topk=2, out=tmp_path / "r.png")
    assert result.queries[0].pid is None
    assert all(m.same_id is None for m in result.queries[0].matches)
    assert pixel(result.image, W + 6 + 4 + 1, 1) == GREY


def test_cli_prints_the_table(ckpt: Path, gallery_npz: Path, gallery_dir: Path, capsys) -> None:
    q = str(find_images(gallery_dir)[0])
    assert main(["search", "--checkpoint", str(ckpt), "--gallery", str(gallery_npz),
                 "--query", q, "--topk", "3"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1].split()[:3] == ["query", "rank", "distance"]
    assert out[2].split()[0] == q and out[2].split()[-1] == q
    assert len(out) == 2 + 3


def one_line_error(capsys, argv: list[str], *words: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    for word in words:
        assert word in err, err
    return err


def test_errors_are_one_line_naming_the_file(
    ckpt: Path, gallery_npz: Path, gallery_dir: Path, tmp_path: Path, capsys
) -> None:
    q = str(find_images(gallery_dir)[0])
    base = ["search", "--checkpoint", str(ckpt), "--gallery", str(gallery_dir)]
    one_line_error(capsys, [*base, "--query", str(tmp_path / "nope.jpg")], "nope.jpg")
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    one_line_error(capsys, [*base, "--query", str(bad)], "broken.jpg", "cannot be decoded")
    one_line_error(
        capsys,
        ["search", "--checkpoint", str(tmp_path / "missing.pt"), "--gallery", str(gallery_dir),
         "--query", q],
        "missing.pt",
    )
    one_line_error(
        capsys,
        ["search", "--checkpoint", str(ckpt), "--gallery", str(tmp_path / "g.npz"), "--query", q],
        "g.npz", "not found",
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    one_line_error(capsys, [*base[:3], "--gallery", str(empty), "--query", q], "no images")


def test_feature_dim_mismatch_names_the_npz_and_the_fix(
    ckpt: Path, gallery_dir: Path, tmp_path: Path
) -> None:
    npz = tmp_path / "other.npz"
    np.savez(npz, feats=np.ones((4, 2048), np.float32), paths=np.array(["a", "b", "c", "d"]))
    q = find_images(gallery_dir)[0]
    with pytest.raises(DataError, match=r"other\.npz holds 2048-dim .* 96-dim .*unreid extract"):
        search(ckpt, npz, [q])
    with pytest.raises(DataError, match=r"missing key\(s\) feats"):
        np.savez(npz, paths=np.array(["a"]))
        search(ckpt, npz, [q])


def test_missing_npz_gallery_image_for_the_picture_is_named(
    ckpt: Path, gallery_dir: Path, tmp_path: Path
) -> None:
    q = find_images(gallery_dir)[0]
    npz = tmp_path / "moved.npz"
    np.savez(npz, feats=np.eye(3, 96, dtype=np.float32), paths=np.array(["gone_1.jpg"] * 3))
    assert search(ckpt, npz, [q], topk=2).queries[0].matches[0].path == "gone_1.jpg"
    with pytest.raises(DataError, match="gone_1.jpg .*not found"):
        search(ckpt, npz, [q], topk=2, out=tmp_path / "r.png")


def test_bad_checkpoint_is_a_weights_error(gallery_dir: Path, tmp_path: Path) -> None:
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"garbage")
    with pytest.raises(WeightsError, match="junk.pt"):
        search(junk, gallery_dir, [find_images(gallery_dir)[0]])


def test_market_names_parse_and_others_do_not() -> None:
    assert parse_market_name("x/0012_c3s1_000001_00.jpg") == (12, 2)
    assert parse_market_name("-1_c1s2_000001_00.jpg") == (-1, 0)
    assert parse_market_name("photo.jpg") is None
