"""Dataset layouts -> a plain table of samples ``(path, pid, camid)`` per split.

Readers for the layouts re-ID people actually have:

- ``market``: Market-1501, and the same layout for DukeMTMC-reID, CUHK03-NP
  and the synthetic world: ``bounding_box_train/``, ``query/``,
  ``bounding_box_test/`` with names ``PID_cCAM...`` (``0002_c1s1_000451_03.jpg``,
  ``0001_c2_f0046182.jpg``, ``0001_c1_1.png``). pid ``-1`` is junk and is left
  out of every split; pid ``0`` is a distractor, kept in the gallery.
- ``msmt17``: MSMT17 (``list_train.txt``, ``list_val.txt``, ``list_query.txt``,
  ``list_gallery.txt`` of ``relative/path label`` lines; images under
  ``train/`` and ``test/``, or ``mask_train_v2/`` and ``mask_test_v2/`` in V2).
  The camera is the third field of the name (``0000_000_01_0303morning...``:
  camera 01); val is merged into train, as everyone trains on train+val.
- ``folder``: your own footage, every image below the folder is training data.
  Camera and identity from a file-name regex with named groups
  ``(?P<camid>...)`` and optionally ``(?P<pid>...)``, or from a CSV with
  columns ``path,camid[,pid]``; without either, every image is camera 0 and
  the dataset says it has no cameras.

Camera values are mapped to 0-based ids: Market/MSMT numbers minus one; folder
values (which may be names such as ``north``) in sorted order, numerically
when they are all digits. Every problem with the input is a one-line
:class:`~unreid.errors.DataError` naming the file or folder and the fix.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from unreid.errors import DataError

__all__ = [
    "IMAGE_EXTENSIONS",
    "LAYOUTS",
    "MARKET_PATTERN",
    "Dataset",
    "Split",
    "detect_layout",
    "iter_paths",
    "list_images",
    "load_dataset",
    "merge_datasets",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
LAYOUTS = ("auto", "market", "msmt17", "folder")

# ``PID_cCAM`` then anything: Market-1501 (0002_c1s1_000451_03), DukeMTMC-reID
# (0001_c2_f0046182), CUHK03-NP (0001_c1_1). PID may be -1 (junk).
MARKET_PATTERN = re.compile(r"^(-?\d+)_c(\d+)")
MARKET_PATTERN_TEXT = "PID_cCAM..., e.g. 0002_c1s1_000451_03.jpg"
MARKET_SPLITS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}
MSMT_LISTS = {
    "train": ("list_train.txt", "list_val.txt"),
    "query": ("list_query.txt",),
    "gallery": ("list_gallery.txt",),
}
MSMT_DIRS = {"train": ("train", "mask_train_v2"), "query": ("test", "mask_test_v2"),
             "gallery": ("test", "mask_test_v2")}
_SHOW = 3  # file names shown in an error message


@dataclass(frozen=True)
class Split:
    """One split as three aligned columns.

    Attributes:
        name: ``train``, ``query`` or ``gallery``.
        paths: image paths (absolute strings).
        pids: (N,) int64 identity; -1 = unknown (unlabeled training data).
        camids: (N,) int64 0-based camera (0 when the layout has none).
    """

    name: str
    paths: tuple[str, ...]
    pids: np.ndarray
    camids: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, "paths", tuple(str(p) for p in self.paths))
        object.__setattr__(self, "pids", np.asarray(self.pids, dtype=np.int64).reshape(-1))
        object.__setattr__(self, "camids", np.asarray(self.camids, dtype=np.int64).reshape(-1))
        if not len(self.paths) == len(self.pids) == len(self.camids):
            raise ValueError("paths, pids and camids must have the same length")

    def __len__(self) -> int:
        return len(self.paths)

    def identities(self, distractor_pid: int | None = None) -> np.ndarray:
        """Sorted known identities (pid >= 0), without the distractor pid."""
        ids = np.unique(self.pids[self.pids >= 0])
        return ids if distractor_pid is None else ids[ids != distractor_pid]

    def images_per_camera(self) -> dict[int, int]:
        cams, counts = np.unique(self.camids, return_counts=True)
        return dict(zip(cams.tolist(), counts.tolist()))


@dataclass(frozen=True)
class Dataset:
    """A dataset: its root, layout and the three splits (query/gallery may be empty).

    Attributes:
        has_cameras: False when the layout gave no camera labels (all camid 0).
        distractor_pid: the gallery pid of distractors (0 in the Market layout), or None.
        warnings: facts worth telling the user that are not errors (e.g. query
            identities absent from the gallery).
    """

    root: Path
    layout: str
    train: Split
    query: Split
    gallery: Split
    has_cameras: bool = True
    distractor_pid: int | None = None
    warnings: tuple[str, ...] = field(default_factory=tuple)

    @property
    def splits(self) -> tuple[Split, Split, Split]:
        return (self.train, self.query, self.gallery)

    @property
    def num_cameras(self) -> int:
        cams = np.concatenate([s.camids for s in self.splits])
        return int(cams.max()) + 1 if cams.size else 0


def _empty(name: str) -> Split:
    return Split(name, (), np.zeros(0, np.int64), np.zeros(0, np.int64))


# ---------------------------------------------------------------- helpers


def list_images(folder: Path, *, recursive: bool = False) -> list[Path]:
    """Image files of ``folder`` (by extension, case-insensitive), sorted by path."""
    pattern = "**/*" if recursive else "*"
    return sorted(p for p in folder.glob(pattern)
                  if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def _require_dir(root: Path) -> Path:
    if not root.exists():
        raise DataError(f"dataset folder {root} does not exist: pass --data (data.root) "
                        "pointing to the folder that holds the images")
    if not root.is_dir():
        raise DataError(f"dataset path {root} is a file, not a folder: pass the dataset folder")
    return root.resolve()


def _examples(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_SHOW])
    return shown + (", ..." if len(names) > _SHOW else "")


def _dense_cameras(values: Sequence[str]) -> tuple[np.ndarray, int]:
    """Camera strings -> 0-based ids in sorted order (numeric when all digits)."""
    uniq = sorted(set(values), key=lambda v: (int(v), v) if v.isdigit() else (float("inf"), v))
    index = {v: i for i, v in enumerate(uniq)}
    return np.array([index[v] for v in values], dtype=np.int64), len(uniq)


def _query_warnings(query: Split, gallery: Split) -> tuple[str, ...]:
    if len(query) == 0:
        return ()
    missing = np.setdiff1d(query.identities(), gallery.identities())
    if missing.size == 0:
        return ()
    n = int(np.isin(query.pids, missing).sum())
    return (f"{missing.size} query identities ({n} images) have no image in the gallery: "
            "those queries have no match and are skipped by the evaluator",)


# ---------------------------------------------------------------- market


def _read_market_split(folder: Path, name: str) -> Split:
    files = list_images(folder)
    paths, pids, cams, bad = [], [], [], []
    for p in files:
        m = MARKET_PATTERN.match(p.name)
        if m is None:
            bad.append(p.name)
            continue
        pid, cam = int(m.group(1)), int(m.group(2))
        if pid == -1:  # junk: never trained on, never evaluated
            continue
        if pid < -1 or cam < 1:
            bad.append(p.name)
            continue
        paths.append(str(p))
        pids.append(pid)
        cams.append(cam - 1)
    if bad:
        raise DataError(
            f"{len(bad)} of {len(files)} file names in {folder} do not match the Market-1501 "
            f"pattern {MARKET_PATTERN_TEXT} (first: {_examples(bad)}): rename them, or read the "
            "folder with --layout folder --camera-regex"
        )
    return Split(name, tuple(paths), np.array(pids, np.int64), np.array(cams, np.int64))


def _load_market(root: Path) -> Dataset:
    train_dir = root / MARKET_SPLITS["train"]
    if not train_dir.is_dir():
        raise DataError(f"{root} has no {MARKET_SPLITS['train']}/ folder: it is not in the "
                        "Market-1501 layout (use --layout folder for a plain image folder)")
    splits = {}
    for name, sub in MARKET_SPLITS.items():
        folder = root / sub
        splits[name] = _read_market_split(folder, name) if folder.is_dir() else _empty(name)
    if len(splits["train"]) + len(splits["query"]) + len(splits["gallery"]) == 0:
        raise DataError(f"no images ({'/'.join(IMAGE_EXTENSIONS)}) found under {root}: "
                        "check the path and the file extensions")
    if bool(len(splits["query"])) != bool(len(splits["gallery"])):
        empty = "query" if not len(splits["query"]) else MARKET_SPLITS["gallery"]
        raise DataError(f"{root}/{empty}/ is missing or empty while the other test split is "
                        "not: evaluation needs both query/ and bounding_box_test/")
    return Dataset(
        root=root, layout="market", **splits, has_cameras=True, distractor_pid=0,
        warnings=_query_warnings(splits["query"], splits["gallery"]),
    )


# ---------------------------------------------------------------- msmt17


def _msmt_image_dir(root: Path, split: str) -> Path:
    for sub in MSMT_DIRS[split]:
        if (root / sub).is_dir():
            return root / sub
    return root / MSMT_DIRS[split][0]


def _read_msmt_split(root: Path, name: str) -> Split:
    base = _msmt_image_dir(root, name)
    paths, pids, cams = [], [], []
    for list_name in MSMT_LISTS[name]:
        list_file = root / list_name
        if not list_file.is_file():
            if list_name == "list_val.txt":
                continue  # optional: some copies ship train only
            raise DataError(f"{list_file} is missing: the MSMT17 layout needs "
                            f"{', '.join(sum(MSMT_LISTS.values(), ()))}")
        for lineno, line in enumerate(_read_text(list_file).splitlines(), start=1):
            if not line.strip():
                continue
            parts = line.split()
            fields = Path(parts[0]).name.split("_") if parts else []
            if len(parts) != 2 or not parts[1].lstrip("-").isdigit() or len(fields) < 3 \
                    or not fields[2].isdigit():
                raise DataError(
                    f"{list_file}:{lineno}: expected 'PID/PID_IDX_CAM_....jpg LABEL', got "
                    f"{line.strip()[:80]!r}: fix or remove the line"
                )
            paths.append(str(base / parts[0]))
            pids.append(int(parts[1]))
            cams.append(int(fields[2]) - 1)
    return Split(name, tuple(paths), np.array(pids, np.int64), np.array(cams, np.int64))


def _load_msmt(root: Path) -> Dataset:
    splits = {name: _read_msmt_split(root, name) for name in MSMT_LISTS}
    # Spot-check that the lists point at real files: a wrong root is the common mistake.
    for split in splits.values():
        missing = [p for p in split.paths[:50] if not Path(p).is_file()]
        if missing:
            raise DataError(
                f"{len(missing)} of the first {min(50, len(split))} {split.name} images listed "
                f"in {root} do not exist (e.g. {missing[0]}): the image folders "
                f"({', '.join(MSMT_DIRS[split.name])}/) must sit beside the list files"
            )
    return Dataset(root=root, layout="msmt17", train=splits["train"], query=splits["query"],
                   gallery=splits["gallery"], has_cameras=True,
                   warnings=_query_warnings(splits["query"], splits["gallery"]))


# ---------------------------------------------------------------- folder


def _compile_regex(camera_regex: str) -> re.Pattern[str]:
    try:
        regex = re.compile(camera_regex)
    except re.error as exc:
        raise DataError(f"--camera-regex {camera_regex!r} is not a valid regex ({exc})") from None
    if "camid" not in regex.groupindex and "pid" not in regex.groupindex:
        raise DataError(f"--camera-regex {camera_regex!r} needs a named group (?P<camid>...) "
                        "and/or (?P<pid>...)")
    return regex


def _from_regex(files: Sequence[Path], root: Path, regex: re.Pattern[str]):
    cams, pids, bad = [], [], []
    for p in files:
        m = regex.search(p.name)
        if m is None:
            bad.append(p.name)
            continue
        groups = m.groupdict()
        cams.append(groups.get("camid") or "0")
        pid = groups.get("pid")
        if pid is not None and not pid.lstrip("-").isdigit():
            raise DataError(f"{p}: the pid group matched {pid!r}, not a number: make (?P<pid>...)"
                            " match digits only")
        pids.append(int(pid) if pid is not None else -1)
    if bad:
        raise DataError(
            f"{len(bad)} of {len(files)} file names under {root} do not match --camera-regex "
            f"{regex.pattern!r} (first: {_examples(bad)}): fix the regex or rename the files"
        )
    return [str(p) for p in files], pids, cams


def _read_text(path: Path) -> str:
    """A list file's text: UTF-8 (a spreadsheet's byte-order mark allowed), else one line
    naming the line that is not."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(
            f"{path} line {line} is not UTF-8 text (byte 0x{raw[exc.start]:02x}): save the "
            "file as UTF-8 (in a spreadsheet: CSV UTF-8)"
        ) from None


