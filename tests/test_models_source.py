"""Starting a run from another run's checkpoint (``model.pretrained=PATH``): the source's
classifier is dropped, backbone + neck load, the run folder records the source
(``source.json``) and the report shows its numbers; another model is one clear line.

The source is tiny_cnn trained with labels on a second synthetic world (world seed 1),
the target the shared tiny world (seed 0): other people, other camera scenes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from helpers import TRANSFER, tiny_cfg

from unreid.config import ModelConfig
from unreid.engine import train
from unreid.engine.checkpoint import CHECKPOINT, load_checkpoint
from unreid.errors import WeightsError
from unreid.models import build_model, load_weights_file
from unreid.models.source import (
    SOURCE_JSON,
    describe_source,
    source_model_overrides,
    write_source_record,
)
from unreid.viz import write_report


@pytest.fixture(scope="module")
def source(source_model: Path) -> Path:
    return source_model


def e2e_cfg(world: Path, out: Path, *overrides: str):
    """The tiny transfer setting (helpers.tiny_cfg + TRANSFER)."""
    return tiny_cfg(world, out, *TRANSFER, *overrides)


@pytest.fixture(scope="module")
def adapted(tiny_world: Path, source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-epoch PUL run on the tiny world from the source (its classifier: 12 classes)."""
    out = tmp_path_factory.mktemp("adapted") / "pul"
    train(e2e_cfg(tiny_world, out, "method.name=pul", f"model.pretrained={source}",
                  "model.feature=bn", "cluster.num_classes=12", "cluster.lambda_=0.5",
                  "optim.epochs=1", "optim.iters=4", "run.report=true"))
    return out


def test_the_run_folder_records_the_source_model(source: Path, adapted: Path) -> None:
    record = json.loads((adapted / SOURCE_JSON).read_text())
    saved = load_checkpoint(source)
    assert record["path"] == str(source.resolve())
    assert record["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert record["method"] == "supervised"
    assert record["data_roots"] == [saved["config"]["data"]["root"]]
    assert record["model"] == {"backbone": "tiny_cnn", "pooling": "avg", "last_stride": 1}
    assert record["feature_dim"] == saved["model_signature"]["feature_dim"]
    assert record["epochs"] == saved["epoch"] == 8
    assert record["eval"] == saved["records"][-1]["eval"]
    assert record["eval_epoch"] == 8  # evaluated after its last epoch
    assert "started from" in (adapted / "log.txt").read_text()


def test_the_report_shows_the_source_numbers_beside_the_adapted_ones(adapted: Path) -> None:
    page = (write_report(adapted)).read_text()
    record = json.loads((adapted / SOURCE_JSON).read_text())
    evals = [json.loads(line)["eval"] for line in (adapted / "metrics.jsonl").read_text()
             .splitlines() if "eval" in json.loads(line)]
    assert "<h2>Source model</h2>" in page
    for name, values in (("source model on its own split", record["eval"]),
                         ("direct transfer", evals[0]), ("adapted (final)", evals[-1])):
        row = page[page.index(name):]
        assert f"<td>{100 * values['mAP']:.1f}</td>" in row[: row.index("</tr>")]


def test_the_start_loads_backbone_and_neck_and_drops_a_classifier_of_other_classes(
    source: Path, adapted: Path
) -> None:
    pul = adapted / CHECKPOINT  # holds a 12-class classifier
    assert load_checkpoint(pul)["model"]["head.classifier.weight"].shape[0] == 12
    cfg = ModelConfig(backbone="tiny_cnn", pretrained="none")
    model = build_model(cfg, 0)
    assert load_weights_file(model, pul) == ["head.classifier.weight"]
    assert model.num_classes == 0
    saved = load_checkpoint(pul)["model"]
    for key, value in model.state_dict().items():
        assert torch.equal(value, saved[key]), key
    # another class count: the model keeps its own fresh classifier
    other = build_model(cfg, 5)
    fresh = other.head.classifier.weight.detach().clone()
    assert load_weights_file(other, pul) == ["head.classifier.weight"]
    assert torch.equal(other.head.classifier.weight, fresh)
    # the same class count (resuming one's own run): the saved classifier is kept
    same = build_model(cfg, 12)
    assert load_weights_file(same, pul) == []
    assert torch.equal(same.head.classifier.weight, saved["head.classifier.weight"])
    # the supervised source has no classifier at all (a memory head): nothing dropped
    assert load_weights_file(build_model(cfg, 0), source) == []


@pytest.mark.parametrize(
    ("settings", "fix"),
    [({"backbone": "resnet18"}, "set model.backbone=tiny_cnn (its config.yaml)"),
     ({"pooling": "gem"}, "set model.pooling=avg (its config.yaml)")],
)
def test_a_checkpoint_of_another_model_is_one_line_naming_the_file_and_the_fix(
    source: Path, settings: dict, fix: str
) -> None:
    cfg = ModelConfig(pretrained=str(source), **{"backbone": "tiny_cnn", **settings})
    with pytest.raises(WeightsError) as err:
        build_model(cfg, 0)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"model.pretrained={source} holds a tiny_cnn model")
    assert fix in message


