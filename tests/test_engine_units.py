"""Engine pieces without a training run: schedule, checkpoints, config checks, logs, DDP shards."""

from __future__ import annotations

import json
import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from unreid.config import load_config, to_container
from unreid.engine.checkpoint import (
    FORMAT,
    check_model_signature,
    check_resume_config,
    get_rng_state,
    load_checkpoint,
    model_signature,
    non_finite_parameters,
    save_checkpoint,
    set_rng_state,
)
from unreid.engine.distributed import gather_shards, shard_bounds
from unreid.engine.hooks import HealthHook
from unreid.engine.logger import RunLogger, jsonable
from unreid.engine.loop import derive_seed
from unreid.engine.trainer import lr_factor
from unreid.errors import ConfigError, WeightsError
from unreid.methods import PseudoLabels


def test_lr_factor_warms_up_linearly_then_steps_down() -> None:
    kw = {"warmup_epochs": 10, "warmup_factor": 0.01, "step_size": 20, "gamma": 0.1}
    got = [lr_factor(e, **kw) for e in (0, 5, 10, 19, 20, 39, 40)]
    assert got == pytest.approx([0.01, 0.505, 1.0, 1.0, 0.1, 0.1, 0.01])
    assert lr_factor(3, warmup_epochs=0, warmup_factor=0.5, step_size=0, gamma=0.1) == 1.0


def test_derive_seed_is_stable_and_separates_streams() -> None:
    assert derive_seed(0, 1, 2) == derive_seed(0, 1, 2)
    seeds = {derive_seed(0, 2, e, s, r) for e in range(3) for s in range(5) for r in range(2)}
    assert len(seeds) == 30
    assert 0 <= derive_seed(2**40, 7) < 2**63


def test_checkpoint_roundtrip_is_weights_only_and_atomic(tmp_path: Path) -> None:
    model = nn.Linear(3, 2)
    state = {
        "model": model.state_dict(),
        "config": {"model": {"backbone": "x"}},
        "records": [{"epoch": 0, "eval": {"mAP": 0.5}, "none": None}],
        "rng": get_rng_state(),
    }
    path = save_checkpoint(state, tmp_path / "run" / "checkpoint.pt")
    assert sorted(p.name for p in path.parent.iterdir()) == ["checkpoint.pt"]  # no temp left
    loaded = load_checkpoint(tmp_path / "run")  # a run folder resolves to its checkpoint
    assert torch.equal(loaded["model"]["weight"], model.weight.detach())
    assert loaded["records"] == state["records"]


@pytest.mark.parametrize("found", [FORMAT + 1, "2", None, 0])
def test_a_checkpoint_of_an_unknown_format_is_refused_in_one_line(
    tmp_path: Path, found: object
) -> None:
    state = {"model": {}, "config": {}, "format": found}
    path = save_checkpoint(state, tmp_path / "checkpoint.pt")
    with pytest.raises(WeightsError) as err:
        load_checkpoint(path)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg and f"format {found!r}" in msg
    assert f"reads formats 1 to {FORMAT}" in msg
    for known in range(1, FORMAT + 1):  # older layouts still read
        save_checkpoint({**state, "format": known}, path)
        assert load_checkpoint(path)["format"] == known


def test_rng_state_restores_torch_numpy_and_python_streams() -> None:
    state = get_rng_state()
    first = (torch.rand(3), np.random.rand(3), random.random())  # noqa: NPY002
    set_rng_state(state)
    again = (torch.rand(3), np.random.rand(3), random.random())  # noqa: NPY002
    assert torch.equal(first[0], again[0])
    assert np.array_equal(first[1], again[1])
    assert first[2] == again[2]


def test_unreadable_checkpoint_is_one_line_weights_error(tmp_path: Path) -> None:
    bad = tmp_path / "checkpoint.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError) as err:
        load_checkpoint(bad)
    assert "\n" not in str(err.value) and str(bad) in str(err.value)
    with pytest.raises(WeightsError, match="not found"):
        load_checkpoint(tmp_path / "missing")


def test_model_signature_mismatch_names_both_models() -> None:
    small = model_signature(nn.Linear(4, 8), {"model": {"backbone": "resnet18", "pooling": "avg"}})
    big = model_signature(nn.Linear(4, 16), {"model": {"backbone": "resnet50", "pooling": "avg"}})
    check_model_signature(small, dict(small), Path("c.pt"))
    with pytest.raises(WeightsError) as err:
        check_model_signature(small, big, Path("c.pt"))
    msg = str(err.value)
    assert "\n" not in msg and "resnet18" in msg and "resnet50" in msg
    cfg18 = {"model": {"backbone": "resnet18", "pooling": "avg"}}
    same_name = model_signature(nn.Linear(4, 16), cfg18)
    with pytest.raises(WeightsError, match="other layer shapes"):
        check_model_signature(small, same_name, Path("c.pt"))


def test_resume_config_check_allows_only_listed_keys() -> None:
    a = to_container(load_config([], ["data.root=/d"]))
    b = to_container(load_config([], ["data.root=/d", "optim.epochs=80", "eval.eval_every=5"]))
    check_resume_config(a, b, Path("run"), ("optim.epochs", "eval."))
    c = to_container(load_config([], ["data.root=/d", "cluster.eps=0.5"]))
    with pytest.raises(ConfigError) as err:
        check_resume_config(a, c, Path("run"), ("optim.epochs",))
    assert "cluster.eps=0.5 (run: 0.6)" in str(err.value) and "\n" not in str(err.value)