def _from_csv(csv_path: Path, root: Path):
    if not csv_path.is_file():
        raise DataError(f"CSV file {csv_path} does not exist: pass --csv with path,camid[,pid]")
    paths, pids, cams = [], [], []
    rows = list(csv.reader(io.StringIO(_read_text(csv_path), newline="")))
    if rows and rows[0] and rows[0][0].strip().lower() == "path":
        rows = rows[1:]  # header
    for lineno, row in enumerate(rows, start=1):
        row = [c.strip() for c in row]
        if not row or not any(row):
            continue
        if len(row) not in (2, 3) or (len(row) == 3 and not row[2].lstrip("-").isdigit()):
            raise DataError(f"{csv_path} row {lineno}: expected path,camid[,pid] with a numeric "
                            f"pid, got {','.join(row)[:80]!r}")
        path = Path(row[0]) if Path(row[0]).is_absolute() else root / row[0]
        if not path.is_file():
            raise DataError(f"{csv_path} row {lineno}: image {path} does not exist: fix the "
                            "path (relative paths are relative to --data)")
        paths.append(str(path))
        cams.append(row[1])
        pids.append(int(row[2]) if len(row) == 3 else -1)
    if not paths:
        raise DataError(f"{csv_path} lists no images: add rows path,camid[,pid]")
    return paths, pids, cams


