"""The ``unreid`` command line: one entry point, one sub-command per task.

Thin on purpose: each handler parses, builds a config or plain arguments, and
calls one library function. Library imports happen inside the handlers so that
``unreid --help`` is instant and a sub-command only pays for what it uses.
User errors (:class:`unreid.errors.UnreidError`) are printed as one line and
exit with status 2.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Callable, Sequence

from unreid import __version__
from unreid.errors import UnreidError

Handler = Callable[[argparse.Namespace], int | None]


def _add_data_args(p: argparse.ArgumentParser, *, required: bool = True) -> None:
    p.add_argument("--data", required=required, help="dataset folder")
    p.add_argument(
        "--layout",
        default="auto",
        choices=["auto", "market", "msmt17", "folder"],
        help="folder layout (auto: detect Market-1501 style or MSMT17 list files)",
    )
    p.add_argument(
        "--camera-regex",
        default=None,
        help="folder layout: regex on the file name with groups (?P<camid>...) and optionally "
        "(?P<pid>...)",
    )
    p.add_argument("--csv", default=None, help="folder layout: CSV with path,camid[,pid]")


def _load(args: argparse.Namespace):
    from unreid.data import load_dataset

    return load_dataset(
        args.data, layout=args.layout, camera_regex=args.camera_regex, csv=args.csv
    )


# ---------------------------------------------------------------- foundation


def cmd_synth(args: argparse.Namespace) -> None:
    from unreid.data.synth import SynthConfig, generate_world

    cfg = SynthConfig(
        ids=args.ids,
        cameras=args.cameras,
        images_per_id=args.images_per_id,
        height=args.size[0],
        width=args.size[1],
        seed=args.seed,
        occluders=args.occluders,
        distractors=args.distractors,
    )
    out = generate_world(cfg, args.out, progress=True)
    print(f"synthetic world written to {out}")


def cmd_check_data(args: argparse.Namespace) -> int:
    from unreid.data.check import check_data, format_report

    report = check_data(
        args.root,
        layout=args.layout,
        camera_regex=args.camera_regex,
        csv=args.csv,
        decode=not args.no_decode,
    )
    print(format_report(report))
    return 1 if report.unreadable else 0


def cmd_eval_features(args: argparse.Namespace) -> None:
    from unreid.eval import evaluate_npz

    _check_flags(args)
    protocol = "all-gallery" if args.all_gallery else args.protocol
    result = evaluate_npz(args.file, protocol=protocol, rerank=args.rerank)
    _print_result(result)


def _print_result(result) -> None:
    if result.note:
        print(result.note)
    print(result.format_table())


def _add_protocol_arg(p: argparse.ArgumentParser) -> None:
    # checked by _check_flags, not argparse choices: the list lives in unreid.eval,
    # whose import brings torch, and `unreid --help` must not wait for torch
    p.add_argument(
        "--protocol", default="auto",
        help="market: same-camera matches of the query's identity are ignored; all-gallery: "
        "they count, only the query image itself is ignored (one camera); auto: all-gallery "
        "when query and gallery hold one camera, else market",
    )


# ---------------------------------------------------------------- training


def _config_from_args(args: argparse.Namespace):
    from unreid.config import load_config

    return load_config(args.config or [], args.set or [])


def cmd_train(args: argparse.Namespace) -> None:
    from unreid.engine import train

    # --resume alone continues with the run's own config; --set then only overrides it
    cfg = _config_from_args(args) if args.config or not args.resume else None
    try:
        train(cfg, resume=args.resume, eval_only=args.eval_only,
              overrides=(args.set or []) if cfg is None else ())
    except KeyboardInterrupt:
        if args.eval_only:
            raise
        run_dir = args.resume if cfg is None else (args.resume or cfg.run.out_dir)
        raise KeyboardInterrupt(
            f"continue with unreid train --resume {shlex.quote(str(run_dir))}") from None


# Flags that set a config value: (attribute, config key, flag), checked by the key's rule
_CHECKED_FLAGS = (
    ("batch_size", "eval.batch_size", "--batch-size"),
    ("protocol", "eval.protocol", "--protocol"),
)


def _check_flags(args: argparse.Namespace) -> None:
    """Refuse a bad value of a flag in _CHECKED_FLAGS before anything is loaded."""
    from unreid.config import check_value

    for attr, key, flag in _CHECKED_FLAGS:
        if attr in vars(args):
            check_value(key, getattr(args, attr), flag)


def cmd_eval(args: argparse.Namespace) -> None:
    from unreid.apps.inference import evaluate_checkpoint

    _check_flags(args)
    result = evaluate_checkpoint(
        args.checkpoint, _load(args), rerank=args.rerank, batch_size=args.batch_size,
        protocol=args.protocol, standardize_cameras=args.standardize_cameras or None,
        camera_bn=args.camera_bn or None,
    )
    _print_result(result)


def cmd_extract(args: argparse.Namespace) -> None:
    from unreid.apps.inference import extract_to_npz

    _check_flags(args)
    path = extract_to_npz(args.checkpoint, _load(args), args.out, batch_size=args.batch_size)
    print(f"features written to {path}")


# ---------------------------------------------------------------- methods, demo


def cmd_masks(args: argparse.Namespace) -> None:
    from unreid.masks import precompute_masks

    summary = precompute_masks(
        args.provider,
        _load(args),
        args.out,
        noise=args.mask_noise,
        size=args.size,
        mask_dir=args.mask_dir,
        allow_missing=args.allow_missing_masks,
    )
    print(summary)


def cmd_search(args: argparse.Namespace) -> None:
    from unreid.apps.search import search

    _check_flags(args)
    result = search(
        args.checkpoint,
        gallery=args.gallery,
        queries=args.query,
        topk=args.topk,
        rerank=args.rerank,
        out=args.out,
        batch_size=args.batch_size,
        device=args.device,
    )
    print(result.format_table())
    if result.image is not None:
        print(f"ranked list written to {result.image}")


def cmd_export(args: argparse.Namespace) -> None:
    from unreid.apps.export import export_onnx

    result = export_onnx(args.checkpoint, args.out, opset=args.opset)
    print(result.summary())


def cmd_report(args: argparse.Namespace) -> None:
    from unreid.viz import write_report

    index = write_report(args.run_dir, with_masks=args.masks)
    print(f"report: {index}")
    if args.screenshot:
        from unreid.viz.render import render_html

        print(f"screenshot: {render_html(index, args.screenshot)}")


def cmd_cache(args: argparse.Namespace) -> None:
    from unreid.data.cache import cache_usage, clear_cache, files_text

    if args.action == "info":
        print(cache_usage(args.dir).format())
        return
    removed = clear_cache(args.dir)
    print(f"removed {files_text(removed.total_files)} ({removed.total_bytes / 1e6:.1f} MB) "
          f"from {removed.root}")


def cmd_demo(args: argparse.Namespace) -> None:
    from unreid.apps.demo import run_demo

    run_demo(out_dir=args.out, quick=args.quick)


# ---------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="unreid",
        description="Fully-unsupervised person re-identification (cluster-contrast, SFE-CR, "
        "RSL, PUL).",
    )
    parser.add_argument("--version", action="version", version=f"unreid {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, handler: Handler, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(handler=handler)
        return p

    p = add("synth", cmd_synth, "generate the synthetic multi-camera world (Market-1501 layout)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ids", type=int, default=300, help="identities (half train, half test)")
    p.add_argument("--cameras", type=int, default=5)
    p.add_argument("--images-per-id", type=int, default=16, help="images per identity")
    p.add_argument("--size", type=int, nargs=2, default=(128, 64), metavar=("H", "W"))
    p.add_argument("--occluders", type=float, default=0.15, help="share of occluded images")
    p.add_argument("--distractors", type=int, default=100, help="distractor gallery images")

    p = add("check-data", cmd_check_data, "summarise a dataset and decode every image")
    p.add_argument("root", help="dataset folder")
    p.add_argument("--layout", default="auto", choices=["auto", "market", "msmt17", "folder"])
    p.add_argument("--camera-regex", default=None)
    p.add_argument("--csv", default=None)
    p.add_argument("--no-decode", action="store_true", help="skip decoding the images")

    p = add("eval-features", cmd_eval_features,
            "evaluate saved features (feats, pids, camids, split)")
    p.add_argument("file", help=".npz written by `unreid extract`")
    _add_protocol_arg(p)
    p.add_argument("--all-gallery", action="store_true", help="same as --protocol all-gallery")
    p.add_argument("--rerank", action="store_true", help="k-reciprocal re-ranking")

    p = add("train", cmd_train, "train a model with an unsupervised (or supervised) method")
    p.add_argument("--config", action="extend", nargs="+", metavar="YAML",
                   help="YAML config(s), merged left to right (later files win; repeatable)")
    p.add_argument("--set", action="extend", nargs="+", metavar="KEY=VALUE",
                   help="overrides, e.g. --set cluster.eps=0.6 optim.epochs=20 (repeatable)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last checkpoint")
    p.add_argument("--eval-only", action="store_true", help="evaluate the initial model and stop")

    p = add("eval", cmd_eval, "evaluate a checkpoint on a dataset's query/gallery")
    p.add_argument("--checkpoint", required=True)
    _add_data_args(p)
    p.add_argument("--rerank", action="store_true")
    _add_protocol_arg(p)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--standardize-cameras", action="store_true",
                   help="standardise the features per camera (default: the run's "
                        "camera.standardize_test)")
    p.add_argument("--camera-bn", action="store_true",
                   help="extract each camera's images with BN statistics of that camera's "
                        "query and gallery images (default: the run's camera.bn_test)")

    p = add("extract", cmd_extract, "extract features of every split to an .npz")
    p.add_argument("--checkpoint", required=True)
    _add_data_args(p)
    p.add_argument("--out", required=True)
    p.add_argument("--batch-size", type=int, default=128)

    p = add("masks", cmd_masks, "precompute foreground masks for a dataset")
    p.add_argument("--provider", required=True, choices=["synthetic", "png", "mediapipe", "none"])
    _add_data_args(p)
    p.add_argument("--out", required=True, help="mask folder (mirrors the image tree)")
    p.add_argument("--mask-noise", type=float, default=0.0, help="synthetic: degrade masks")
    p.add_argument("--size", type=int, nargs=2, default=None, metavar=("H", "W"))
    p.add_argument(
        "--mask-dir",
        default=None,
        help="png: folder of mask PNGs mirroring the image names (synthetic: default DATA/masks)",
    )
    p.add_argument(
        "--allow-missing-masks",
        action="store_true",
        help="png/synthetic: use the whole image where a mask file is missing (counted)",
    )

    p = add("search", cmd_search, "rank a gallery for query images")
    p.add_argument("--checkpoint", required=True, help="checkpoint.pt or RUN_DIR")
    p.add_argument(
        "--gallery", required=True,
        help="features .npz from `unreid extract` (its gallery split) or an image folder",
    )
    p.add_argument("--query", required=True, nargs="+", help="query image(s) or folder(s)")
    p.add_argument("--topk", type=int, default=10, help="gallery images shown per query")
    p.add_argument("--rerank", action="store_true", help="k-reciprocal re-ranking")
    p.add_argument("--out", default=None, help="ranked-list picture (PNG)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: auto)")

    p = add("export", cmd_export, "export a checkpoint to ONNX")
    p.add_argument("--checkpoint", required=True, help="checkpoint.pt or RUN_DIR")
    p.add_argument("--format", default="onnx", choices=["onnx"])
    p.add_argument("--out", required=True, help="output .onnx file")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset version")

    p = add("report", cmd_report, "(re)write the HTML report of a run")
    p.add_argument("run_dir")
    p.add_argument("--masks", action="store_true", help="overlay the masks on the ranked lists")
    p.add_argument("--screenshot", metavar="PNG", default=None,
                   help="also render the page with headless Chromium to this PNG")

    p = add("cache", cmd_cache, "size of the decoded-image cache, or empty it")
    p.add_argument("action", choices=["info", "clear"])
    p.add_argument("--dir", default=None,
                   help="a data.cache_dir of your own (default: the per-user cache: "
                   "$UNREID_CACHE, else $XDG_CACHE_HOME/unreid, else ~/.cache/unreid)")

    p = add("demo", cmd_demo, "synthetic world -> train the default recipe -> report")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--quick", action="store_true", help="tiny world and budget (smoke test)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = args.handler(args)
    except UnreidError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # its message, when set, is how to continue
        print(f"interrupted: {exc}" if str(exc) else "interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
