"""The synthetic world: layout, determinism, masks, and the property the methods rely on.

That property: backgrounds make a naive feature (a colour histogram of the whole crop)
group images by camera rather than by person, and the ground-truth masks undo it.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from unreid.data.synth import (
    QUICK_CONFIG,
    SynthConfig,
    config_hash,
    default_world,
    generate_world,
    render_image,
)
from unreid.errors import ConfigError
from unreid.eval import evaluate

SPLITS = ("bounding_box_train", "query", "bounding_box_test")
NAME = re.compile(r"^(\d{4})_c(\d)s1_(\d{6})_00\.jpg$")

TINY = SynthConfig(
    ids=10, cameras=3, images_per_id=6, height=64, width=32, seed=3, occluders=0.3,
    distractors=4,
)
# big enough for stable retrieval statistics (40 test identities), small enough to be fast
MID = SynthConfig(
    ids=80, cameras=4, images_per_id=8, height=64, width=32, seed=0, occluders=0.15,
    distractors=20,
)


def file_hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def split_table(root: Path, folder: str) -> tuple[list[Path], np.ndarray, np.ndarray]:
    """(paths, pids, 0-based camids) of one split, parsed from the file names."""
    paths = sorted((root / folder).glob("*.jpg"))
    parsed = [NAME.match(p.name) for p in paths]
    assert all(parsed), [p.name for p, m in zip(paths, parsed) if not m][:3]
    pids = np.array([int(m.group(1)) for m in parsed])
    cams = np.array([int(m.group(2)) - 1 for m in parsed])
    return paths, pids, cams


def mask_of(root: Path, image: Path) -> np.ndarray:
    return np.asarray(Image.open(root / "masks" / image.parent.name / f"{image.stem}.png"))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_world(TINY, tmp_path_factory.mktemp("tiny") / "world", progress=False)


@pytest.fixture(scope="module")
def mid(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_world(MID, tmp_path_factory.mktemp("mid") / "world", progress=False)


# ---------------------------------------------------------------- determinism


def test_synth_same_seed_gives_byte_identical_files_and_another_seed_does_not(tiny, tmp_path):
    again = generate_world(TINY, tmp_path / "again", progress=False)
    assert file_hashes(again) == file_hashes(tiny)
    other = generate_world(
        SynthConfig(**{**TINY.__dict__, "seed": TINY.seed + 1}), tmp_path / "other",
        progress=False,
    )
    a, b = file_hashes(tiny), file_hashes(other)
    assert sum(a[k] == b.get(k) for k in a if k.endswith(".jpg")) == 0


def test_synth_process_pool_writes_the_same_bytes_as_one_process(tiny, tmp_path):
    pooled = generate_world(TINY, tmp_path / "pooled", progress=False, workers=2)
    assert file_hashes(pooled) == file_hashes(tiny)


def test_synth_render_image_is_a_pure_function_of_its_generators():
    def draw() -> tuple[np.ndarray, np.ndarray]:
        return render_image(TINY, 1, np.random.default_rng(5), np.random.default_rng(6))

    (img1, mask1), (img2, mask2) = draw(), draw()
    assert img1.shape == (64, 32, 3) and img1.dtype == np.uint8
    assert mask1.shape == (64, 32) and mask1.dtype == bool
    np.testing.assert_array_equal(img1, img2)
    np.testing.assert_array_equal(mask1, mask2)


# ---------------------------------------------------------------- layout


def test_synth_layout_counts_and_market_names(tiny):
    info = json.loads((tiny / "world.json").read_text())
    assert info["config"] == TINY.__dict__ and info["hash"] == config_hash(TINY)
    train, query, gallery = (split_table(tiny, s) for s in SPLITS)
    n_train_ids = TINY.ids // 2

    assert set(train[1]) == set(range(1, n_train_ids + 1))  # pids start at 1
    assert len(train[0]) == n_train_ids * TINY.images_per_id
    test_ids = set(range(n_train_ids + 1, TINY.ids + 1))
    assert set(query[1]) == test_ids
    assert set(gallery[1]) == test_ids | {0}
    assert (gallery[1] == 0).sum() == TINY.distractors
    # every test image is either the query of its (pid, camera) or in the gallery
    assert len(query[0]) + len(gallery[0]) - TINY.distractors == len(test_ids) * TINY.images_per_id
    pairs = list(zip(query[1].tolist(), query[2].tolist()))
    assert len(pairs) == len(set(pairs))  # one query per (identity, camera)
    # every camera that saw a test identity has its query
    g_pairs = set(zip(gallery[1].tolist(), gallery[2].tolist())) - {(0, c) for c in range(9)}
    assert g_pairs <= set(pairs)
    for _, _, cams in (train, query, gallery):
        assert cams.min() >= 0 and cams.max() < TINY.cameras
    for split in (train, query, gallery):
        assert info["splits"][split[0][0].parent.name]["images"] == len(split[0])
    frames = [p.name[10:16] for s in (train, query, gallery) for p in s[0]]
    assert len(frames) == len(set(frames))  # frame numbers unique in the world


def test_synth_train_and_test_identities_are_disjoint_and_seen_by_two_cameras(mid):
    train, query, gallery = (split_table(mid, s) for s in SPLITS)
    assert not set(train[1]) & (set(query[1]) | set(gallery[1]))
    pids = np.concatenate([train[1], query[1], gallery[1]])
    cams = np.concatenate([train[2], query[2], gallery[2]])
    n_cams = {pid: len(set(cams[pids == pid])) for pid in set(pids.tolist()) - {0}}
    assert min(n_cams.values()) >= 2
    # people do not walk past every camera: the subsets vary
    assert len(set(n_cams.values())) > 1


# ---------------------------------------------------------------- masks and images


def test_synth_masks_mirror_the_images_binary_and_sane(tiny):
    fractions = []
    for split in SPLITS:
        for path in sorted((tiny / split).glob("*.jpg")):
            mask = mask_of(tiny, path)
            image = Image.open(path)
            assert mask.shape == (image.height, image.width) and mask.dtype == np.uint8
            assert set(np.unique(mask).tolist()) <= {0, 255}
            fractions.append((mask > 0).mean())
    fractions = np.array(fractions)
    n_images = sum(1 for s in SPLITS for _ in (tiny / s).glob("*.jpg"))
    assert len(fractions) == n_images == len(list((tiny / "masks").rglob("*.png")))
    assert 0.2 < fractions.mean() < 0.5
    # an occluder may hide much of a person, never all of them
    assert fractions.min() > 0.05 and fractions.max() < 0.7


def test_synth_images_of_one_identity_are_all_different(tiny):
    paths, pids, _ = split_table(tiny, "bounding_box_train")
    for pid in np.unique(pids)[:3]:
        images = [np.asarray(Image.open(p), dtype=np.int16) for p in np.array(paths)[pids == pid]]
        for i in range(len(images)):
            for j in range(i + 1, len(images)):
                assert np.abs(images[i] - images[j]).mean() > 5.0


def test_synth_masks_follow_the_person_not_the_background(tiny):
    """Inside the mask the pixels of one identity's images agree more than outside."""
    paths, pids, cams = split_table(tiny, "bounding_box_train")
    first = pids == pids[0]
    imgs = np.stack([np.asarray(Image.open(p), dtype=np.float32) for p in np.array(paths)[first]])
    masks = np.stack([mask_of(tiny, p) > 0 for p in np.array(paths)[first]])
    # mean colour of the person vs of the background, per image: the person's is stable
    fg = np.stack([im[m].mean(0) for im, m in zip(imgs, masks)])
    bg = np.stack([im[~m].mean(0) for im, m in zip(imgs, masks)])
    assert len(set(cams[first].tolist())) >= 2
    assert fg.std(0).mean() < bg.std(0).mean()


