"""Rank a gallery for query images with a trained checkpoint (``unreid search``).

The gallery is either an ``.npz`` written by ``unreid extract`` (its gallery
split, or every row when it has no ``split`` key) or a folder of images (any
layout, searched recursively). Queries and a folder gallery are decoded as for
training (:func:`unreid.data.load_images`, at the run's ``data.height`` x
``data.width``) and embedded with the checkpoint's model; the ranking is by
cosine distance, or by k-reciprocal re-ranking.

Identities are only used to colour the ranked-list picture: a query's pid is
read from a Market-1501 style file name (``0001_c1s1_000151_00.jpg``), the
gallery's from the ``.npz`` (``pids``) or from the same kind of file names.
Where either is unknown the frames stay grey.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from unreid.apps.inference import embed_images, load_model_from_checkpoint
from unreid.data import IMAGE_EXTENSIONS, decode_image, list_images, load_images
from unreid.data.dataset import MARKET_PATTERN
from unreid.engine.checkpoint import resolve_checkpoint
from unreid.errors import ConfigError, DataError
from unreid.eval import cosine_distance
from unreid.io import FeatureFile, atomic_write, refuse_overlap, resolve_device

__all__ = [
    "Match",
    "QueryResult",
    "SearchResult",
    "load_gallery_npz",
    "parse_market_name",
    "ranked_lists_image",
    "search",
]

# Test-time re-ranking parameters of Zhong et al. (as unreid eval --rerank).
_K1, _K2, _LAMBDA = 20, 6, 0.3


@dataclass(frozen=True)
class Match:
    """One ranked gallery image: its path, distance (smaller = more similar), its pid
    when known (else None) and whether it is the query's identity (None: unknown)."""

    path: str
    distance: float
    pid: int | None = None
    same_id: bool | None = None


@dataclass(frozen=True)
class QueryResult:
    """A query image, its pid when its file name tells it, and its top-k matches."""

    query: str
    pid: int | None
    matches: list[Match]


@dataclass
class SearchResult:
    """Per query, the top-k gallery images by ``metric`` ("cosine" or "rerank")."""

    queries: list[QueryResult]
    metric: str
    gallery: str
    gallery_size: int
    image: Path | None = None  # the ranked-list PNG, when one was written

    def format_table(self) -> str:
        """A plain-text table: query, rank, distance, [same id,] gallery path."""
        known = any(m.same_id is not None for q in self.queries for m in q.matches)
        head = ["query", "rank", "distance"] + (["same id"] if known else []) + ["gallery"]
        rows = []
        for q in self.queries:
            for rank, m in enumerate(q.matches, 1):
                row = [q.query if rank == 1 else "", str(rank), f"{m.distance:.4f}"]
                if known:
                    row.append("-" if m.same_id is None else ("yes" if m.same_id else "no"))
                rows.append(row + [m.path])
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head) - 1)]
        lines = [
            f"{len(self.queries)} queries vs {self.gallery_size} gallery images of "
            f"{self.gallery} ({self.metric} distance)"
        ]
        for r in [head, *rows]:
            lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1])
        return "\n".join(line.rstrip() for line in lines)


# ---------------------------------------------------------------- images and files


def parse_market_name(path: str | Path) -> tuple[int, int] | None:
    """(pid, camid) from a Market-1501 style file name, None when it is not one.

    camid is 0-based (``c1`` -> 0); pid -1 marks junk images, 0 distractors.
    """
    m = MARKET_PATTERN.match(Path(path).name)
    return (int(m.group(1)), int(m.group(2)) - 1) if m else None


def load_gallery_npz(path: str | Path) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """Gallery rows of an ``unreid extract`` file: (G, D) float32 features, (G,) pids
    (None without a ``pids`` key) and the G image paths.

    Rows whose ``split`` is "gallery" when the file has a ``split`` key, else all rows.
    """
    ff = FeatureFile.load(path, require=("paths",))
    if ff.split is not None:
        keep = ff.split.astype(str) == "gallery"
        if not keep.any():
            raise DataError(
                f"gallery {path} has a split key but no 'gallery' rows: extract a dataset "
                "with a gallery split, or pass an image folder as --gallery"
            )
        ff = ff.rows(keep)
    assert ff.paths is not None  # required above
    return (
        np.asarray(ff.feats, dtype=np.float32),
        None if ff.pids is None else np.asarray(ff.pids, dtype=np.int64),
        [str(p) for p in ff.paths],
    )