def test_a_bare_state_dict_is_described_by_path_and_hash(source: Path, tmp_path: Path) -> None:
    bare = tmp_path / "weights.pt"
    torch.save(load_checkpoint(source)["model"], bare)
    about = describe_source(bare)
    assert about.sha256 == hashlib.sha256(bare.read_bytes()).hexdigest()
    assert (about.method, about.data_roots, about.eval, about.eval_epoch, about.model) == (
        None, (), None, None, None)
    assert source_model_overrides(bare) == []
    assert source_model_overrides(source) == [
        "model.backbone=tiny_cnn", "model.pooling=avg", "model.last_stride=1"]
    assert write_source_record("imagenet", tmp_path) is None
    assert not (tmp_path / SOURCE_JSON).exists()


@pytest.fixture(scope="module")
def discriminative_start(tiny_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny_cnn trained with the tiny world's own training labels (as the source model,
    8 x 20 steps): a start whose features put the target's people together."""
    out = tmp_path_factory.mktemp("discriminative") / "run"
    return train(e2e_cfg(tiny_world, out, "method.name=supervised",
                         "optim.epochs=8")).run_dir / CHECKPOINT


@pytest.mark.slow
@pytest.mark.parametrize(("method", "count"), [("rsl", "reliable"), ("pul", "selected")])
def test_rsl_and_pul_select_correct_pairs_from_a_discriminative_start(
    tiny_world: Path, discriminative_start: Path, tmp_path: Path, method: str, count: str
) -> None:
    # lambda 0.85 (the papers') on the BN-neck features of the first epoch. From a start
    # that puts same-identity images close, lambda keeps a part of the samples and their
    # labels are right; the features of a random tiny_cnn are so concentrated that every
    # sample passes and the labels are mostly wrong: a count alone would favour it. The
    # floor of 24 samples (min_selected) keeps a batch of 16 when lambda alone keeps fewer.
    # Measured over run seeds 0-9 (AMD EPYC without AVX-512): kept 24-31 of 96, pair
    # precision 0.65-1.0 (rsl) and 0.66-0.97 (pul) against 0.11-0.23 from the random start
    # (96 of 96), smallest gap 0.47. The cross-world source model above is no such start
    # for this assertion: on those seeds its gap ranged from -0.01 to +0.41.
    def first_epoch(name: str, start: str) -> dict:
        result = train(e2e_cfg(tiny_world, tmp_path / name, f"method.name={method}",
                               f"model.pretrained={start}", "model.feature=bn",
                               "cluster.num_classes=12", "cluster.lambda_step=0",
                               "cluster.min_selected=0.25", "optim.epochs=1",
                               "optim.iters=2"))
        assert result.final is not None
        return result.records[1]

    adapted = first_epoch("start", str(discriminative_start))
    random = first_epoch("random", "none")
    assert 24 <= adapted["info"][count] < 96
    assert random["info"][count] == 96
    quality, baseline = adapted["label_quality"], random["label_quality"]
    assert quality["pair_precision"] > baseline["pair_precision"] + 0.3