def _load_folder(root: Path, camera_regex: str | None, csv_file: str | None) -> Dataset:
    if camera_regex and csv_file:
        raise DataError("pass either --camera-regex or --csv, not both")
    if csv_file:
        paths, pids, cams = _from_csv(Path(csv_file), root)
    else:
        files = list_images(root, recursive=True)
        if not files:
            raise DataError(f"no images ({'/'.join(IMAGE_EXTENSIONS)}) found under {root}: "
                            "check the path and the file extensions")
        if camera_regex:
            paths, pids, cams = _from_regex(files, root, _compile_regex(camera_regex))
        else:
            paths, pids, cams = [str(p) for p in files], [-1] * len(files), ["0"] * len(files)
    camids, _ = _dense_cameras(cams)
    has_cameras = bool(csv_file) or bool(
        camera_regex and "camid" in _compile_regex(camera_regex).groupindex)
    train = Split("train", tuple(paths), np.array(pids, np.int64), camids)
    return Dataset(root=root, layout="folder", train=train, query=_empty("query"),
                   gallery=_empty("gallery"), has_cameras=has_cameras)


# ---------------------------------------------------------------- entry point


def detect_layout(root: str | Path) -> str:
    """``market`` when ``bounding_box_train/`` exists, ``msmt17`` when ``list_train.txt``
    does, else ``folder``."""
    root = Path(root)
    if (root / MARKET_SPLITS["train"]).is_dir():
        return "market"
    if (root / MSMT_LISTS["train"][0]).is_file():
        return "msmt17"
    return "folder"