def _expand_queries(queries: Sequence[str | Path]) -> list[str]:
    out: list[str] = []
    for q in queries:
        p = Path(q)
        if p.is_dir():
            found = list_images(p, recursive=True)
            if not found:
                raise DataError(f"query folder {p} holds no images ({'/'.join(IMAGE_EXTENSIONS)})")
            out += [str(f) for f in found]
        elif not p.is_file():
            raise DataError(f"query image {p} not found: pass existing image files to --query")
        else:
            out.append(str(q))
    if not out:
        raise DataError("no query images: pass one or more image files to --query")
    return out


# ---------------------------------------------------------------- search


def search(
    checkpoint: str | Path,
    gallery: str | Path,
    queries: Sequence[str | Path],
    *,
    topk: int = 10,
    rerank: bool = False,
    out: str | Path | None = None,
    batch_size: int = 128,
    device: str | None = None,
) -> SearchResult:
    """Rank ``gallery`` for each query image with the model of ``checkpoint``.

    Args:
        checkpoint: a checkpoint.pt or a RUN_DIR.
        gallery: an ``.npz`` from ``unreid extract`` (features of the same
            checkpoint) or a folder of images (searched recursively).
        queries: image files (a folder stands for its images).
        topk: gallery images kept per query (at most the gallery size).
        rerank: k-reciprocal re-ranking (k1=20, k2=6, lambda=0.3, lowered for tiny
            sets) instead of the cosine distance ``1 - q.g``.
        out: optional PNG: one row per query, the query then its top-k
            (green/red frames where identities are known, grey otherwise).
        batch_size, device: feature extraction (device default: CUDA when available).

    Returns:
        :class:`SearchResult`; distances are cosine distances in [0, 2] or re-ranked
        distances (smaller = more similar).

    Raises:
        DataError: missing/unreadable gallery or query image, a gallery ``.npz``
            whose feature dimension differs from the checkpoint's.
        ConfigError: ``topk`` < 1. WeightsError: bad checkpoint.
    """
    if int(topk) < 1:
        raise ConfigError(f"--topk {topk}: use a positive number of gallery images")
    resolve_checkpoint(checkpoint)
    query_paths = _expand_queries(queries)
    gallery = Path(gallery)
    if out is not None:  # the picture never replaces an input
        refuse_overlap(out, *query_paths, what="a query image")
        refuse_overlap(out, gallery, what="the gallery")
    if not gallery.exists():
        raise DataError(
            f"gallery {gallery} not found: pass an .npz from unreid extract or an image folder"
        )
    if gallery.is_file() and gallery.suffix.lower() != ".npz":
        raise DataError(
            f"gallery {gallery} is neither an .npz (from unreid extract) nor an image folder"
        )

    dev = resolve_device(device, setting="--device")
    model, cfg = load_model_from_checkpoint(checkpoint, dev)
    h, w = int(cfg.data.height), int(cfg.data.width)
    dim = int(getattr(model, "feature_dim", 0))

    def embed(images: np.ndarray) -> torch.Tensor:
        return embed_images(model, images, cfg, batch_size, dev)

    g_images: np.ndarray | None = None
    if gallery.is_dir():
        g_paths = [str(p) for p in list_images(gallery, recursive=True)]
        if not g_paths:
            raise DataError(
                f"gallery folder {gallery} holds no images ({'/'.join(IMAGE_EXTENSIONS)}): "
                "pass the folder of the gallery images or an .npz from unreid extract"
            )
        g_images = load_images(g_paths, h, w, cache_dir=cfg.data.cache_dir or None)
        g_feats = embed(g_images)
        parsed = [parse_market_name(p) for p in g_paths]
        g_pids = [None if x is None or x[0] < 0 else x[0] for x in parsed]
    else:
        feats, pids, g_paths = load_gallery_npz(gallery)
        if out is not None:
            refuse_overlap(out, *sorted({str(Path(p).parent) for p in g_paths}),
                           what="the folder of gallery images")
        if feats.shape[1] != dim:
            raise DataError(
                f"gallery {gallery} holds {feats.shape[1]}-dim features but checkpoint "
                f"{checkpoint} gives {dim}-dim ones: extract the gallery with this checkpoint "
                f"(unreid extract --checkpoint {checkpoint} ...) or pass the image folder"
            )
        g_feats = torch.from_numpy(feats)
        g_pids = [None] * len(g_paths) if pids is None else [
            None if p < 0 else int(p) for p in pids.tolist()
        ]
    q_images = load_images(query_paths, h, w, progress=False)
    q_feats = embed(q_images)

    dist = _distances(q_feats, g_feats, rerank=rerank)
    k = min(int(topk), dist.shape[1])
    order = np.argsort(dist, axis=1, kind="stable")[:, :k]

    results = []
    for qi, qpath in enumerate(query_paths):
        q_parsed = parse_market_name(qpath)
        qpid = q_parsed[0] if q_parsed is not None and q_parsed[0] >= 0 else None
        matches = []
        for gi in order[qi].tolist():
            gpid = g_pids[gi]
            same = None if qpid is None or gpid is None else gpid == qpid
            matches.append(Match(g_paths[gi], float(dist[qi, gi]), gpid, same))
        results.append(QueryResult(qpath, qpid, matches))
    result = SearchResult(results, "rerank" if rerank else "cosine", str(gallery), len(g_paths))
    if out is not None:
        if g_images is not None:
            tiles = [[g_images[gi] for gi in row] for row in order.tolist()]
        else:  # an .npz gallery: decode the shown images from their paths
            tiles = [
                [decode_image(_locate(g_paths[gi], gallery.parent), h, w) for gi in row]
                for row in order.tolist()
            ]
        result.image = _save_png(ranked_lists_image(result, q_images, tiles), Path(out))
    return result


