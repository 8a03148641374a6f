"""The one place for file and device plumbing shared by every stage.

- Atomic writes: a file is written to a temporary sibling and moved into place
  with ``os.replace``, so a reader (or a crash, Ctrl-C, kill) never sees half a
  file. :func:`atomic_path` hands the temporary path to a library that writes to
  a path (``torch.save``, PIL, onnx, ``np.savez``, matplotlib);
  :func:`atomic_write_bytes` / :func:`atomic_write_text` write in-memory data.
- :func:`first_line`: the first line of an exception, for one-line user errors.
- :class:`FeatureFile`: the features ``.npz`` written by ``unreid extract`` and
  read by ``unreid eval-features`` and ``unreid search``: its keys, dtypes,
  atomic save and a validating load.
- :func:`resolve_device`: ``auto | cpu | cuda | cuda:N`` -> a ``torch.device``.
- :func:`refuse_overlap`: an output may never be (or be inside) an input it is
  made from: ``unreid masks --out DATA`` would overwrite the dataset's images,
  ``export --out CKPT`` the checkpoint it reads.
- :func:`load_plain`: ``torch.load(weights_only=True)`` with one-line errors; a
  file that would need pickle (code) is refused in plain words.
"""

from __future__ import annotations

import os
import pickle
import re
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from unreid.errors import ConfigError, DataError, WeightsError

if TYPE_CHECKING:  # torch is imported where a device is resolved: the CLI starts faster
    import torch

__all__ = [
    "EXTRACT_FIX",
    "FeatureFile",
    "atomic_dir",
    "atomic_path",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "first_line",
    "load_plain",
    "refuse_overlap",
    "resolve_device",
]


# ---------------------------------------------------------------- atomic writes


@contextmanager
def atomic_path(path: str | Path, *, fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on a clean exit it replaces ``path``.

    The temporary file lives in ``path``'s folder (so ``os.replace`` is a rename
    on one file system) and keeps ``path``'s suffix (``np.savez`` appends
    ``.npz`` otherwise; PIL and matplotlib pick the format from it). When the
    body raises, the temporary file is removed and ``path`` is left as it was.
    ``fsync=True`` flushes the file to disk before the rename (a checkpoint must
    survive a power cut, not just a crash). The parent folder is created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A unique name, but not mkstemp's file: the writer creates it, so the result gets
    # the usual permissions (umask) instead of mkstemp's owner-only 0600.
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp{path.suffix}")
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: str | Path, writer: Callable[[Path], Any], *, fsync: bool = False) -> Path:
    """Call ``writer(tmp)`` on a temporary sibling of ``path``, then move it to ``path``.

    See :func:`atomic_path`; returns ``path``.
    """
    with atomic_path(path, fsync=fsync) as tmp:
        writer(tmp)
    return Path(path)


