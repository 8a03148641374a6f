"""One run folder, one training at a time: a second ``unreid train`` (new or --resume)
into a folder that a live run holds is refused with one line naming the holder."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import torch.multiprocessing as mp
from helpers import tiny_cfg

from unreid.cli import main
from unreid.config import save_config
from unreid.engine import train
from unreid.engine.run_lock import LOCK_FILE, run_lock
from unreid.errors import ConfigError, TrainingError


def test_the_lock_is_exclusive_names_its_holder_and_is_released(tmp_path):
    run = tmp_path / "run"
    with run_lock(run):
        assert (run / LOCK_FILE).read_text().strip() == str(os.getpid())
        with pytest.raises(TrainingError) as err, run_lock(run):
            pass
        msg = str(err.value)
        assert "\n" not in msg and str(run) in msg and f"pid {os.getpid()}" in msg
        (run / "config.yaml").write_text("x: 1\n")
    with run_lock(run):  # released at the end of the block, also after an error
        pass
    with pytest.raises(KeyError), run_lock(run):
        raise KeyError
    with run_lock(run):
        pass
    # a folder the lock created and nothing else used is not left behind
    with run_lock(tmp_path / "fresh" / "run"):
        pass
    assert not (tmp_path / "fresh").exists()


def _hold_the_run(data: str, out: str, started: str, release: str) -> None:
    from unreid.engine.hooks import HookBase

    class WaitInFirstStep(HookBase):
        def before_step(self) -> None:
            if not Path(started).exists():
                Path(started).write_text("")
                deadline = time.monotonic() + 300
                while not Path(release).exists() and time.monotonic() < deadline:
                    time.sleep(0.05)

    train(tiny_cfg(Path(data), Path(out), "optim.epochs=1", "optim.iters=2"),
          hooks=[WaitInFirstStep()])


def test_a_second_train_into_a_live_run_folder_is_refused(tiny_world, tmp_path, capsys):
    out, started, release = tmp_path / "run", tmp_path / "started", tmp_path / "release"
    config = tmp_path / "same.yaml"
    save_config(tiny_cfg(tiny_world, out, "optim.epochs=1", "optim.iters=2"), config)
    holder = mp.get_context("spawn").Process(
        target=_hold_the_run, args=(str(tiny_world), str(out), str(started), str(release)))
    holder.start()
    try:
        deadline = time.monotonic() + 240
        while not started.exists():
            assert holder.is_alive() and time.monotonic() < deadline, "holder did not start"
            time.sleep(0.1)
        for argv in (["train", "--config", str(config)], ["train", "--resume", str(out)]):
            assert main(argv) == 2
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and str(out) in err and f"pid {holder.pid}" in err, err
    finally:
        release.write_text("")
        holder.join(timeout=240)
    assert holder.exitcode == 0
    epochs = [json.loads(x)["epoch"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [0, 1]  # one run's records, each epoch once
    result = train(None, resume=out)  # the holder has ended: the folder is free again
    assert [r["epoch"] for r in result.records] == [0, 1]


def test_a_run_folder_that_cannot_be_written_is_one_line(tmp_path):
    (tmp_path / "file").write_text("in the way")
    with pytest.raises(ConfigError) as err, run_lock(tmp_path / "file" / "run"):
        pass
    msg = str(err.value)
    assert "\n" not in msg and str(tmp_path / "file" / "run") in msg and "run.out_dir" in msg
