"""The run report: a self-contained folder (HTML + PNG, relative links).

It opens from disk with no server and no JavaScript. Inputs are files the
engine leaves in the run folder:

- ``metrics.jsonl``  one JSON line per epoch (curves, summary table, timings);
- ``config.yaml``    the resolved config;
- ``source.json``    the start model of a run that began from another run's weights
  (:mod:`unreid.models.source`): its own numbers are shown beside the adapted ones;
- ``report_data.npz`` arrays saved at the end of training by
  :func:`save_report_data` (ranked lists, final pseudo-labels, features of a
  sample before and after training for the embedding plot).

Sections whose inputs are missing are replaced by a one-line note, so the
report can be written for any run at any time (``unreid report RUN_DIR``).
The page is built only through :mod:`unreid.viz.html`, which escapes every
file name, config value and logged string on the way in.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image

from unreid.cluster.health import run_verdict
from unreid.data.images import to_rgb
from unreid.errors import DataError
from unreid.io import atomic_write, atomic_write_text
from unreid.viz.html import Markup, join, tag
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
    with Image.open(path) as im:
        rgb = to_rgb(im).resize((_THUMB[1], _THUMB[0]), Image.Resampling.BILINEAR)
        return np.asarray(rgb).transpose(2, 0, 1)


def _load_mask_thumb(path: str) -> np.ndarray | None:
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


def _number(value: Any, scale: float = 1.0) -> str:
    """A logged number as table text (``scale`` 100 for percent); anything else as is."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{scale * value:.1f}"
    return "-" if value is None else str(value)


def _summary_table(records: list[dict[str, Any]]) -> Markup:
    evals = [r for r in records if isinstance(r.get("eval"), dict)]
    if not evals:
        return tag("p", "No evaluation was logged.")
    first, last = evals[0], evals[-1]
    keys = ["mAP", "R1", "R5", "R10", "mINP"]

    def row(name: str, rec: dict[str, Any]) -> Markup:
        cells = [tag("td", _number(rec["eval"].get(k), 100.0)) for k in keys]
        return tag("tr", tag("td", f"{name} (epoch {rec.get('epoch', '?')})"), *cells)

    rows = [row("initial", first)] + ([row("final", last)] if last is not first else [])
    return tag("table", tag("tr", tag("th"), *(tag("th", k) for k in keys)), *rows)


def _health_section(records: list[dict[str, Any]]) -> Markup:
    """Label health per epoch (clusters, outliers, largest cluster, cross-camera clusters,
    agreement with the previous epoch), the run's verdict and a non-Market protocol; the
    warning lines are in the Warnings section."""
    keys = [("outlier_share", "outliers %", 100.0),
            ("largest_cluster_share", "largest cluster %", 100.0),
            ("multi_camera_share", "multi-camera clusters %", 100.0),
            ("agreement", "agreement with previous epoch (ARI)", 1.0)]
    rows = [tag("tr", tag("td", r.get("epoch", "?")), tag("td", r["health"].get("num_clusters")),
                *(tag("td", _number(r["health"].get(k), scale)) for k, _, scale in keys))
            for r in records if isinstance(r.get("health"), dict)]
    parts = [tag("h2", "Label health")]
    protocols = {str(r["eval"].get("protocol", "market")) for r in records
                 if isinstance(r.get("eval"), dict)}
    if protocols - {"market"}:
        parts.append(tag("p", f"Evaluation protocol: {', '.join(sorted(protocols))} "
                              "(same-camera matches count; the query image itself does not)."))
    verdict = run_verdict(records)
    if verdict:
        parts.append(tag("p", tag("b", verdict)))
    head = tag("tr", tag("th", "epoch"), tag("th", "clusters"),
               *(tag("th", h) for _, h, _ in keys))
    none = tag("p", "No label health was logged.", class_="note")
    parts.append(tag("table", head, *rows) if rows else none)
    return join(parts, "\n")


