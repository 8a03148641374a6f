"""Source replay: the labelled source set trained beside the target's pseudo-labels.

Tiny end-to-end runs on the tiny synthetic world (target) with a second, differently
seeded synthetic world as the labelled source: the ``source`` loss term is logged, the
memory has one row per source identity, the target path is untouched, and a run killed
mid-epoch resumes to the uninterrupted run's losses, weights and memory bit for bit.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from helpers import Kill, tiny_cfg

from unreid.config import load_config, validate_config
from unreid.data.synth import SynthConfig, generate_world
from unreid.engine import train
from unreid.engine.checkpoint import CHECKPOINT, STEP_CHECKPOINT, load_checkpoint
from unreid.errors import ConfigError, TrainingError

SOURCE_IDS = 8  # train identities of the source world (the first half of its 16)


@pytest.fixture(scope="module")
def source_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another labelled synthetic world (seed 3: other people, other scenes), 8 training
    identities of 8 images."""
    cfg = SynthConfig(ids=2 * SOURCE_IDS, cameras=2, images_per_id=8, height=64, width=32,
                      seed=3, occluders=0.0, distractors=2)
    return Path(generate_world(cfg, tmp_path_factory.mktemp("source_world"), progress=False))


def lines(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def replay_cfg(world: Path, source: Path, out: Path, *overrides: str):
    return tiny_cfg(world, out, f"source.root={source}", "source.weight=0.5",
                    "optim.epochs=2", "eval.eval_every=0", *overrides)


@pytest.mark.slow
def test_replay_logs_a_source_term_and_keeps_one_centroid_per_source_identity(
    tiny_world: Path, source_world: Path, tmp_path: Path
) -> None:
    out = tmp_path / "on"
    recs = train(replay_cfg(tiny_world, source_world, out)).records
    for rec in recs[1:]:
        terms = rec["losses"]
        assert set(terms) == {"target", "source"}
        assert all(np.isfinite(v) and v > 0 for v in terms.values())
        assert rec["loss"] == pytest.approx(terms["target"] + terms["source"])
    state = load_checkpoint(out / CHECKPOINT)
    centroids = state["source_replay"]["memory"]["centroids"]
    assert centroids.shape == (SOURCE_IDS, state["model"]["head.neck.weight"].shape[0])
    assert torch.allclose(centroids.norm(dim=1), torch.ones(SOURCE_IDS))
    assert "sampler" not in state["source_replay"]  # an epoch checkpoint: the next epoch's own
    log = (out / "log.txt").read_text()
    assert f"source replay: 64 images of {SOURCE_IDS} identities from {source_world}, " \
           "weight 0.5" in log
    saved = load_config([out / "config.yaml"])
    assert saved.source.root == str(source_world) and saved.source.weight == 0.5


@pytest.mark.slow
def test_replay_leaves_the_target_batch_and_loss_of_a_step_as_they_were(
    tiny_world: Path, source_world: Path, tmp_path: Path
) -> None:
    # One step: the target term of a replay run is the loss of the plain run to the bit
    # (same labels, batch, augmentation and weights before the update).
    one = ("optim.epochs=1", "optim.iters=1", "eval.eval_every=0")
    off = train(tiny_cfg(tiny_world, tmp_path / "off", *one)).records[1]
    assert "losses" not in off  # cluster_contrast's one scalar, as before
    assert "source_replay" not in load_checkpoint(tmp_path / "off" / CHECKPOINT)
    on = train(tiny_cfg(tiny_world, tmp_path / "on", *one,
                        f"source.root={source_world}")).records[1]
    assert on["losses"]["target"] == off["loss"]
    assert on["num_clusters"] == off["num_clusters"]


@pytest.mark.slow
def test_replay_resumed_mid_epoch_matches_the_uninterrupted_run(
    tiny_world: Path, source_world: Path, tmp_path: Path
) -> None:
    steps = "run.checkpoint_steps=3"
    whole = tmp_path / "whole"
    train(replay_cfg(tiny_world, source_world, whole, steps))
    killed = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        train(replay_cfg(tiny_world, source_world, killed, steps), hooks=[Kill(1, 7)])
    step_state = load_checkpoint(killed / STEP_CHECKPOINT)
    assert (step_state["epoch"], step_state["step"]) == (1, 6)
    assert step_state["source_replay"]["sampler"]["step"] == 6
    train(None, resume=killed)
    a, b = load_checkpoint(killed / CHECKPOINT), load_checkpoint(whole / CHECKPOINT)
    assert [(r.get("loss"), r.get("losses")) for r in lines(killed)] == \
        [(r.get("loss"), r.get("losses")) for r in lines(whole)]
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in b["model"])
    assert torch.equal(a["source_replay"]["memory"]["centroids"],
                       b["source_replay"]["memory"]["centroids"])
    # and from the end of an epoch: the memory comes back from the epoch checkpoint
    boundary = tmp_path / "boundary"
    train(replay_cfg(tiny_world, source_world, boundary, "optim.epochs=1"))
    train(None, resume=boundary, overrides=["optim.epochs=2"])
    assert [(r.get("loss"), r.get("losses")) for r in lines(boundary)] == \
        [(r.get("loss"), r.get("losses")) for r in lines(whole)]


