"""Camera-specific BN statistics: what is estimated, that the model is left as it was, that
extraction by camera uses each camera's own statistics, and the option end to end (training
labels, evaluation, `unreid eval --camera-bn`); camera-based BN in training (a batch's
camera slices, each normalised with its own statistics)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from helpers import tiny_cfg
from torch import nn

from unreid.apps.inference import evaluate_checkpoint
from unreid.config import ModelConfig
from unreid.data import load_dataset
from unreid.engine import train
from unreid.engine.hooks import HookBase
from unreid.models import build_model, extract_feature_sets, extract_features
from unreid.models.camera_bn import (
    batch_norm_split,
    bn_layers,
    bn_statistics_loaded,
    camera_batch_slices,
    camera_bn_statistics,
)

H, W = 8, 4


class InputBN(nn.Module):
    """BN on the input (no affine), then the flattened image: a feature that only
    normalisation changes."""

    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(3, affine=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(x).flatten(1)


def camera_images(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """12 images of camera 0 and the same 12 brighter by (40, 10, 70) in camera 3 (no
    value clips)."""
    base = np.random.default_rng(seed).integers(20, 180, size=(12, 3, H, W), dtype=np.uint8)
    shifted = base + np.array([40, 10, 70], dtype=np.uint8)[None, :, None, None]
    return np.concatenate([base, shifted]), np.array([0] * 12 + [3] * 12)


def trained_input_bn() -> InputBN:
    model = InputBN()
    with torch.no_grad():
        model.train()(torch.rand(16, 3, H, W) * 0.5)  # statistics of no camera here
    return model.eval()


def test_statistics_are_each_cameras_mean_and_variance() -> None:
    images, cams = camera_images()
    stats = camera_bn_statistics(trained_input_bn(), [(images, cams)], batch_size=64,
                                 progress=False)
    assert sorted(stats) == [0, 3]
    for cam in (0, 3):
        x = torch.from_numpy(images[cams == cam]).double() / 255.0
        ((mean, var),) = stats[cam]
        # one batch per camera: the running statistics are the batch's (unbiased variance)
        torch.testing.assert_close(mean.double(), x.mean(dim=(0, 2, 3)), atol=1e-6, rtol=0)
        torch.testing.assert_close(var.double(), x.var(dim=(0, 2, 3)), atol=1e-6, rtol=0)


def test_statistics_of_several_sets_and_batches_average_the_batches() -> None:
    images, cams = camera_images()
    half = len(images) // 2  # camera 0 in the first set, camera 3 in the second
    joint = camera_bn_statistics(trained_input_bn(), [(images, cams)], batch_size=64,
                                 progress=False)
    split = camera_bn_statistics(trained_input_bn(),
                                 [(images[:half], cams[:half]), (images[half:], cams[half:])],
                                 batch_size=64, progress=False)
    for cam in (0, 3):
        torch.testing.assert_close(split[cam], joint[cam])
    # batches of 4: the means average exactly to the camera's mean
    small = camera_bn_statistics(trained_input_bn(), [(images, cams)], batch_size=4,
                                 progress=False)
    torch.testing.assert_close(small[0][0][0], joint[0][0][0], atol=1e-6, rtol=0)


def test_a_camera_with_one_image_keeps_the_models_statistics() -> None:
    images, cams = camera_images()
    cams = cams.copy()
    cams[0] = 7
    model = trained_input_bn()
    stats = camera_bn_statistics(model, [(images, cams)], batch_size=64, progress=False)
    ((mean, var),) = stats[7]
    assert torch.equal(mean, model.bn.running_mean) and torch.equal(var, model.bn.running_var)


def test_the_model_is_left_as_it_was() -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="tiny_cnn"))
    with torch.no_grad():
        model.train()(torch.rand(8, 3, 64, 32))
    model.train()
    before = copy.deepcopy(model.state_dict())
    momenta = [m.momentum for m in bn_layers(model)]
    images = np.random.default_rng(1).integers(0, 256, size=(10, 3, 64, 32), dtype=np.uint8)
    stats = camera_bn_statistics(model, [(images, np.arange(10) % 2)], batch_size=4,
                                 progress=False)
    with bn_statistics_loaded(model, stats[1]):
        assert not torch.equal(bn_layers(model)[0].running_mean, before[
            next(k for k in before if k.endswith("running_mean"))])
    assert model.training and all(m.training for m in bn_layers(model))
    assert [m.momentum for m in bn_layers(model)] == momenta
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_a_camera_wise_shift_of_the_input_vanishes() -> None:
    # Camera 3 sees camera 0's images brighter: with its own statistics every image of
    # camera 3 gets exactly the feature of its camera-0 twin; with the shared ones it does not.
    images, cams = camera_images()
    model = trained_input_bn()
    stats = camera_bn_statistics(model, [(images, cams)], batch_size=64, progress=False)
    feats = extract_features(model, images, groups=cams, group_stats=stats, progress=False)
    torch.testing.assert_close(feats[:12], feats[12:], atol=1e-5, rtol=0)
    shared = extract_features(model, images, progress=False)
    twins = (shared[:12] * shared[12:]).sum(dim=1)  # cosine of each image and its twin
    assert float(twins.max()) < 0.99  # 0.968-0.979


def test_grouped_extraction_equals_a_model_per_camera() -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="tiny_cnn")).eval()
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, size=(9, 3, 64, 32), dtype=np.uint8)
    masks = rng.integers(0, 2, size=(9, 1, 64, 32), dtype=np.uint8)
    cams = np.array([2, 0, 2, 1, 0, 2, 1, 1, 0])
    stats = camera_bn_statistics(model, [(images, cams)], batch_size=3, progress=False)
    rows = np.array([8, 0, 3, 5, 2])
    got = extract_feature_sets(model, images, [None, masks], batch_size=2, groups=cams,
                               group_stats=stats, indices=rows, progress=False)
    for k, sub in enumerate(rows):
        reference = copy.deepcopy(model)
        for layer, (mean, var) in zip(bn_layers(reference), stats[int(cams[sub])], strict=True):
            layer.running_mean.copy_(mean)
            layer.running_var.copy_(var)
        want = extract_feature_sets(reference, images, [None, masks], indices=np.array([sub]),
                                    progress=False)
        for got_set, want_set in zip(got, want, strict=True):
            torch.testing.assert_close(got_set[k], want_set[0], atol=1e-5, rtol=0)


def test_bad_arguments_are_refused() -> None:
    images, cams = camera_images()
    model = trained_input_bn()
    with pytest.raises(ValueError, match="together"):
        extract_features(model, images, groups=cams, progress=False)
    stats = camera_bn_statistics(model, [(images[:12], cams[:12])], progress=False)
    with pytest.raises(ValueError, match="no camera BN statistics for camera 3"):
        extract_features(model, images, groups=cams, group_stats=stats, progress=False)
    with pytest.raises(ValueError, match="batch_size must be >= 2"):
        camera_bn_statistics(model, [(images, cams)], batch_size=1)
    with pytest.raises(ValueError, match="statistics for a model with"), \
            bn_statistics_loaded(model, stats[0] * 2):
        pass


@pytest.mark.slow
def test_camera_bn_runs_end_to_end_and_eval_reproduces_it(tiny_world: Path,
                                                          tmp_path: Path) -> None:
    # Training with camera BN at labelling and at evaluation; `unreid eval --camera-bn` on
    # the final checkpoint gives the run's own last evaluation, and the shared statistics
    # give another one (the option is in effect).
    cfg = tiny_cfg(tiny_world, tmp_path / "run", "method.name=cap", "optim.epochs=2",
                   "optim.iters=3", "camera.bn=true", "camera.bn_test=true")
    result = train(cfg)
    last = result.final
    ds = load_dataset(tiny_world)
    ckpt = result.run_dir / "checkpoint.pt"
    again = evaluate_checkpoint(ckpt, ds, camera_bn=True)
    assert again.mAP == pytest.approx(last["mAP"], abs=1e-9)
    shared = evaluate_checkpoint(ckpt, ds, camera_bn=False)
    assert shared.mAP != pytest.approx(last["mAP"], abs=1e-6)


@pytest.mark.parametrize(("camids", "order", "sizes"), [
    ([3, 0, 3, 0, 0], [1, 3, 4, 0, 2], [3, 2]),
    # cameras 1 and 5 have one row each: they join the slice before them
    ([5, 0, 0, 7, 7, 1], [1, 2, 5, 0, 3, 4], [4, 2]),
    # the first camera has one row: it joins the slice after it
    ([9, 4, 9, 9], [1, 0, 2, 3], [4]),
    ([2], [0], [1]),
])
def test_camera_batch_slices(camids: list[int], order: list[int], sizes: list[int]) -> None:
    got_order, got_sizes = camera_batch_slices(np.array(camids))
    assert got_order.tolist() == order and got_sizes == sizes
    assert camera_batch_slices(np.array(camids), min_rows=1)[1] == \
        np.unique(camids, return_counts=True)[1].tolist()


class BNReLU(nn.BatchNorm2d):
    """A BN subclass that adds an activation in its forward (as timm's BatchNormAct2d)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(super().forward(x) - 0.5)


def split_model() -> nn.Module:
    """In float64, so that the split and the separate forwards agree far below the
    tolerances on every processor (in float32 the gradients' summation order shows at
    1e-5 on some)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 1), BNReLU(4), nn.Flatten(), nn.Linear(4 * H * W, 5),
                         nn.BatchNorm1d(5)).double()


def split_input(rows: int) -> torch.Tensor:
    return torch.rand(rows, 3, H, W, dtype=torch.float64,
                      generator=torch.Generator().manual_seed(1))


def test_batch_norm_split_normalises_each_slice_on_its_own() -> None:
    x = split_input(7)
    sizes = [3, 4]
    split, separate = split_model().train(), split_model().train()
    with batch_norm_split(split, sizes):
        out = split(x)
    want = torch.cat([separate(x[:3]), separate(x[3:])])
    torch.testing.assert_close(out, want, atol=1e-10, rtol=0)
    # the same gradients as the two slices' separate forwards, and the same running
    # statistics (each slice updates them in turn)
    out.square().sum().backward()
    want.square().sum().backward()
    for a, b in zip(split.parameters(), separate.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-10, rtol=1e-8)
    for a, b in zip(bn_layers(split), bn_layers(separate), strict=True):
        torch.testing.assert_close(a.running_mean, b.running_mean)
        torch.testing.assert_close(a.running_var, b.running_var)
    # after the block the layers are as before: one batch statistic over all rows (the
    # parameters did not move, so a fresh model gives the same training-mode output)
    torch.testing.assert_close(split(x), split_model().train()(x))
    assert all("forward" not in vars(m) for m in split.modules())
    # in eval mode the split changes nothing
    want_eval = split.eval()(x)
    with batch_norm_split(split, sizes):
        torch.testing.assert_close(split(x), want_eval)


def test_batch_norm_split_removes_a_camera_wise_shift() -> None:
    images, cams = camera_images()
    order, sizes = camera_batch_slices(cams)
    x = torch.from_numpy(images[order]).float() / 255.0
    model = InputBN().train()
    with batch_norm_split(model, sizes):
        out = model(x)
    # camera 3's images are camera 0's shifted: after the split they are the same features
    torch.testing.assert_close(out[12:], out[:12], atol=1e-4, rtol=0)
    assert (model.train()(x)[12:] - model(x)[:12]).abs().max() > 0.5


def test_batch_norm_split_refuses_a_batch_of_another_size() -> None:
    model = split_model().train()
    with pytest.raises(ValueError, match="a batch of 6 rows, the slices"), \
            batch_norm_split(model, [3, 4]):
        model(split_input(6))
    with pytest.raises(ValueError, match="at least one row"), batch_norm_split(model, [0, 4]):
        pass


@pytest.mark.slow
def test_camera_bn_training_runs_end_to_end(tiny_world: Path, tmp_path: Path) -> None:
    # every training batch reaches the model sorted by camera, and the option changes what
    # is learnt
    seen: list[np.ndarray] = []
    cams = np.asarray(load_dataset(tiny_world).train.camids)

    class BatchCameras(HookBase):
        def before_train(self) -> None:
            original = self.trainer._augmented_batch

            def record(images: np.ndarray, index: np.ndarray, stream: int) -> Any:
                seen.append(cams[index])
                return original(images, index, stream)

            self.trainer._augmented_batch = record

    overrides = ("method.name=cap", "optim.epochs=1", "optim.iters=3", "camera.bn=true")
    result = train(tiny_cfg(tiny_world, tmp_path / "cbn", *overrides, "camera.bn_train=true"),
                   hooks=[BatchCameras()])
    assert len(seen) == 3 and all(np.all(np.diff(c) >= 0) for c in seen)
    assert all(len(np.unique(c)) > 1 for c in seen)
    plain = train(tiny_cfg(tiny_world, tmp_path / "plain", *overrides))
    assert np.isfinite(result.records[-1]["loss"])
    assert result.records[-1]["loss"] != pytest.approx(plain.records[-1]["loss"], abs=1e-6)
