from __future__ import annotations

import json

import numpy as np
from PIL import Image

from unreid.viz import (
    cluster_montage,
    overlay_mask,
    plot_training_curves,
    ranked_list_image,
    save_report_data,
    select_report_samples,
    write_report,
)
from unreid.viz.montage import BLUE, GREEN, GREY, RED, framed
from unreid.viz.plots import curve_panels


def _img(value: int, h: int = 8, w: int = 4) -> np.ndarray:
    return np.full((3, h, w), value, dtype=np.uint8)


def test_framed_puts_image_inside_a_solid_border():
    out = framed(_img(7), RED, width=2)
    assert out.shape == (12, 8, 3)
    assert (out[2:10, 2:6] == 7).all()
    border = np.ones((12, 8), bool)
    border[2:10, 2:6] = False
    assert (out[border] == np.array(RED, np.uint8)).all()


def test_overlay_mask_keeps_foreground_and_tints_background_by_alpha():
    image = _img(100, 2, 2)
    mask = np.array([[255, 0], [0, 255]], np.uint8)
    out = overlay_mask(image, mask, alpha=0.5, colour=(200, 0, 0))
    assert (out[:, 0, 0] == 100).all() and (out[:, 1, 1] == 100).all()
    # background: 0.5 * 100 + 0.5 * tint
    assert out[:, 0, 1].tolist() == [150, 50, 50]


def test_ranked_list_frames_encode_query_and_correctness():
    row = ranked_list_image(_img(0), [_img(50), _img(90)], [True, False], [0.1, 0.7])
    arr = np.asarray(row)
    tile_w = 4 + 2 * 3
    assert row.width == 3 * tile_w + 2 * 4
    assert tuple(arr[0, 0]) == BLUE
    assert tuple(arr[0, tile_w + 4]) == GREEN
    assert tuple(arr[0, 2 * (tile_w + 4)]) == RED


def test_cluster_montage_marks_impure_members_red():
    img = cluster_montage([[_img(1), _img(2)], [_img(3)]], ["a", "b"], [[False, True], [False]])
    arr = np.asarray(img)
    assert tuple(arr[0, 0]) == GREY
    assert tuple(arr[0, 4 + 6 + 4]) == RED


def test_select_report_samples_is_evenly_spaced_and_bounded():
    ranked, embed = select_report_samples(100, 50, num_ranked=5, num_embed=20)
    assert ranked.tolist() == [0, 24, 49, 74, 99]
    assert len(embed) == 20 and len(np.unique(embed)) == 20 and embed.max() < 50


def test_training_curves_png_is_written(tmp_path):
    records = [
        {"epoch": 0, "eval": {"mAP": 0.1, "R1": 0.2, "mINP": 0.05}},
        {"epoch": 1, "loss": 3.0, "num_clusters": 10, "label_quality": {"ari": 0.3}},
        {"epoch": 2, "loss": 2.0, "num_clusters": 12, "eval": {"mAP": 0.5, "R1": 0.7}},
    ]
    png = plot_training_curves(records, tmp_path / "c.png")
    with Image.open(png) as im:
        assert im.width > 500 and im.height > 300


# Two epochs of a camera-aware run with ground truth (the keys the engine logs).
CAMERA_RECORDS = [
    {"epoch": 0, "eval": {"mAP": 0.1, "R1": 0.2}},
    {"epoch": 1, "loss": 3.0, "info": {"association_links": 296},
     "label_quality": {"multi_camera_share": 0.972, "cross_camera_pair_precision": 0.384,
                       "cross_camera_nn_share": 0.25, "association_link_precision": 0.03}},
    {"epoch": 2, "loss": 2.5, "info": {"association_links": 120, "online_links": 40},
     "label_quality": {"multi_camera_share": 0.99, "cross_camera_pair_precision": 0.5,
                       "cross_camera_nn_share": 0.375, "association_link_precision": 0.125,
                       "online_link_precision": float("nan")}},
]


