"""The run report: a self-contained folder (HTML + PNG, relative links).

It opens from disk with no server and no JavaScript. Inputs are files the
engine leaves in the run folder:

- ``metrics.jsonl``  one JSON line per epoch (curves, summary table, timings);
- ``config.yaml``    the resolved config;
- ``report_data.npz`` arrays saved at the end of training by
  :func:`save_report_data` (ranked lists, final pseudo-labels, features of a
  sample before and after training for the embedding plot).

Sections whose inputs are missing are replaced by a one-line note, so the
report can be written for any run at any time (``unreid report RUN_DIR``).
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from unreid.io import atomic_write
from unreid.viz.montage import cluster_montage, overlay_mask, ranked_list_image
from unreid.viz.plots import plot_embedding, plot_training_curves, tsne_2d

__all__ = ["load_records", "save_report_data", "select_report_samples", "write_report"]

REPORT_DATA = "report_data.npz"
_THUMB = (128, 64)  # (H, W) of the thumbnails in the pictures


def load_records(run_dir: str | Path) -> list[dict[str, Any]]:
    """Parse ``metrics.jsonl``; a torn last line (run killed mid-write) is ignored."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def select_report_samples(
    num_query: int, num_embed_pool: int, *, num_ranked: int = 6, num_embed: int = 600, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the queries to show as ranked lists (evenly spaced) and of
    the samples (from a pool such as query+gallery) to embed with t-SNE."""
    ranked = np.unique(np.linspace(0, max(num_query - 1, 0), num=min(num_ranked, num_query)))
    rng = np.random.default_rng(seed)
    embed = np.sort(rng.permutation(num_embed_pool)[: min(num_embed, num_embed_pool)])
    return ranked.astype(np.int64), embed.astype(np.int64)


def save_report_data(run_dir: str | Path, **arrays: Any) -> Path:
    """Save the arrays the report needs (atomically) as ``RUN_DIR/report_data.npz``.

    Expected keys (all optional): ``train_paths, train_labels, train_pids,
    train_camids`` (final pseudo-labels of the training set, true pids or -1);
    ``query_paths, gallery_paths, q_pids, g_pids`` and ``ranked_query (R,)``,
    ``ranked_gallery (R, k)``, ``ranked_dist (R, k)``; ``embed_before (n, D)``,
    ``embed_after (n, D)``, ``embed_pids, embed_camids``; ``mask_paths`` (the
    masks of the query and gallery images, for overlays).
    """
    clean: dict[str, Any] = {k: np.asarray(v) for k, v in arrays.items() if v is not None}
    return atomic_write(Path(run_dir) / REPORT_DATA, lambda tmp: np.savez_compressed(tmp, **clean))


def _load_thumb(path: str) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        rgb = im.convert("RGB").resize((_THUMB[1], _THUMB[0]), Image.Resampling.BILINEAR)
        return np.asarray(rgb).transpose(2, 0, 1)


def _load_mask_thumb(path: str) -> np.ndarray | None:
    from PIL import Image

    if not Path(path).is_file():
        return None
    with Image.open(path) as im:
        return np.asarray(im.convert("L").resize((_THUMB[1], _THUMB[0]), Image.Resampling.NEAREST))


def _ranked_png(data: dict[str, np.ndarray], out: Path, with_masks: bool) -> Path | None:
    needed = ("ranked_query", "ranked_gallery", "query_paths", "gallery_paths")
    if not all(k in data for k in needed):
        return None
    q_pids = data.get("q_pids")
    g_pids = data.get("g_pids")
    rows = []

    def thumb(path: str, mask_path: str | None) -> np.ndarray:
        img = _load_thumb(path)
        if with_masks and mask_path:
            mask = _load_mask_thumb(mask_path)
            if mask is not None:
                img = overlay_mask(img, mask)
        return img

    q_masks = data.get("query_mask_paths")
    g_masks = data.get("gallery_mask_paths")
    def mask_of(masks: np.ndarray | None, i: int) -> str | None:
        return str(masks[i]) if masks is not None else None

    for r, qi in enumerate(data["ranked_query"]):
        gis = data["ranked_gallery"][r]
        matches = None
        if q_pids is not None and g_pids is not None and q_pids[qi] >= 0:
            matches = [bool(g_pids[g] == q_pids[qi]) for g in gis]
        dists = data["ranked_dist"][r] if "ranked_dist" in data else None
        rows.append(
            ranked_list_image(
                thumb(str(data["query_paths"][qi]), mask_of(q_masks, qi)),
                [thumb(str(data["gallery_paths"][g]), mask_of(g_masks, g)) for g in gis],
                matches,
                dists,
            )
        )
    _stack(rows).save(out)
    return out


def _stack(images: list) -> Any:
    from PIL import Image

    width = max(im.width for im in images)
    height = sum(im.height for im in images) + 6 * (len(images) - 1)
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    y = 0
    for im in images:
        canvas.paste(im, (0, y))
        y += im.height + 6
    return canvas


def _clusters_png(
    data: dict[str, np.ndarray], out: Path, num_clusters: int = 8, per_cluster: int = 10
) -> Path | None:
    if "train_labels" not in data or "train_paths" not in data:
        return None
    labels = data["train_labels"]
    pids = data.get("train_pids")
    ids, counts = np.unique(labels[labels >= 0], return_counts=True)
    if len(ids) == 0:
        return None
    # The largest clusters first: where impurity hurts training most.
    chosen = ids[np.argsort(-counts, kind="stable")][:num_clusters]
    images, titles, impure = [], [], []
    for c in chosen:
        members = np.flatnonzero(labels == c)[:per_cluster]
        images.append([_load_thumb(str(data["train_paths"][i])) for i in members])
        size = int((labels == c).sum())
        if pids is not None and (pids[members] >= 0).all():
            true = pids[labels == c]
            majority = np.bincount(true - true.min()).argmax() + true.min()
            purity = float((true == majority).mean())
            impure.append([bool(pids[i] != majority) for i in members])
            titles.append(f"#{c} n={size} purity {purity:.0%}")
        else:
            impure.append([False] * len(members))
            titles.append(f"#{c} n={size}")
    cluster_montage(images, titles, impure).save(out)
    return out


def _embedding_png(data: dict[str, np.ndarray], out: Path) -> Path | None:
    if "embed_after" not in data or "embed_camids" not in data:
        return None
    embeddings = {}
    if "embed_before" in data:
        embeddings["before training"] = tsne_2d(data["embed_before"])
    embeddings["after training"] = tsne_2d(data["embed_after"])
    return plot_embedding(embeddings, data["embed_pids"], data["embed_camids"], out)


def _summary_table(records: list[dict[str, Any]]) -> str:
    evals = [r for r in records if isinstance(r.get("eval"), dict)]
    if not evals:
        return "<p>No evaluation was logged.</p>"
    first, last = evals[0], evals[-1]
    keys = ["mAP", "R1", "R5", "R10", "mINP"]
    head = "".join(f"<th>{k}</th>" for k in keys)

    def row(name: str, rec: dict[str, Any]) -> str:
        cells = "".join(
            f"<td>{100 * rec['eval'][k]:.1f}</td>" if k in rec["eval"] else "<td>-</td>"
            for k in keys
        )
        return f"<tr><td>{name} (epoch {rec.get('epoch', '?')})</td>{cells}</tr>"

    rows = row("initial", first) + (row("final", last) if last is not first else "")
    return f"<table><tr><th></th>{head}</tr>{rows}</table>"


def _timing_table(records: list[dict[str, Any]]) -> str:
    totals: dict[str, float] = {}
    for r in records:
        for k, v in (r.get("seconds") or {}).items():
            totals[k] = totals.get(k, 0.0) + float(v)
    if not totals:
        return "<p>No timings were logged.</p>"
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{v:.1f}</td></tr>" for k, v in totals.items())
    total = sum(totals.values())
    return (
        f"<table><tr><th>stage</th><th>seconds</th></tr>{rows}"
        f"<tr><td><b>total</b></td><td><b>{total:.1f}</b></td></tr></table>"
    )


_CSS = """
body { font-family: sans-serif; margin: 2em; max-width: 1400px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
td, th { border: 1px solid #ccc; padding: 4px 10px; text-align: right; }
th { background: #f0f0f0; }
img { max-width: 100%; border: 1px solid #ddd; }
pre { background: #f7f7f7; padding: 1em; overflow-x: auto; font-size: 12px; }
.note { color: #888; font-style: italic; }
"""


def write_report(run_dir: str | Path, *, with_masks: bool = False) -> Path:
    """Write ``RUN_DIR/report/index.html`` and its pictures; return the HTML path."""
    from unreid.errors import DataError

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DataError(f"run folder {run_dir} not found: pass the RUN_DIR of a training run")
    out = run_dir / "report"
    out.mkdir(exist_ok=True)
    records = load_records(run_dir)
    data: dict[str, np.ndarray] = {}
    if (run_dir / REPORT_DATA).is_file():
        with np.load(run_dir / REPORT_DATA, allow_pickle=False) as npz:
            data = {k: npz[k] for k in npz.files}

    def section(title: str, make: Callable[[], Path | None], note: str) -> str:
        try:
            png = make()
        except FileNotFoundError as exc:  # images moved since training
            png, note = None, f"image not found: {exc.filename}"
        body = (
            f'<img src="{png.name}" alt="{html.escape(title)}">'
            if png
            else f'<p class="note">{note}</p>'
        )
        return f"<h2>{html.escape(title)}</h2>\n{body}\n"

    parts = [
        f"<h1>unreid run: {html.escape(run_dir.name)}</h1>",
        "<h2>Retrieval before and after training</h2>",
        _summary_table(records),
        section(
            "Training curves",
            lambda: plot_training_curves(records, out / "curves.png") if records else None,
            "metrics.jsonl is empty.",
        ),
        section(
            "Ranked lists (query, then top-10; green = same identity, red = different)",
            lambda: _ranked_png(data, out / "ranked.png", with_masks),
            "no ranked lists were saved for this run.",
        ),
        section(
            "Pseudo-identities (largest clusters; red frames: not the majority identity)",
            lambda: _clusters_png(data, out / "clusters.png"),
            "no pseudo-labels were saved for this run.",
        ),
        section(
            "Feature embedding (t-SNE), by camera and by identity",
            lambda: _embedding_png(data, out / "embedding.png"),
            "no features were saved for this run.",
        ),
        "<h2>Timings</h2>",
        _timing_table(records),
    ]
    config = run_dir / "config.yaml"
    if config.is_file():
        parts.append(f"<h2>Resolved config</h2><pre>{html.escape(config.read_text())}</pre>")
    page = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>unreid report: {html.escape(run_dir.name)}</title>"
        f"<style>{_CSS}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n"
    )
    index = out / "index.html"
    index.write_text(page)
    return index
