"""DistributedDataParallel on CPU: 2 gloo processes train the tiny world together."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from helpers import tiny_cfg


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, data: str, out: str, queue) -> None:
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    from unreid.engine import train
    from unreid.engine.hooks import HookBase

    def flat(model: torch.nn.Module) -> torch.Tensor:
        return torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    seen: list[list[int]] = []
    weights: list[torch.Tensor] = []

    class GrabLabels(HookBase):
        def before_train(self) -> None:
            weights.append(flat(self.trainer.model))

        def before_step(self) -> None:
            if self.trainer.step == 0:
                seen.append(self.trainer.labels.labels.tolist())

        def after_train(self) -> None:
            weights.append(flat(self.trainer.model))

    # camera.bn: the per-camera BN statistics pass runs on every rank (each reads all the
    # images) before the sharded extraction; camera.bn_train: the BN layers split each
    # rank's batch by camera inside DDP's one forward
    cfg = tiny_cfg(Path(data), Path(out), "optim.num_identities=2", "eval.eval_every=0",
                   "camera.bn=true", "camera.bn_train=true")
    result = train(cfg, hooks=[GrabLabels()])
    first, last = (w.numpy() for w in weights)  # by value: the worker exits before the read
    queue.put((rank, seen, [r.get("loss") for r in result.records[1:]], first, last))


@pytest.mark.slow
def test_two_gloo_processes_share_labels_and_learn(tiny_world: Path, tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    out = tmp_path / "ddp"
    workers = mp.spawn(_worker, args=(2, _free_port(), str(tiny_world), str(out), queue),
                       nprocs=2, join=False)
    # Read before joining: a worker cannot exit while its queue still holds its results.
    got = sorted((queue.get(timeout=600) for _ in range(2)), key=lambda item: item[0])
    while not workers.join():
        pass
    (r0, labels0, loss0, first0, last0), (r1, labels1, loss1, first1, last1) = got
    assert (r0, r1) == (0, 1)
    assert labels0 == labels1 and len(labels0) == 3  # the labels rank 0 made, every epoch
    assert loss0 == loss1  # the loss is averaged over ranks before logging
    # gradients were all-reduced: both ranks start and end with the same weights, and
    # those weights moved (whether the loss falls depends on one seed's floats)
    assert np.array_equal(first0, first1) and np.array_equal(last0, last1)
    assert np.abs(last0 - first0).max() > 1e-3
    # only rank 0 wrote the run folder, each epoch once
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 4 and (out / "checkpoint.pt").is_file()