def test_curves_draw_the_camera_link_diagnostics_per_epoch():
    panels = {title: (series, percent) for title, series, percent in curve_panels(CAMERA_RECORDS)}
    links, percent = panels["camera links"]
    assert percent
    assert links == {
        "clusters spanning >= 2 cameras": [(1, 0.972), (2, 0.99)],
        "cross-camera pair precision": [(1, 0.384), (2, 0.5)],
        "cross-camera NN same person": [(1, 0.25), (2, 0.375)],
        "association link precision": [(1, 0.03), (2, 0.125)],
        # NaN (no links to score) is not drawn
    }
    counts, percent = panels["association links"]
    assert not percent
    assert counts == {"at labelling": [(1, 296.0), (2, 120.0)],
                      "online (previous epoch)": [(2, 40.0)]}
    assert panels["label quality"] == ({}, True)  # not logged here: an empty panel


def test_report_tables_the_camera_links_only_when_logged(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("method:\n  name: cap\n")
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in CAMERA_RECORDS))
    page = write_report(run).read_text()
    table = page[page.index("<h2>Camera links</h2>"):]
    table = table[:table.index("</table>")]
    rows = [r.removesuffix("</td></tr>").split("</td><td>")
            for r in table.split("<tr><td>")[1:]]
    assert [r[0] for r in rows] == ["1", "2"]  # epoch 0 logged none of them
    assert rows[0][1:] == ["97.2", "38.4", "25.0", "296", "3.0", "-", "-"]
    assert rows[1][1:] == ["99.0", "50.0", "37.5", "120", "12.5", "40", "-"]  # NaN: -
    assert (run / "report" / "curves.png").is_file()
    (run / "metrics.jsonl").write_text(json.dumps(CAMERA_RECORDS[0]))
    assert "Camera links" not in write_report(run).read_text()


def _write_images(folder, n):
    folder.mkdir()
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        p = folder / f"{i:03d}.png"
        Image.fromarray(rng.integers(0, 255, (32, 16, 3), dtype=np.uint8)).save(p)
        paths.append(str(p))
    return np.array(paths)


