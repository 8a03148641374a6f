"""Camera-specific BN statistics: what is estimated, that the model is left as it was, that
extraction by camera uses each camera's own statistics, and the option end to end (training
labels, evaluation, `unreid eval --camera-bn`)."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import tiny_cfg
from torch import nn

from unreid.apps.inference import evaluate_checkpoint
from unreid.config import ModelConfig
from unreid.data import load_dataset
from unreid.engine import train
from unreid.models import build_model, extract_feature_sets, extract_features
from unreid.models.camera_bn import bn_layers, bn_statistics_loaded, camera_bn_statistics

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