def _distances(q: torch.Tensor, g: torch.Tensor, *, rerank: bool) -> np.ndarray:
    """(Q, G) float distances: cosine, or k-reciprocal re-ranked."""
    if rerank:
        # unreid.cluster brings scikit-learn (~1 s): only --rerank pays for it
        from unreid.cluster import rerank as k_reciprocal_rerank

        n = len(q) + len(g)
        k1 = min(_K1, n - 1)
        return k_reciprocal_rerank(q, g, k1=k1, k2=min(_K2, n), lambda_=_LAMBDA)
    return cosine_distance(q, g).numpy()


def ranked_lists_image(
    result: SearchResult, query_images: np.ndarray, gallery_images: Sequence[Sequence[np.ndarray]]
):
    """The ranked-list picture (a PIL image): one row per query, stacked top to bottom.

    Row i shows ``query_images[i]`` ((3, H, W) uint8, blue frame), then
    ``gallery_images[i]`` (its top-k, decoded like the query) framed green /
    red when the identities are known (``Match.same_id``), grey otherwise, with
    rank and distance under each tile.
    """
    # unreid.viz brings matplotlib (~0.5 s): only a search with --out pays for it
    from unreid.viz.montage import ranked_list_image

    rows = [
        ranked_list_image(
            query_images[i], list(tiles), [m.same_id for m in q.matches],
            [m.distance for m in q.matches],
        )
        for i, (q, tiles) in enumerate(zip(result.queries, gallery_images, strict=True))
    ]
    gap = 4
    canvas = Image.new(
        "RGB",
        (max(r.width for r in rows), sum(r.height for r in rows) + gap * (len(rows) - 1)),
        (255, 255, 255),
    )
    y = 0
    for r in rows:
        canvas.paste(r, (0, y))
        y += r.height + gap
    return canvas


def _locate(path: str, npz_folder: Path) -> Path:
    """A gallery path stored in an .npz: as written, else relative to the .npz's folder."""
    p = Path(path)
    if p.is_file():
        return p
    if not p.is_absolute() and (npz_folder / p).is_file():
        return npz_folder / p
    raise DataError(
        f"gallery image {p} (listed in the .npz) not found: run search from the folder "
        "unreid extract ran in, or pass the image folder as --gallery"
    )


def _save_png(image, out: Path) -> Path:
    return atomic_write(out, lambda tmp: image.save(tmp, format="PNG"))