def test_a_missing_source_root_is_one_line_naming_it(tiny_world: Path, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-set"
    cfg = tiny_cfg(tiny_world, tmp_path / "run", f"source.root={missing}")
    with pytest.raises(ConfigError) as err:
        train(cfg)
    message = str(err.value)
    assert message.startswith(f"source.root={missing} is not a folder: ")
    assert "leave source.root unset" in message and "\n" not in message
    assert not (tmp_path / "run").exists()  # refused before anything is written
    listed = tiny_cfg(tiny_world, tmp_path / "run", f"source.root=[{tiny_world},{missing}]")
    with pytest.raises(ConfigError, match=rf"^source\.root\[1\]={missing} is not a folder"):
        validate_config(listed)
    relative = tiny_cfg(tiny_world, tmp_path / "run", "source.root=no/such/set")
    with pytest.raises(ConfigError, match=r"^source\.root=no/such/set is not a folder \(from "):
        validate_config(relative)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("source.weight=-1", "source.weight=-1.0 is not allowed: use a finite number > 0"),
        ("source.weight=0", "source.weight=0.0 is not allowed: use a finite number > 0"),
        ("source.layout=duke", "source.layout='duke' is not allowed: use one of auto, market, "
                               "msmt17, folder"),
        ("source.root=''", "source.root='' is not allowed: use a labelled dataset folder"),
    ],
)
def test_bad_source_values_are_one_line(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config([], ["data.root=/d", override])
    assert str(err.value).startswith(message)


def test_replay_is_off_by_default_and_a_config_without_it_validates() -> None:
    cfg = load_config([], ["data.root=/d"])
    assert cfg.source.root is None and cfg.source.weight == 1.0
    validate_config(cfg)  # no source folder is looked for


def test_the_replay_fragment_turns_replay_on_and_changes_nothing_else() -> None:
    from unreid.config import to_container

    configs = Path(__file__).resolve().parents[1] / "configs"
    base = to_container(load_config([configs / "cluster_contrast_cuhk03_source.yaml"]))
    both = to_container(load_config([configs / "cluster_contrast_cuhk03_source.yaml",
                                     configs / "source" / "replay.yaml"]))
    assert both["source"] == {"root": "../shared/data/peta-reid", "layout": "market",
                              "weight": 1.0}
    assert {k: v for k, v in both.items() if k != "source"} == \
        {k: v for k, v in base.items() if k != "source"}


def _ddp_worker(rank: int, world: int, port: int, data: str, source: str, out: str,
                queue) -> None:
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    from unreid.engine.hooks import HookBase

    class Grab(HookBase):
        def after_train(self) -> None:
            t = self.trainer
            weights = torch.cat([p.detach().reshape(-1) for p in t.model.parameters()])
            queue.put((rank, weights.numpy(), t.replay.memory.centroids.cpu().numpy()))

    cfg = tiny_cfg(Path(data), Path(out), f"source.root={source}", "optim.num_identities=2",
                   "optim.epochs=1", "optim.iters=4", "eval.eval_every=0")
    train(cfg, hooks=[Grab()])


@pytest.mark.slow
def test_two_gloo_processes_replay_the_source_with_identical_memories(
    tiny_world: Path, source_world: Path, tmp_path: Path
) -> None:
    # Two forward passes through the DDP-wrapped model, one backward: the gradients are
    # all-reduced as usual, and every rank updates its memory with both ranks' batches.
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    workers = mp.spawn(_ddp_worker, args=(2, port, str(tiny_world), str(source_world),
                                          str(tmp_path / "ddp"), queue), nprocs=2, join=False)
    got = sorted((queue.get(timeout=600) for _ in range(2)), key=lambda item: item[0])
    while not workers.join():
        pass
    (_, weights0, memory0), (_, weights1, memory1) = got
    assert np.array_equal(weights0, weights1)
    assert np.array_equal(memory0, memory1) and memory0.shape[0] == SOURCE_IDS
    recs = lines(tmp_path / "ddp")
    assert np.isfinite(recs[1]["losses"]["source"])


def test_running_stats_kept_normalises_with_the_batch_but_keeps_the_running_statistics(
) -> None:
    from unreid.engine.source_replay import running_stats_kept

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4),
                                torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.BatchNorm1d(16))
    model.train()
    x = torch.randn(6, 3, 2, 2) * 3 + 1
    before = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    with running_stats_kept(model):
        inside = model(x)
    after = {k: v for k, v in model.state_dict().items() if "running" in k}
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert [m.momentum for m in (model[1], model[4])] == [0.1, 0.1]  # restored
    outside = model(x)  # the same batch statistics normalise it; now the running ones move
    assert torch.equal(inside, outside)
    assert not torch.equal(before["1.running_mean"], model.state_dict()["1.running_mean"])


