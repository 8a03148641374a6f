"""Where unreid keeps what it can rebuild: decoded images, masks, synthetic worlds.

By default that is one private folder per user, never the working folder (which
may be read-only, or a dataset, or a source checkout):

- ``$UNREID_CACHE`` when set;
- else ``$XDG_CACHE_HOME/unreid`` (an absolute ``XDG_CACHE_HOME`` only, as the
  XDG spec says);
- else ``~/.cache/unreid``.

Inside it, ``decoded/`` holds the memory-mapped image and mask arrays
(``data.cache_dir: auto``) and ``synth/`` the generated default worlds. Folders
are created mode 0700: the cache shows what the user's images look like.

:func:`cache_usage` is the size report behind ``unreid cache info`` and
:func:`clear_cache` behind ``unreid cache clear``; both touch only the files
unreid writes (by name), so pointing them at the wrong folder deletes nothing else.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from unreid.errors import DataError

__all__ = [
    "AUTO",
    "CacheUsage",
    "cache_usage",
    "clear_cache",
    "ensure_private_dir",
    "files_text",
    "resolve_cache_dir",
    "user_cache_root",
]

AUTO = "auto"  # the data.cache_dir value meaning "the per-user cache"
DECODED = "decoded"
SYNTH = "synth"
# A synthetic world's description, written into it last: a world holding it is finished.
WORLD_JSON = "world.json"

# The files unreid writes into a decoded-array folder (kind = the first group; else "tmp":
# a build that was interrupted before it was moved into place).
_DECODED_NAME = re.compile(r"^(images|masks)-[0-9a-f]{20}\.(npy|json)$|^\.tmp-.*\.npy$")
_KIND_LABEL = {"images": "decoded images", "masks": "masks", "synth": "synthetic worlds",
               "tmp": "unfinished writes"}


def user_cache_root() -> Path:
    """The per-user cache folder (see the module docstring); not created here."""
    own = os.environ.get("UNREID_CACHE")
    if own:
        return Path(own).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "unreid"


def resolve_cache_dir(setting: str | Path | None) -> Path | None:
    """The folder a ``data.cache_dir`` value means: None or "" -> None (keep arrays in
    memory), ``auto`` -> ``<user cache>/decoded``, anything else -> that path (``~``
    expanded)."""
    if setting is None or str(setting) == "":
        return None
    if str(setting) == AUTO:
        return user_cache_root() / DECODED
    return Path(setting).expanduser()


_CACHE_FIX = ("set data.cache_dir to a writable folder (or data.cache_dir='' to keep the "
              "images in memory)")


def ensure_private_dir(folder: Path, *, fix: str = _CACHE_FIX) -> Path:
    """Create ``folder`` (mode 0700; the per-user root too) and check it is writable.

    Raises:
        DataError: it cannot be created or written (one line ending with ``fix``).
    """
    root = user_cache_root()
    try:
        for path in ((root, folder) if folder.is_relative_to(root) else (folder,)):
            if not path.is_dir():
                path.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not os.access(folder, os.W_OK | os.X_OK):
            raise PermissionError(13, "permission denied")
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise DataError(f"cannot write the cache folder {folder} ({reason}): {fix}") from None
    return folder


@dataclass(frozen=True)
class CacheUsage:
    """Files unreid wrote under ``root``: count and bytes per kind (images, masks,
    synth, tmp) and the paths (files, or world folders for synth)."""

    root: Path
    files: dict[str, int] = field(default_factory=dict)
    bytes: dict[str, int] = field(default_factory=dict)
    paths: tuple[Path, ...] = ()

    @property
    def total_files(self) -> int:
        return sum(self.files.values())

    @property
    def total_bytes(self) -> int:
        return sum(self.bytes.values())

    def format(self) -> str:
        """``cache ROOT: N files, X MB`` then one line per kind."""
        if not self.total_files:
            return f"cache {self.root}: empty"
        lines = [f"cache {self.root}: {files_text(self.total_files)}, "
                 f"{self.total_bytes / 1e6:.1f} MB"]
        for kind, label in _KIND_LABEL.items():
            if self.files.get(kind):
                lines.append(f"  {label}: {files_text(self.files[kind])}, "
                             f"{self.bytes[kind] / 1e6:.1f} MB")
        lines.append("empty it with: unreid cache clear")
        return "\n".join(lines)


def files_text(count: int) -> str:
    """``1 file`` / ``N files``."""
    return f"{count} file{'' if count == 1 else 's'}"


def _tree_size(folder: Path) -> tuple[int, int]:
    files = [p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()]
    return len(files), sum(p.stat().st_size for p in files)


def cache_usage(folder: str | Path | None = None) -> CacheUsage:
    """What unreid wrote in ``folder`` (default: the per-user root): decoded image and
    mask arrays in it or in its ``decoded/``, and the worlds in its ``synth/``."""
    root = Path(folder).expanduser() if folder is not None else user_cache_root()
    files: dict[str, int] = {}
    sizes: dict[str, int] = {}
    paths: list[Path] = []

    def add(kind: str, path: Path, count: int, size: int) -> None:
        files[kind] = files.get(kind, 0) + count
        sizes[kind] = sizes.get(kind, 0) + size
        paths.append(path)

    for decoded in (root, root / DECODED):
        if not decoded.is_dir():
            continue
        for path in sorted(decoded.iterdir()):
            match = _DECODED_NAME.match(path.name)
            if match and path.is_file() and not path.is_symlink():
                add(match.group(1) or "tmp", path, 1, path.stat().st_size)
    synth = root / SYNTH
    if synth.is_dir():
        for world in sorted(synth.iterdir()):
            # a finished world (world.json) or a build a killed run left behind
            if world.is_dir() and not world.is_symlink() and (
                    (world / WORLD_JSON).is_file() or world.name.startswith(".")):
                add("synth", world, *_tree_size(world))
    return CacheUsage(root, files, sizes, tuple(paths))


def clear_cache(folder: str | Path | None = None) -> CacheUsage:
    """Delete what :func:`cache_usage` lists (nothing else); return what was removed."""
    usage = cache_usage(folder)
    for path in usage.paths:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return usage
