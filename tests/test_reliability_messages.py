"""Bad input and hostile conditions end in one line naming the file and the fix,
never a traceback: text files in another encoding, Ctrl-C, and more."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from unreid.cli import main
from unreid.data import load_dataset
from unreid.errors import DataError


def _folder(root: Path, names: list[str]) -> Path:
    root.mkdir(parents=True)
    for name in names:
        Image.fromarray(np.full((16, 8, 3), 99, np.uint8)).save(root / name)
    return root


def test_a_csv_that_is_not_utf8_is_one_line_naming_the_line(tmp_path, capsys):
    root = _folder(tmp_path / "crops", ["a.jpg", "caf\u00e9.jpg"])
    table = tmp_path / "cams.csv"
    table.write_bytes("path,camid\na.jpg,1\ncaf\u00e9.jpg,2\n".encode("latin-1"))
    with pytest.raises(DataError) as err:
        load_dataset(root, csv=str(table))
    msg = str(err.value)
    assert "\n" not in msg and f"{table} line 3" in msg and "UTF-8" in msg
    assert main(["check-data", str(root), "--csv", str(table), "--no-decode"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    # the same table saved as UTF-8 by a spreadsheet (with a byte-order mark) reads
    table.write_bytes("path,camid\na.jpg,1\ncaf\u00e9.jpg,2\n".encode("utf-8-sig"))
    assert load_dataset(root, csv=str(table)).train.camids.tolist() == [0, 1]


def test_ctrl_c_in_train_names_the_resume_command(tiny_world, tmp_path, monkeypatch, capsys):
    from helpers import tiny_cfg

    from unreid.config import save_config
    from unreid.engine.trainer import Trainer

    def interrupted(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "train", interrupted)
    run = tmp_path / "my run"
    save_config(tiny_cfg(tiny_world, run), tmp_path / "c.yaml")
    assert main(["train", "--config", str(tmp_path / "c.yaml")]) == 130
    err = capsys.readouterr().err
    assert err == f"interrupted: continue with unreid train --resume '{run}'\n"
    assert main(["train", "--resume", str(run)]) == 130
    assert capsys.readouterr().err == f"interrupted: continue with unreid train --resume '{run}'\n"


class Unsafe:
    """Any class: unpickling it would run code from this module."""


def test_a_checkpoint_that_needs_pickle_is_refused_in_plain_words(tmp_path, capsys):
    import torch

    from unreid.engine.checkpoint import load_checkpoint
    from unreid.errors import WeightsError
    from unreid.models.weights import read_state_dict

    evil = tmp_path / "evil.pt"
    torch.save({"model": {"w": Unsafe()}, "config": {}}, evil)
    with pytest.raises(WeightsError) as err:
        load_checkpoint(evil)
    assert str(err.value) == (f"checkpoint {evil} refused: not a plain unreid checkpoint "
                              "(it would need pickle)")
    with pytest.raises(WeightsError) as err:
        read_state_dict(evil)
    assert str(err.value) == (f"weights file {evil} refused: not a plain state dict "
                              "(it would need pickle)")
    root = _folder(tmp_path / "crops", ["a.jpg"])
    assert main(["eval", "--checkpoint", str(evil), "--data", str(root)]) == 2
    assert capsys.readouterr().err == (f"error: checkpoint {evil} refused: not a plain unreid "
                                       "checkpoint (it would need pickle)\n")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")  # damaged: another message
    with pytest.raises(WeightsError, match="junk.pt cannot be read"):
        load_checkpoint(tmp_path / "junk.pt")


def test_a_full_disk_while_saving_a_checkpoint_keeps_the_last_one(
    tiny_world, tmp_path, monkeypatch, capsys
):
    import errno

    import torch
    from helpers import tiny_cfg

    from unreid.config import save_config
    from unreid.engine.checkpoint import CHECKPOINT, load_checkpoint

    real_save, calls = torch.save, []

    def full_after_the_first(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_after_the_first)
    run = tmp_path / "run"
    save_config(tiny_cfg(tiny_world, run, "optim.iters=2"), tmp_path / "c.yaml")
    assert main(["train", "--config", str(tmp_path / "c.yaml")]) == 2
    err = capsys.readouterr().err
    assert err == f"error: no space left in {run}; the last checkpoint is kept\n"
    assert load_checkpoint(run / CHECKPOINT)["epoch"] == 1
    assert not [p.name for p in run.iterdir() if ".tmp" in p.name]


@pytest.mark.parametrize("feats", [np.array([["a", "b"], ["c", "d"]]),
                                   np.array([[1.0, 2.0], [3.0, 4.0]]).astype(object)])
def test_eval_features_with_non_numeric_features_is_one_line(tmp_path, capsys, feats):
    path = tmp_path / "feats.npz"
    np.savez(path, feats=feats, pids=np.array([1, 1]), camids=np.array([0, 1]),
             split=np.array(["query", "gallery"]))
    assert main(["eval-features", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: ") and err.count("\n") == 1, err