def test_several_source_roots_merge_with_their_identities_kept_apart(
    tiny_world: Path, source_world: Path, tmp_path: Path
) -> None:
    from unreid.engine.distributed import DistInfo
    from unreid.engine.source_replay import SourceReplay

    cfg = tiny_cfg(tiny_world, tmp_path / "run", f"source.root=[{source_world},{tiny_world}]")
    replay = SourceReplay.from_config(cfg, DistInfo(), torch.device("cpu"))
    assert replay is not None
    assert replay.num_identities == SOURCE_IDS + 12  # the tiny world's 12 train identities
    assert replay.images.shape == (64 + 96, 3, 64, 32)
    assert sorted(np.unique(replay.labels)) == list(range(SOURCE_IDS + 12))
    assert replay.describe() == (f"source replay: 160 images of 20 identities from "
                                 f"{source_world}, {tiny_world}, weight 1")
    assert SourceReplay.from_config(tiny_cfg(tiny_world, tmp_path / "off"), DistInfo(),
                                    torch.device("cpu")) is None
    # a folder without identities in its names, and fewer identities than a batch draws
    plain = tiny_cfg(tiny_world, tmp_path / "run", f"source.root={source_world}",
                     "source.layout=folder")
    with pytest.raises(TrainingError, match=r"^source\.root=.* has no identity labels: "):
        SourceReplay.from_config(plain, DistInfo(), torch.device("cpu"))
    wide = tiny_cfg(tiny_world, tmp_path / "run", f"source.root={source_world}",
                    "optim.num_identities=9")
    with pytest.raises(TrainingError, match=r"has only 8 identities, but a step draws "
                                            r"optim\.num_identities=9 x 1 "):
        SourceReplay.from_config(wide, DistInfo(), torch.device("cpu"))
