"""One training per run folder: an exclusive lock on ``RUN_DIR/.lock``.

Two ``unreid train`` into one folder at once would interleave ``metrics.jsonl``
and ``log.txt`` and overwrite each other's checkpoints while both exit 0. The
run therefore holds ``fcntl.flock(LOCK_EX | LOCK_NB)`` on ``RUN_DIR/.lock`` from
before it reads the folder until it ends; a second run (new or ``--resume``)
is refused at once with one line naming the folder and the holder's pid. The
kernel drops the lock when the holder exits in any way (error, Ctrl-C,
``kill -9``), so a crashed run never leaves a stale lock behind; the file itself
stays (deleting it would let two processes lock two different files).
"""

from __future__ import annotations

import fcntl
import functools
import inspect
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from unreid.errors import ConfigError, TrainingError

__all__ = ["LOCK_FILE", "run_lock", "with_run_lock"]

LOCK_FILE = ".lock"
T = TypeVar("T")


def _holder(path: Path) -> str:
    try:
        pid = path.read_text().strip()
    except OSError:
        pid = ""
    return f"pid {pid}" if pid.isdigit() else "pid unknown"


@contextmanager
def run_lock(run_dir: str | Path) -> Iterator[Path]:
    """Hold the exclusive lock of ``run_dir`` for the ``with`` block; yields the folder.

    Creates ``run_dir`` when missing (and removes it, with the parents made for it,
    at the end if the block left nothing but the lock file in it: a run refused by
    validation leaves no folder behind).

    Raises:
        TrainingError: another process holds the lock (one line: folder and pid).
        ConfigError: the folder cannot be created or written.
    """
    run_dir = Path(run_dir)
    created = []  # the folders made here, deepest first
    for folder in (run_dir, *run_dir.parents):
        if folder.exists():
            break
        created.append(folder)
    path = run_dir / LOCK_FILE
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:  # a read-only working folder, a file in the way, ...
        raise ConfigError(
            f"run folder {run_dir} cannot be written ({exc.strerror or type(exc).__name__}): "
            "set run.out_dir to a writable folder"
        ) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise TrainingError(
                f"run folder {run_dir} is in use by another unreid train ({_holder(path)}): "
                "wait for it to end, or choose another run.out_dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        try:
            yield run_dir
        finally:
            if created and [p.name for p in run_dir.iterdir()] == [LOCK_FILE]:
                path.unlink()  # still under the lock: nobody else used the folder
                for folder in created:  # e.g. runs/ of runs/default, when still empty
                    try:
                        folder.rmdir()
                    except OSError:
                        break
    finally:
        os.close(fd)  # releases the lock


def with_run_lock(train: Callable[..., T]) -> Callable[..., T]:
    """Decorate ``train(cfg, resume=None, eval_only=False, ...)`` so that the whole call
    holds the lock of the folder it writes (``resume``, else ``cfg.run.out_dir``).

    Not taken by ``eval_only`` (it writes nothing there), by ranks other than 0 under
    torchrun (they share rank 0's run), or when ``resume`` names no folder (train
    reports that itself)."""
    signature = inspect.signature(train)

    @functools.wraps(train)
    def locked(*args: Any, **kwargs: Any) -> T:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        cfg, resume = bound.arguments.get("cfg"), bound.arguments.get("resume")
        folder = resume if resume is not None else getattr(getattr(cfg, "run", None),
                                                           "out_dir", None)
        if (folder is None or bound.arguments.get("eval_only")
                or os.environ.get("RANK", "0") != "0"
                or (resume is not None and not Path(resume).is_dir())):
            return train(*args, **kwargs)
        with run_lock(folder):
            return train(*args, **kwargs)

    return locked