def test_non_finite_parameters_are_named() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    assert non_finite_parameters(model) == []
    with torch.no_grad():
        model[1].bias[0] = float("nan")
    assert non_finite_parameters(model) == ["1.bias"]


def test_metrics_log_appends_lines_and_rewrites_exactly(tmp_path: Path) -> None:
    log = RunLogger(tmp_path, tensorboard=False)
    log.write({"epoch": 1, "loss": np.float32(0.5), "q": {"ari": float("nan")}})
    log.write({"epoch": 2, "loss": torch.tensor(0.25)})
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lines == [{"epoch": 1, "loss": 0.5, "q": {"ari": None}}, {"epoch": 2, "loss": 0.25}]
    log.rewrite([{"epoch": 0}])
    assert (tmp_path / "metrics.jsonl").read_text() == '{"epoch": 0}\n'
    quiet = RunLogger(tmp_path / "other", enabled=False)
    quiet.write({"epoch": 1})
    assert not (tmp_path / "other").exists()


def test_jsonable_converts_arrays_and_tuples() -> None:
    got = jsonable({"a": np.arange(3), "b": (np.int64(2), None), 3: torch.ones(2)})
    assert got == {"a": [0, 1, 2], "b": [2, None], "3": [1.0, 1.0]}


@pytest.mark.parametrize("n,world", [(10, 3), (2, 2), (7, 1), (1, 2)])
def test_shards_cover_every_row_once(n: int, world: int) -> None:
    bounds = [shard_bounds(n, r, world) for r in range(world)]
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    sizes = [b - a for a, b in bounds]
    assert max(sizes) - min(sizes) <= 1
    x = torch.arange(n)
    assert torch.equal(gather_shards(x, n, torch.device("cpu")), x)  # single process: as is


def test_cli_set_takes_several_overrides_per_flag() -> None:
    from unreid.cli import build_parser

    args = build_parser().parse_args(
        ["train", "--set", "cluster.eps=0.5", "optim.epochs=2", "--set", "run.seed=3"])
    assert args.set == ["cluster.eps=0.5", "optim.epochs=2", "run.seed=3"]
    cfg = load_config([], ["data.root=/d", *args.set])
    assert (cfg.cluster.eps, cfg.optim.epochs, cfg.run.seed) == (0.5, 2, 3)


def test_health_hook_warns_about_pseudo_labels_but_not_ground_truth() -> None:
    """A singleton-heavy labelling warns for a clustering method (a knob can fix it) and
    not for a supervised one (ground truth: e.g. identities with one image)."""
    labels = PseudoLabels(np.arange(12, dtype=np.int64), 12)  # every sample alone
    logged: dict[bool, list[str]] = {}
    records: dict[bool, dict] = {}
    for supervised in (False, True):
        logged[supervised], records[supervised] = [], {}
        hook = HealthHook()
        hook.trainer = SimpleNamespace(  # type: ignore[assignment]
            labels=labels, info=SimpleNamespace(is_main=True), epoch=0,
            data=SimpleNamespace(camids=np.array([0, 1] * 6),
                                 dataset=SimpleNamespace(has_cameras=True)),
            record=records[supervised], method=SimpleNamespace(supervised=supervised,
                                                                labeller="density"),
            log=logged[supervised].append)
        hook.after_epoch()
    assert records[False]["health"] == records[True]["health"]
    assert records[False]["warnings"] and any("one sample" in w for w in records[False]["warnings"])
    assert any(line.startswith("warning: epoch 1:") for line in logged[False])
    assert "warnings" not in records[True] and logged[True] == []


def test_health_hook_logs_the_auto_choice_on_either_graph() -> None:
    """The cluster.auto line names the knobs of the graph the labels came from: k1 and k2
    on the plain graph, the camera-aware one's widths (in the reason) on CA-Jaccard; with
    either, the warnings say the knobs were chosen."""
    from unreid.cluster import CameraJaccard, auto_cluster_params

    cams = np.repeat([0, 1], 6)
    x = torch.eye(8)[np.tile(np.repeat([0, 1, 2], 2), 2)] + 1.5 * torch.eye(8)[6 + cams]
    plain = auto_cluster_params(x, camids=cams)
    aware = auto_cluster_params(x, camera=CameraJaccard(cams, 1, 2, 1, 1))
    lines: dict[str, list[str]] = {}
    for name, choice in (("plain", plain), ("camera_aware", aware)):
        lines[name] = []
        outliers = np.array([0, 0] + [-1] * 10, dtype=np.int64)  # 83 % outliers
        hook = HealthHook()
        record: dict = {}
        hook.trainer = SimpleNamespace(  # type: ignore[assignment]
            labels=PseudoLabels(outliers, 1, info={"auto": choice.as_dict()}),
            info=SimpleNamespace(is_main=True), epoch=0,
            data=SimpleNamespace(camids=cams, dataset=SimpleNamespace(has_cameras=True)),
            record=record, method=SimpleNamespace(supervised=False, labeller="density"),
            log=lines[name].append)
        hook.after_epoch()
        assert "cluster.auto chose them: set cluster.auto=false" in record["warnings"][0]
    assert lines["plain"][0] == (f"cluster.auto: k1 {plain.k1} k2 {plain.k2} eps "
                                 f"{plain.eps:g} min_samples {plain.min_samples}: {plain.reason}")
    assert lines["camera_aware"][0] == (f"cluster.auto: CA-Jaccard eps {aware.eps:g} "
                                        f"min_samples {aware.min_samples}: {aware.reason}")
    assert "k1_intra 1, k1_inter 2, k2_intra 1, k2_inter 1" in aware.reason