def atomic_write_bytes(path: str | Path, data: bytes, *, fsync: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``path``."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data), fsync=fsync)


def atomic_write_text(path: str | Path, text: str, *, fsync: bool = False) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns ``path``."""
    return atomic_write_bytes(path, text.encode("utf-8"), fsync=fsync)


@contextmanager
def atomic_dir(path: str | Path, *, replace: bool = True) -> Iterator[Path]:
    """Yield an empty temporary folder next to ``path``; on a clean exit it becomes ``path``.

    A missing ``path`` or an empty folder is replaced by one rename. An existing
    non-empty folder is moved aside and deleted when ``replace``; otherwise it is
    kept and the new folder discarded (several builders of the same content: the
    first to finish wins). When the body raises, the temporary folder is deleted.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        yield tmp
        try:
            os.replace(tmp, path)
        except OSError:
            if not path.is_dir():
                raise
            if replace:
                # Two renames: a folder cannot be replaced by one while it has content.
                old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
                os.replace(path, old / path.name)
                os.replace(tmp, path)
                shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already after a successful rename


# ---------------------------------------------------------------- errors


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first non-empty line of ``str(exc)`` (at most ``limit`` characters), else the
    exception's type name: the reason part of a one-line user error."""
    for line in str(exc).splitlines():
        if line.strip():
            return line.strip()[:limit]
    return type(exc).__name__


# ---------------------------------------------------------------- features file

EXTRACT_FIX = "write it with `unreid extract --checkpoint CKPT --data DIR --out FILE.npz`"

# Rows are checked for NaN / inf in blocks, so no (N, D) boolean temporary is made.
_FINITE_BLOCK = 4096


@dataclass(frozen=True)
class FeatureFile:
    """Features of a dataset's images, as stored in an ``.npz`` by ``unreid extract``.

    Attributes (N rows, D feature dimensions; all but ``feats`` may be absent):
        feats: (N, D) float features (float32, L2-normalised when extracted).
        pids: (N,) int64 person ids (-1 unknown/junk).
        camids: (N,) int64 camera ids (0-based).
        split: (N,) strings "train" / "query" / "gallery".
        paths: (N,) image paths as strings.
    """

    feats: np.ndarray
    pids: np.ndarray | None = None
    camids: np.ndarray | None = None
    split: np.ndarray | None = None
    paths: np.ndarray | None = None

    KEYS: ClassVar[tuple[str, ...]] = ("feats", "pids", "camids", "split", "paths")

    def __len__(self) -> int:
        return len(self.feats)

    def present(self) -> dict[str, np.ndarray]:
        """The arrays that are set, by key."""
        return {k: getattr(self, k) for k in self.KEYS if getattr(self, k) is not None}

    def rows(self, keep: np.ndarray) -> FeatureFile:
        """The rows where the (N,) boolean ``keep`` is true (absent arrays stay absent)."""
        return FeatureFile(**{k: v[keep] for k, v in self.present().items()})

    def save(self, path: str | Path) -> Path:
        """Validate, then write the present arrays to ``path`` (.npz, atomically)."""
        path = Path(path)
        self.validate(path)
        # Any: numpy's stubs read **kwargs as possibly holding allow_pickle (a bool)
        arrays: dict[str, Any] = self.present()
        return atomic_write(path, lambda tmp: np.savez(tmp, **arrays))

    def validate(self, path: str | Path, fix: str = EXTRACT_FIX) -> None:
        """Raise :class:`DataError` (one line naming ``path`` and ``fix``) unless feats is a
        finite numeric (N, D) array, pids/camids (N,) integers, split/paths (N,) strings."""
        feats = self.feats
        if feats.dtype.kind not in "fiu":
            raise DataError(f"{path}: feats must be numeric, got dtype {feats.dtype}; {fix}")
        if feats.ndim != 2:
            raise DataError(f"{path}: feats must be 2-D (N, D), got shape {feats.shape}; {fix}")
        n = len(feats)
        finite = feats.dtype.kind != "f" or all(
            np.isfinite(feats[s : s + _FINITE_BLOCK]).all() for s in range(0, n, _FINITE_BLOCK)
        )
        if not finite:
            raise DataError(
                f"{path}: feats contains NaN or inf values (the model or the file is "
                f"broken); {fix}"
            )
        kinds = {"pids": "iu", "camids": "iu", "split": "US", "paths": "US"}
        for k, allowed in kinds.items():
            v = getattr(self, k)
            if v is None:
                continue
            if v.shape != (n,):
                raise DataError(
                    f"{path}: {k} must have shape ({n},) like feats, got {v.shape}; {fix}"
                )
            if v.dtype.kind not in allowed:
                what = "integers" if allowed == "iu" else "strings"
                raise DataError(f"{path}: {k} must be {what}, got dtype {v.dtype}; {fix}")

    @classmethod
    def load(
        cls, path: str | Path, *, require: Sequence[str] = ("feats",), fix: str = EXTRACT_FIX
    ) -> FeatureFile:
        """Read and validate a features ``.npz`` (``allow_pickle=False``).

        ``require`` lists the keys the caller needs besides ``feats``; unknown keys
        in the file are ignored. Every problem is a one-line :class:`DataError`
        naming ``path`` and ``fix``.
        """
        path = Path(path)
        if not path.is_file():
            raise DataError(f"{path}: no such feature file; {fix}")
        need = ["feats", *(k for k in require if k != "feats")]
        try:
            with np.load(path, allow_pickle=False) as npz:
                missing = [k for k in need if k not in npz.files]
                if missing:
                    raise DataError(
                        f"{path}: missing key(s) {', '.join(missing)}; expected "
                        f"{', '.join(need)}; {fix}"
                    )
                data = {k: npz[k] for k in cls.KEYS if k in npz.files}
        except DataError:
            raise
        except Exception as exc:  # not a zip, a pickled object array, a truncated file
            raise DataError(
                f"{path}: not a readable .npz of plain arrays ({first_line(exc)}); {fix}"
            ) from None
        ff = cls(**data)
        ff.validate(path, fix)
        return ff


# ---------------------------------------------------------------- devices

_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


def resolve_device(
    spec: str | None, local_rank: int = 0, *, setting: str = "device"
) -> torch.device:
    """``auto | cpu | cuda | cuda:N`` (None means auto) -> a ``torch.device``.

    ``auto`` is CUDA when available, else CPU; ``cuda`` without an index is GPU
    ``local_rank`` (each DDP process its own). ``setting`` names the knob in the
    one-line :class:`ConfigError` for an unknown spec or CUDA asked but missing.
    """
    # torch (~2 s of CPU) is imported only where it is used: synth, check-data and cache
    # import this module and never need it
    import torch

    spec = "auto" if spec is None else str(spec)
    if not _DEVICE.fullmatch(spec):
        raise ConfigError(f"{setting}={spec!r} is unknown: use auto, cpu, cuda or cuda:N")
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError(f"{setting}={spec} but CUDA is not available: use {setting}=cpu")
    return torch.device(spec if ":" in spec else f"cuda:{int(local_rank)}")


# ---------------------------------------------------------------- outputs vs inputs


def refuse_overlap(out: str | Path, *inputs: str | Path, what: str, flag: str = "--out",
                   fix: str = "choose another") -> None:
    """Refuse an output path that is one of ``inputs`` or lies inside an input folder.

    Paths are compared resolved (``~``, ``..`` and symlinks followed), and an
    existing ``out`` that is a hard link to an input counts as that input.

    Args:
        out: the file or folder about to be written.
        inputs: files and folders the command reads.
        what: how the message names the inputs ("the data folder").
        flag: the option that set ``out`` (named in the message).
        fix: the end of the message's advice, after the flag.

    Raises:
        ConfigError: one line: ``--out OUT is (inside) WHAT INPUT: FIX --out``.
    """
    target = Path(out).expanduser().resolve()
    for given in inputs:
        source = Path(given).expanduser().resolve()
        same = target == source or (target.exists() and source.exists()
                                    and os.path.samefile(target, source))
        if same or (source.is_dir() and target.is_relative_to(source)):
            relation = "is" if same else "is inside"
            raise ConfigError(f"{flag} {out} {relation} {what} {given}: {fix} {flag}")


# ---------------------------------------------------------------- torch files


def _needs_code(exc: BaseException) -> bool:
    """The weights-only unpickler met a class or function (running it needs pickle)."""
    chain: BaseException | None = exc
    while chain is not None:
        if isinstance(chain, pickle.UnpicklingError) and "Unsupported global" in str(chain):
            return True
        chain = chain.__cause__ or chain.__context__
    return False


def load_plain(path: str | Path, *, name: str, plain: str,
               map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``: tensors, numbers, strings and containers
    only, so loading never runs code from the file.

    Args:
        name: what the file is, first in the message ("checkpoint").
        plain: what a loadable file is ("a plain unreid checkpoint").

    Raises:
        WeightsError: ``NAME PATH refused: not PLAIN (it would need pickle)`` for a
            file holding classes or functions; ``NAME PATH cannot be read (REASON)``
            for a damaged or foreign file.
    """
    import torch  # not at the top: see resolve_device

    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # pickle/zip errors of all kinds: one line for the user
        if _needs_code(exc):
            raise WeightsError(f"{name} {path} refused: not {plain} (it would need pickle)") \
                from None
        if isinstance(exc, pickle.UnpicklingError):
            reason = "not a PyTorch file, or damaged"
        else:
            reason = first_line(exc, 160)
        raise WeightsError(f"{name} {path} cannot be read ({reason})") from None