# (record key path, column title, scale): per epoch, are the cameras being linked, rightly?
_CAMERA_LINK_COLUMNS = (
    ("label_quality.multi_camera_share", "clusters spanning cameras %", 100.0),
    ("label_quality.cross_camera_pair_precision", "cross-camera pair precision %", 100.0),
    ("label_quality.cross_camera_nn_share", "cross-camera NN same person %", 100.0),
    ("info.association_links", "association links", 1.0),
    ("label_quality.association_link_precision", "link precision %", 100.0),
    ("info.online_links", "online links (previous epoch)", 1.0),
    ("label_quality.online_link_precision", "online link precision %", 100.0),
)


def _dotted(record: dict[str, Any], path: str) -> Any:
    node: Any = record
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _camera_links_section(records: list[dict[str, Any]]) -> Markup:
    """Per epoch, the cross-camera link diagnostics that were logged (the columns with
    a value in some epoch; precisions need the true identities); empty when none was."""
    columns = [c for c in _CAMERA_LINK_COLUMNS
               if any(_dotted(r, c[0]) is not None for r in records)]
    rows = [r for r in records if any(_dotted(r, c[0]) is not None for c in columns)]
    if not rows:
        return Markup("")

    def cell(value: Any, scale: float) -> Markup:
        if isinstance(value, float) and value != value:  # NaN: no link to score
            value = None
        if isinstance(value, int) and not isinstance(value, bool) and scale == 1.0:
            return tag("td", str(value))
        return tag("td", _number(value, scale))

    head = tag("tr", tag("th", "epoch"), *(tag("th", title) for _, title, _ in columns))
    body = [tag("tr", tag("td", r.get("epoch", "?")),
                *(cell(_dotted(r, key), scale) for key, _, scale in columns)) for r in rows]
    about = ("Whether the pseudo-labels link the cameras, and rightly: a high share of "
             "clusters spanning cameras is only worth something when the cross-camera "
             "pairs and links are the same person (curves under Training curves).")
    return join([tag("h2", "Camera links"), tag("p", about, class_="note"),
                 tag("table", head, *body)], "\n")


def _read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object file, or None when absent or unreadable (the report still renders)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _source_table(source: dict[str, Any] | None, records: list[dict[str, Any]]) -> Markup:
    """The start model's own numbers beside the adapted ones, for a run that started from
    another run's weights (``source.json``); empty for an ImageNet or random start."""
    if not source:
        return Markup("")
    keys = ["mAP", "R1", "R5", "R10", "mINP"]
    evals = [r["eval"] for r in records if isinstance(r.get("eval"), dict)]

    def row(name: str, values: Any) -> Markup:
        values = values if isinstance(values, dict) else {}
        return tag("tr", tag("td", name), *(tag("td", _number(values.get(k), 100.0))
                                            for k in keys))

    stored_roots = source.get("data_roots")
    roots: list[Any] = stored_roots if isinstance(stored_roots, list) else []
    first_root = roots[0] if roots else "its data"
    when = f", epoch {source['eval_epoch']}" if source.get("eval_epoch") is not None else ""
    rows = [row(f"source model on its own split ({first_root}{when})", source.get("eval"))]
    if evals:
        rows.append(row("source model here, before adaptation (direct transfer)", evals[0]))
    if len(evals) > 1:
        rows.append(row("adapted (final)", evals[-1]))
    about = (f"Started from {source.get('path')} (sha256 {str(source.get('sha256'))[:16]}...), "
             f"trained with {source.get('method') or 'unknown method'} on "
             f"{', '.join(map(str, roots)) or 'unknown data'}.")
    return join([tag("h2", "Source model"), tag("p", about),
                 tag("table", tag("tr", tag("th"), *(tag("th", k) for k in keys)), *rows)])