def test_write_report_end_to_end_with_all_sections(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    lines = [
        {"epoch": 0, "eval": {"mAP": 0.05, "R1": 0.1, "R5": 0.2, "R10": 0.3, "mINP": 0.01}},
        {"epoch": 1, "loss": 2.0, "seconds": {"extract": 1.0, "train": 4.0},
         "eval": {"mAP": 0.6, "R1": 0.8, "R5": 0.9, "R10": 0.95, "mINP": 0.3}},
    ]
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n{torn")
    (run / "config.yaml").write_text("method:\n  name: cluster_contrast\n")
    paths = _write_images(tmp_path / "imgs", 24)
    rng = np.random.default_rng(1)
    save_report_data(
        run,
        train_paths=paths,
        train_labels=np.repeat(np.arange(6), 4),
        train_pids=np.repeat(np.arange(6), 4)[::-1].copy(),
        query_paths=paths[:4],
        gallery_paths=paths[4:],
        q_pids=np.arange(4),
        g_pids=np.arange(20) % 4,
        ranked_query=np.array([0, 3]),
        ranked_gallery=np.array([[0, 1, 2], [3, 4, 5]]),
        ranked_dist=rng.random((2, 3)),
        embed_before=rng.normal(size=(24, 8)),
        embed_after=rng.normal(size=(24, 8)),
        embed_pids=np.repeat(np.arange(6), 4),
        embed_camids=np.arange(24) % 3,
    )
    index = write_report(run)
    page = index.read_text()
    for png in ("curves.png", "ranked.png", "clusters.png", "embedding.png"):
        assert (run / "report" / png).is_file(), png
        assert f'src="{png}"' in page
    assert "60.0" in page and "5.0" in page  # final and initial mAP in percent
    assert "<b>5.0</b>" in page  # total seconds
    assert "cluster_contrast" in page


def test_write_report_without_data_keeps_notes(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("method:\n  name: cluster_contrast\n")  # just started
    page = write_report(run).read_text()
    assert "No evaluation was logged" in page
    assert "no ranked lists were saved" in page


def test_report_renders_in_headless_chromium(tmp_path):
    """The page as a person sees it: Chromium draws the summary table and the images."""
    import pytest

    from unreid.viz.render import find_chromium, render_html

    if find_chromium() is None:
        pytest.skip("no Chromium on PATH (Debian: apt-get install chromium)")
    run = tmp_path / "run"
    run.mkdir()
    lines = [{"epoch": 0, "eval": {"mAP": 0.05, "R1": 0.1, "R5": 0.2, "R10": 0.3, "mINP": 0.01}},
             {"epoch": 1, "loss": 2.0, "eval": {"mAP": 0.6, "R1": 0.8, "R5": 0.9, "R10": 0.95,
                                                "mINP": 0.3}}]
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    index = write_report(run)
    png = render_html(index, tmp_path / "page.png", width=800, height=900)
    page = np.asarray(Image.open(png).convert("RGB"))
    assert page.shape == (900, 800, 3)
    # a rendered page, not a blank one: text and the curve picture put dark pixels on it
    dark = (page.sum(axis=2) < 200).mean()
    assert 0.001 < dark < 0.5


HOSTILE = "x<img src=x onerror=alert(1)>.jpg"


class _PageParser:
    """Every start tag with its attributes, and the page's text, as a browser parses them."""

    def __init__(self, page: str) -> None:
        from html.parser import HTMLParser

        tags: list[tuple[str, dict[str, str | None]]] = []
        text: list[str] = []

        class P(HTMLParser):
            def handle_starttag(self, tag, attrs):
                tags.append((tag, dict(attrs)))

            def handle_data(self, data):
                text.append(data)

        P(convert_charrefs=True).feed(page)
        self.tags, self.text = tags, "".join(text)


def test_escape_and_tag_never_let_text_become_markup():
    from unreid.viz.html import Markup, escape, join, tag

    assert escape(HOSTILE) == "x&lt;img src=x onerror=alert(1)&gt;.jpg"
    assert escape('a"b\'c&') == "a&quot;b&#x27;c&amp;"
    assert escape(escape("<")) == "&lt;"  # Markup is not escaped twice
    assert tag("p", "<b>", tag("b", "ok"), class_='"x"') == \
        '<p class="&quot;x&quot;">&lt;b&gt;<b>ok</b></p>'
    assert tag("img", src="a.png", alt=None, hidden=True) == '<img src="a.png" hidden>'
    assert join(["<", Markup("<br>")]) == "&lt;<br>"


def test_hostile_strings_are_text_everywhere_they_reach_the_page(tmp_path):
    """A file, folder, config value, method name, stage name, epoch or warning named like
    markup shows as that text and adds no element or attribute to the page."""
    run = tmp_path / f"run{HOSTILE}"
    run.mkdir()
    lines = [
        {"epoch": HOSTILE, "eval": {"mAP": 0.1, "R1": HOSTILE}},
        {"epoch": 1, "loss": 1.0, "seconds": {HOSTILE: 2.0, "train": HOSTILE},
         "warnings": [f"89 % of samples are outliers in {HOSTILE}"],
         "eval": {"mAP": 0.2, "R1": 0.3}},
    ]
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    (run / "config.yaml").write_text(
        f"method:\n  name: '{HOSTILE}'\ndata:\n  root: '/data/{HOSTILE}'\n")
    missing = str(tmp_path / HOSTILE)  # moved since training: the "image not found" note
    save_report_data(run, train_paths=np.array([missing] * 2), train_labels=np.array([0, 0]))
    page = write_report(run).read_text()
    parsed = _PageParser(page)
    assert not [t for t in parsed.tags if any(a.startswith("on") for a in t[1])]
    assert {t for t, _ in parsed.tags} <= {"html", "head", "meta", "title", "style", "body",
                                          "h1", "h2", "p", "table", "tr", "th", "td", "b",
                                          "pre", "img", "ul", "li"}
    assert all(a.get("src") != "x" for t, a in parsed.tags if t == "img")
    # each place shows the name as text: folder (title + heading), method, data root,
    # epoch, metric value, stage name, warning, missing image, config (x2); a non-number
    # where seconds belong is left out of the sum
    assert parsed.text.count(HOSTILE) == 11, parsed.text
    assert "<b>" not in parsed.text and "&lt;" not in parsed.text  # escaped once, not twice
    assert f"image not found: {missing}" in parsed.text
    assert f"89 % of samples are outliers in {HOSTILE}" in parsed.text


def test_report_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    """`unreid report DATASET` must not write report/ into a dataset (or any folder)."""
    from unreid.cli import main

    data = tmp_path / "dataset"
    _write_images(data, 2)
    before = sorted(p.name for p in data.iterdir())
    assert main(["report", str(data)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(data) in err and "config.yaml" in err
    assert sorted(p.name for p in data.iterdir()) == before
    (data / "metrics.jsonl").write_text("")  # a run that has logged: accepted
    assert main(["report", str(data)]) == 0
