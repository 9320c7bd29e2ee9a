"""Command line: `python -m course_lib benchmark ...`, `report`, `select`, `throughput`, `gpucheck`, `badges` and `info`."""
from __future__ import annotations

import argparse
import logging
import os
import sys


def _parse_option(text: str):
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"options are KEY=VALUE, got {text!r}")
    for cast in (int, float):
        try:
            return key, cast(value)
        except ValueError:
            pass
    return key, {"true": True, "false": False, "none": None}.get(value.lower(), value)


def main(argv=None) -> int:
    from .runtime import quiet_native_logs

    quiet_native_logs()  # before TensorFlow is imported: its C++ start-up lines are noise here
    if not os.environ.get("COURSE_TF_LOGS"):  # and its Python warnings (retracing notices): errors only
        logging.getLogger("tensorflow").setLevel(logging.ERROR)
    parser = argparse.ArgumentParser(prog="python -m course_lib", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    b = sub.add_parser("benchmark", help="fit a method without labels and score it (no arguments: every "
                                         "method on synthetic-signs, quick profile)")
    b.add_argument("--method", help="one registered method (default: --all)")
    b.add_argument("--all", action="store_true", help="every registered method (the default without --method)")
    b.add_argument("--methods", help="a comma-separated subset of methods for the suite")
    b.add_argument("--seeds", type=int, help="run each method with seeds 0..N-1 into results/<dataset>-<profile>/ "
                                             "and write the summary (mean ± std) beside it")
    b.add_argument("--out-dir", default="results", help="the suite's folder (default: results)")
    b.add_argument("--name", help="the suite's name (default: <dataset>-<profile>)")
    b.add_argument("--dataset", default="synthetic-signs", help="e.g. gtsrb, npz:PATH, mnist, digits")
    b.add_argument("--test", help="fit on --dataset, score on this one (its test split)")
    b.add_argument("--holdout", type=float, help="score on a track-wise held-out fraction of --dataset")
    b.add_argument("--profile", help="quick | standard | full (default: $COURSE_PROFILE, else by device)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--k", type=int, help="number of clusters (default: number of classes)")
    b.add_argument("--image-size", type=int, help="resize images to this side")
    b.add_argument("--option", action="append", type=_parse_option, default=[], metavar="KEY=VALUE",
                   help="a method hyperparameter, e.g. --option centre_crop=0.75 (repeatable)")
    b.add_argument("--out", help="write the result as JSON here")
    t = sub.add_parser("throughput", help="training images/s of a method against plain fit of the same network")
    t.add_argument("--method", default="iic", help="iic (the CNN on pixels) or iic-hog (the MLP on HOG)")
    t.add_argument("--dataset", default="synthetic-signs")
    t.add_argument("--profile", help="quick | standard | full (default: $COURSE_PROFILE, else by device)")
    t.add_argument("--images", type=int, default=8000, help="images to time on (default 8000)")
    t.add_argument("--steps", type=int, default=20, help="training steps per timed run")
    t.add_argument("--repeats", type=int, default=5,
                   help="timed runs; the best is kept (a shared or virtual CPU has slow spells)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--option", action="append", type=_parse_option, default=[], metavar="KEY=VALUE")
    t.add_argument("--out", help="write the result as JSON here")
    g = sub.add_parser("gpucheck", help="every method's full code path for a few steps on the accelerator present "
                                        "(--emulate: mixed_float16 and two logical devices on a CPU)")
    g.add_argument("--methods", help="comma-separated (default: every trained method)")
    g.add_argument("--emulate", action="store_true", help="a GPU session on a CPU: mixed_float16, 2 logical devices")
    g.add_argument("--images", type=int, default=384, help="synthetic signs to train on (default 384)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--out", help="write the JSON here (e.g. results/gpu/check.json)")
    sel = sub.add_parser("select", help="fit a grid of settings x seeds and pick one without labels (stability)")
    sel.add_argument("--method", required=True)
    sel.add_argument("--dataset", default="digits")
    sel.add_argument("--test", help="fit on --dataset, cluster this one's test split")
    sel.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                     help="a setting and the values to try, e.g. --grid entropy_weight=1,2,5 (repeatable)")
    sel.add_argument("--seeds", type=int, default=3)
    sel.add_argument("--holdout", type=float, help="choose on the track-wise rest only (what benchmark --holdout fits)")
    sel.add_argument("--profile", help="quick | standard | full (default: $COURSE_PROFILE, else by device)")
    sel.add_argument("--option", action="append", type=_parse_option, default=[], metavar="KEY=VALUE")
    sel.add_argument("--out-dir", default="results")
    sel.add_argument("--name", help="default: <dataset>-selection-<method>-<profile>")
    sub.add_parser("info", help="versions, devices, profile and the datasets found")
    rep = sub.add_parser("report", help="summarise the run JSONs in results/NAME/ into results/NAME.json, "
                                        ".md and figures")
    rep.add_argument("folder")
    rep.add_argument("--readme", help="also put the table into this Markdown file (between results markers)")
    bad = sub.add_parser("badges", help="point every notebook's Colab/Kaggle badges and install cell at a repository "
                                        "(written into pyproject.toml's [tool.course_kit])")
    bad.add_argument("--repo", metavar="OWNER/NAME", help="the GitHub repository, e.g. a fork of the kit")
    bad.add_argument("--ref", help="the branch or tag (default: the current setting's)")
    bad.add_argument("--check", action="store_true", help="only list what disagrees with the setting; exit 1 if any")
    bad.add_argument("--root", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.command is None:
        args = parser.parse_args(["benchmark"])
    if args.command == "benchmark" and (args.all or args.seeds or args.methods or not args.method):
        from .benchmark import run_all

        if args.out:
            parser.error("--out is for one run (--method M); a suite writes into --out-dir")
        methods = args.methods.split(",") if args.methods else [args.method] if args.method else None
        run_all(args.dataset, test=args.test, profile=args.profile or os.environ.get("COURSE_PROFILE", "quick"), seeds=args.seeds or 1,
                methods=methods, out_dir=args.out_dir, name=args.name, holdout=args.holdout, k=args.k,
                options=dict(args.option) or None, image_size=args.image_size)
        return 0
    if args.command == "benchmark":
        from .benchmark import run

        run(args.method, args.dataset, test=args.test, profile=args.profile, seed=args.seed,
            holdout=args.holdout, k=args.k, options=dict(args.option), out=args.out, image_size=args.image_size)
        return 0
    if args.command == "throughput":
        from .benchmark import throughput

        throughput(args.method, args.dataset, profile=args.profile, seed=args.seed, options=dict(args.option),
                   images=args.images, steps=args.steps, repeats=args.repeats, out=args.out)
        return 0
    if args.command == "select":
        from pathlib import Path

        from .selection import study

        grid = {}
        for text in args.grid:
            key, _, values = text.partition("=")
            grid[key] = [_parse_option(f"{key}={v}")[1] for v in values.split(",") if v]
        if not grid or not all(grid.values()):
            parser.error("select needs at least one --grid KEY=V1,V2")
        summary = study(args.method, args.dataset, grid, seeds=args.seeds, test=args.test,
                        profile=args.profile or os.environ.get("COURSE_PROFILE", "quick"),
                        options=dict(args.option) or None, out_dir=args.out_dir, name=args.name,
                        holdout=args.holdout)
        print(Path(args.out_dir, summary["name"] + ".md").read_text())
        return 0
    if args.command == "gpucheck":
        if args.emulate:  # before TensorFlow loads (it reads the variable once)
            from .runtime import without_onednn

            without_onednn()
        from .gpucheck import run as gpucheck

        doc = gpucheck(args.methods.split(",") if args.methods else None, emulate=args.emulate, images=args.images,
                       seed=args.seed, out=args.out)
        return 0 if doc["ok"] else 1
    if args.command == "report":
        from .benchmark import report

        from pathlib import Path

        summary = report(args.folder)
        print(Path(summary["markdown"]).read_text())
        if args.readme:
            from .benchmark import update_readme

            print(f"table written into {update_readme(args.readme, summary)}")
        return 0
    if args.command == "badges":
        from . import badges

        root = args.root or badges.ROOT
        if args.check:
            problems = badges.check(root)
            print("\n".join(problems) or "badges, install cells, GPU metadata and parameters tags agree with "
                                         f"{'@'.join(badges.read_setting(root))}")
            return 1 if problems else 0
        if not args.repo:
            parser.error("badges needs --repo OWNER/NAME (or --check)")
        try:
            changed = badges.point_at(args.repo, args.ref, root)
        except ValueError as e:
            parser.error(str(e))
        for path, changes in changed.items():
            print(f"{path.relative_to(root)}: {', '.join(changes)}")
        return 0
    if args.command == "info":
        info()
        return 0
    parser.print_help()
    return 2


def info() -> None:
    from . import runtime
    from .data import TFDS_NAMES, data_dir
    from .download import kaggle_credentials
    from .methods import available

    runtime.setup(0, verbose=True)
    print(f"data folder: {data_dir()}")
    print("built-in datasets: synthetic-signs, digits")
    tfds_dir = data_dir() / "tensorflow_datasets"
    local = sorted(p.name for p in tfds_dir.iterdir()) if tfds_dir.is_dir() else []
    print(f"tensorflow-datasets ({', '.join(sorted(TFDS_NAMES))}): local copies {local or 'none'}")
    try:
        from .data import detect_gtsrb_layout

        candidates = [os.environ.get("GTSRB_DIR"), str(data_dir() / "gtsrb")]
        found = [c for c in candidates if c and os.path.isdir(c)]
        print(f"gtsrb: {found or 'no local copy'} (the Kaggle API downloads it on first use)")
        for c in found:
            print(f"  {c}: layout {detect_gtsrb_layout(c)[0]}")
    except Exception as e:
        print(f"gtsrb: {e}")
    print(f"kaggle credentials: {'found' if kaggle_credentials() else 'not found'}")
    print(f"methods: {', '.join(available())}")


if __name__ == "__main__":
    sys.exit(main())