def load_dataset(
    root: str | Path,
    *,
    layout: str = "auto",
    camera_regex: str | None = None,
    csv: str | None = None,
) -> Dataset:
    """Read a dataset folder into a :class:`Dataset`.

    Args:
        root: the dataset folder.
        layout: ``auto`` (detected, see :func:`detect_layout`), ``market``,
            ``msmt17`` or ``folder``.
        camera_regex, csv: folder layout only (see the module docstring); passing
            either implies ``folder`` under ``auto``.

    Raises:
        DataError: missing folder, no images, names that do not fit the layout.
    """
    if layout not in LAYOUTS:
        raise DataError(f"layout {layout!r} is unknown: use one of {', '.join(LAYOUTS)}")
    root = _require_dir(Path(root))
    if layout == "auto":
        layout = "folder" if (camera_regex or csv) else detect_layout(root)
    if layout != "folder" and (camera_regex or csv):
        raise DataError(f"--camera-regex and --csv apply to --layout folder, not {layout}")
    if layout == "market":
        return _load_market(root)
    if layout == "msmt17":
        return _load_msmt(root)
    return _load_folder(root, camera_regex, csv)


def merge_datasets(datasets: Sequence[Dataset]) -> Dataset:
    """Several labelled datasets as one training table, identities and cameras kept apart.

    Root ``i``'s identities are shifted by the identities of the roots before it
    (the largest pid of each earlier root, over all its splits, plus one) and its
    cameras by their camera counts, so no two roots share a pid or a camid; unknown
    pids (-1) stay -1. The query and gallery are the first root's, unchanged (its
    offsets are 0): a merged dataset is evaluated on its first root. Training on
    several labelled sets at once is the multi-source ("JSTL") setting.

    Args:
        datasets: one or more datasets (see :func:`load_dataset`), first = evaluated.

    Returns:
        A :class:`Dataset` whose ``root`` is the first root; ``has_cameras`` is True when
        any root has cameras or there are several roots (each root's images are then
        cameras of their own).
    """
    if not datasets:
        raise DataError("no dataset to merge: data.root lists no folder")
    if len(datasets) == 1:
        return datasets[0]
    paths: list[str] = []
    pids, cams, warnings = [], [], []
    pid_offset = cam_offset = 0
    for ds in datasets:
        train = ds.train
        paths += train.paths
        pids.append(np.where(train.pids >= 0, train.pids + pid_offset, -1))
        cams.append(train.camids + cam_offset)
        warnings += [f"{ds.root}: {w}" for w in ds.warnings]
        every_pid = np.concatenate([s.pids for s in ds.splits])
        pid_offset += int(every_pid.max(initial=-1)) + 1
        cam_offset += max(ds.num_cameras, 1)
    first = datasets[0]
    train = Split("train", tuple(paths), np.concatenate(pids), np.concatenate(cams))
    layouts = sorted({ds.layout for ds in datasets})
    return Dataset(
        root=first.root, layout="+".join(layouts), train=train, query=first.query,
        gallery=first.gallery, has_cameras=True, distractor_pid=first.distractor_pid,
        warnings=tuple(warnings),
    )


def iter_paths(dataset: Dataset) -> Iterable[str]:
    """Every image path of the dataset once (train, query, gallery order)."""
    seen: set[str] = set()
    for split in dataset.splits:
        for p in split.paths:
            if p not in seen:
                seen.add(p)
                yield p