# ---------------------------------------------------------------- the property that matters


def hsv_histograms(paths: list[Path], root: Path, masked: bool) -> np.ndarray:
    """(N, 512) L2-normalised HSV 8x8x8 histograms, over the mask's pixels when masked."""
    feats = np.zeros((len(paths), 512))
    for i, path in enumerate(paths):
        hsv = np.asarray(Image.open(path).convert("HSV")).astype(np.int64) >> 5
        bins = (hsv[..., 0] * 64 + hsv[..., 1] * 8 + hsv[..., 2]).ravel()
        weights = (mask_of(root, path) > 0).ravel() if masked else None
        feats[i] = np.bincount(bins, weights=weights, minlength=512)
    return feats / np.linalg.norm(feats, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def histogram_baseline(mid) -> dict[str, dict[str, float]]:
    (qp, q_pids, q_cams), (gp, g_pids, g_cams) = (
        split_table(mid, s) for s in ("query", "bounding_box_test")
    )
    out = {}
    for name, masked in (("raw", False), ("masked", True)):
        qf, gf = hsv_histograms(qp, mid, masked), hsv_histograms(gp, mid, masked)
        result = evaluate(1.0 - qf @ gf.T, q_pids, g_pids, q_cams, g_cams)
        # nearest neighbour of every labelled test image among the others
        keep = np.concatenate([q_pids, g_pids]) > 0
        feats = np.concatenate([qf, gf])[keep]
        pids = np.concatenate([q_pids, g_pids])[keep]
        cams = np.concatenate([q_cams, g_cams])[keep]
        sim = feats @ feats.T
        np.fill_diagonal(sim, -np.inf)
        nn = sim.argmax(1)
        out[name] = {
            "mAP": result.mAP,
            "same_id": float((pids[nn] == pids).mean()),
            "same_cam_stranger": float(((cams[nn] == cams) & (pids[nn] != pids)).mean()),
        }
    return out


def test_synth_histogram_baseline_scores_far_higher_with_ground_truth_masks(histogram_baseline):
    raw, masked = histogram_baseline["raw"]["mAP"], histogram_baseline["masked"]["mAP"]
    assert masked >= 2.0 * raw
    assert masked > 0.2  # the people themselves are distinguishable: the problem is solvable


def test_synth_raw_neighbours_follow_cameras_and_masked_neighbours_follow_people(
    histogram_baseline,
):
    """Camera bias: on raw crops the nearest neighbour is more often a stranger seen by
    the same camera than the same person (same-camera same-person neighbours are no
    bias, so they are not counted against); the masks reverse the order."""
    raw, masked = histogram_baseline["raw"], histogram_baseline["masked"]
    assert raw["same_cam_stranger"] > raw["same_id"]
    assert masked["same_id"] > masked["same_cam_stranger"]
    assert masked["same_id"] > 2 * raw["same_id"]


# ---------------------------------------------------------------- config, folders, cache


@pytest.mark.parametrize(
    ("field", "value"),
    [("ids", 1), ("cameras", 1), ("cameras", 10), ("images_per_id", 1), ("height", 16),
     ("occluders", 1.5), ("distractors", -1), ("seed", -1)],
)
def test_synth_rejects_unusable_configs_naming_the_field(tmp_path, field, value):
    cfg = SynthConfig(**{**TINY.__dict__, field: value})
    with pytest.raises(ConfigError, match=field if field != "height" else "size"):
        generate_world(cfg, tmp_path / "w", progress=False)
    assert not (tmp_path / "w").exists()


def test_synth_refuses_a_folder_that_is_not_a_world_and_replaces_an_old_world(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "holiday.jpg").write_bytes(b"x")
    with pytest.raises(ConfigError, match="not a synthetic world"):
        generate_world(TINY, tmp_path / "photos", progress=False)
    assert (tmp_path / "photos" / "holiday.jpg").exists()

    out = tmp_path / "world"
    generate_world(SynthConfig(**{**TINY.__dict__, "ids": 12}), out, progress=False)
    generate_world(TINY, out, progress=False)
    pids = {int(p.name[:4]) for p in out.rglob("*.jpg")}
    assert max(pids) == TINY.ids  # nothing left over from the bigger world
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos", "world"]  # no temp folders


def test_synth_default_world_is_generated_once_into_its_hash_folder(tmp_path):
    root = default_world(quick=True, cache_root=tmp_path)
    assert root == tmp_path / config_hash(QUICK_CONFIG)
    stamp = (root / "world.json").stat().st_mtime_ns
    assert default_world(quick=True, cache_root=tmp_path) == root
    assert (root / "world.json").stat().st_mtime_ns == stamp  # cached, not regenerated
    assert json.loads((root / "world.json").read_text())["config"] == QUICK_CONFIG.__dict__
    assert [p.name for p in tmp_path.iterdir()] == [root.name]  # no temp folders left
    assert config_hash(SynthConfig()) != config_hash(QUICK_CONFIG)