def _timing_table(records: list[dict[str, Any]]) -> Markup:
    totals: dict[str, float] = {}
    for r in records:
        seconds = r.get("seconds")
        for k, v in (seconds.items() if isinstance(seconds, dict) else ()):
            if isinstance(v, int | float) and not isinstance(v, bool):
                totals[str(k)] = totals.get(str(k), 0.0) + float(v)
    if not totals:
        return tag("p", "No timings were logged.")
    rows = [tag("tr", tag("td", k), tag("td", f"{v:.1f}")) for k, v in totals.items()]
    total = f"{sum(totals.values()):.1f}"
    return tag(
        "table", tag("tr", tag("th", "stage"), tag("th", "seconds")), *rows,
        tag("tr", tag("td", tag("b", "total")), tag("td", tag("b", total))),
    )


def _warnings_list(records: list[dict[str, Any]]) -> Markup:
    """The warning lines logged per epoch (``warnings`` in a record), in order."""
    items: list[Markup] = []
    for r in records:
        warnings = r.get("warnings")
        if isinstance(warnings, list):
            items += [tag("li", f"epoch {r.get('epoch', '?')}: {w}") for w in warnings]
    return tag("ul", *items) if items else tag("p", "No warnings were logged.", class_="note")


def _config_summary(config_text: str | None) -> Markup:
    """Method and data root of the run, read from its ``config.yaml`` (if it parses)."""
    try:
        cfg = yaml.safe_load(config_text) if config_text else None
    except yaml.YAMLError:
        cfg = None
    if not isinstance(cfg, dict):
        return Markup("")

    def get(section: str, key: str) -> Any:
        node = cfg.get(section)
        return node.get(key, "?") if isinstance(node, dict) else "?"

    return tag("p", "method ", tag("b", get("method", "name")), ", data ", get("data", "root"))


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
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DataError(f"run folder {run_dir} not found: pass the RUN_DIR of a training run")
    if not (run_dir / "config.yaml").is_file() and not (run_dir / "metrics.jsonl").is_file():
        # e.g. a dataset folder: never write report/ into it
        raise DataError(f"{run_dir} is not a run folder (no config.yaml or metrics.jsonl): "
                        "pass the RUN_DIR of a training run")
    out = run_dir / "report"
    out.mkdir(exist_ok=True)
    records = load_records(run_dir)
    data: dict[str, np.ndarray] = {}
    if (run_dir / REPORT_DATA).is_file():
        with np.load(run_dir / REPORT_DATA, allow_pickle=False) as npz:
            data = {k: npz[k] for k in npz.files}

    def section(title: str, make: Callable[[], Path | None], note: str) -> Markup:
        try:
            png = make()
        except FileNotFoundError as exc:  # images moved since training
            png, note = None, f"image not found: {exc.filename}"
        body = tag("img", src=png.name, alt=title) if png else tag("p", note, class_="note")
        return join([tag("h2", title), body], "\n")

    config = run_dir / "config.yaml"
    config_text = config.read_text(errors="replace") if config.is_file() else None
    parts = [
        tag("h1", f"unreid run: {run_dir.name}"),
        _config_summary(config_text),
        tag("h2", "Retrieval before and after training"),
        _summary_table(records),
        _source_table(_read_json(run_dir / "source.json"), records),
        _health_section(records),
        _camera_links_section(records),
        section(
            "Training curves",
            lambda: plot_training_curves(records, out / "curves.png") if records else None,
            "metrics.jsonl is empty.",
        ),
        tag("h2", "Warnings"),
        _warnings_list(records),
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
        tag("h2", "Timings"),
        _timing_table(records),
    ]
    if config_text is not None:
        parts += [tag("h2", "Resolved config"), tag("pre", config_text)]
    head = tag("head", tag("meta", charset="utf-8"),
               tag("title", f"unreid report: {run_dir.name}"), tag("style", Markup(_CSS)))
    page = "<!doctype html>\n" + tag("html", head, tag("body", join(parts, "\n"))) + "\n"
    index = out / "index.html"
    atomic_write_text(index, page)
    return index
