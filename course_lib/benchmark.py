"""The kit's main job: fit a method without labels, score it with labels, write the result as JSON.

    python -m course_lib benchmark --method pixels-kmeans --dataset npz:../shared/data/gtsrb_train_32.npz
"""
from __future__ import annotations

import datetime as dt
import json
import os
import platform
import re
import tempfile
import time
from pathlib import Path

import numpy as np

from . import metrics, runtime, training
from .data import load_dataset, track_split
from .methods import get_method


def prepare_data(dataset: str, test: str | None, profile: runtime.Profile, seed: int,
                 holdout: float | None, needs_labels: bool, image_size: int | None = None):
    """(train, eval, protocol). Unsupervised methods are scored on the images they cluster, unless a test
    set or a hold-out fraction is given; a labelled method always gets a (track-wise) hold-out."""
    kw = dict(image_size=image_size, seed=seed, n_images=profile.n_synthetic)
    train = load_dataset(dataset, "train", max_images=profile.max_train, **kw)
    if test:
        ev = load_dataset(test, "test", max_images=profile.max_eval, **kw)
        protocol = "train -> test"
    elif holdout or needs_labels:
        holdout = holdout or 0.2
        train, ev = track_split(train, holdout, seed)
        protocol = f"track-wise hold-out {holdout:.0%}"
    else:
        ev = train
        protocol = "fit and scored on the same images (no labels used to fit)"
    if ev is not train and profile.max_eval and len(ev) > profile.max_eval:
        from .data import stratified_subsample

        ev = ev.subset(stratified_subsample(ev.y, profile.max_eval, seed))
    if ev.y is None:
        raise ValueError(f"{test or dataset} has no labels: scoring needs them (fitting does not)")
    return train, ev, protocol


def run(method: str, dataset: str = "synthetic-signs", test: str | None = None, profile=None, seed: int = 0,
        holdout: float | None = None, k: int | None = None, options: dict | None = None,
        out: str | Path | None = None, verbose: bool = True, image_size: int | None = None,
        progress: bool = True) -> dict:
    """Fit `method` on `dataset`, score it, print a line and (optionally) write JSON. Returns the result.
    progress: the method prints one line per training epoch (with the minutes left) where it trains."""
    info = runtime.setup(seed, profile, verbose=verbose)
    cls = get_method(method)
    if progress and "verbose" in getattr(cls, "defaults", {}):
        options = {"verbose": 1, **(options or {})}
    train, ev, protocol = prepare_data(dataset, test, info.profile, seed, holdout, cls.needs_labels, image_size)
    k = k or train.n_classes
    est = cls.for_profile(k, info.profile, seed, **(options or {}))
    t0, c0 = time.perf_counter(), time.process_time()
    est.fit(train.x, train.y if cls.needs_labels else None)
    fit_seconds = time.perf_counter() - t0
    pred = est.predict(ev.x)
    proba = est.predict_proba(ev.x) if hasattr(est, "predict_proba") else None
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    scores = metrics.evaluate(ev.y, pred, proba, predicts_labels=cls.predicts_labels)
    result = {
        "method": method, "dataset": dataset, "test_dataset": test, "protocol": protocol,
        "profile": info.profile.name, "seed": seed, "n_train": len(train), "n_eval": len(ev), "k": k,
        "options": {key: v for key, v in (options or {}).items() if key != "verbose"},  # set on top of the preset
        **scores, "seconds": round(seconds, 2), "fit_seconds": round(fit_seconds, 2),
        "cpu_seconds": round(cpu_seconds, 2),  # CPU time of all threads: wall time / cores on a busy machine
        **provenance(info, est), "profile_settings": info.profile.asdict(),
    }
    if holdout and not cls.needs_labels:  # also the images it was fitted on: fitted-and-scored vs unseen signs
        result["fitted"] = {k: v for k, v in metrics.evaluate(train.y, est.predict(train.x)).items()
                            if k in ("acc", "nmi", "ari")}
    if hasattr(est, "predict_steps"):  # multi-step methods (SCAN): the score after each step
        result["steps"] = {step: {k: v for k, v in metrics.evaluate(ev.y, lab).items() if k in ("acc", "nmi", "ari")}
                           for step, lab in est.predict_steps(ev.x).items()}
    if getattr(est, "log_", None):
        result["log"] = json.loads(json.dumps(est.log_, default=float))
    if getattr(est, "timings_", None):  # seconds per stage (extraction, PCA + clustering, ...)
        result["timings"] = {k: round(float(v), 2) for k, v in est.timings_.items()}
    if isinstance(getattr(est, "history_", None), dict):  # per-epoch curves (losses, DeepCluster's NMI(t, t-1))
        result["history"] = json.loads(json.dumps(est.history_, default=float).replace("NaN", "null"))
    if scores["largest_cluster"] > max(0.5, 3 * scores["largest_class"]) and not cls.predicts_labels:
        result["warning"] = (f"collapse: one cluster holds {scores['largest_cluster']:.0%} of the images "
                             f"(largest class {scores['largest_class']:.0%})")
    if verbose:
        print_table([result])
    if out:
        write_json(out, result)
    return result


def throughput(method: str, dataset: str = "synthetic-signs", profile=None, seed: int = 0, k: int | None = None,
               options: dict | None = None, images: int = 8000, steps: int = 20, repeats: int = 5,
               out: str | Path | None = None, verbose: bool = True) -> dict:
    """Training speed of IIC (`iic` or `iic-hog`) against plain `fit` of the same network (`iic_throughput`):
    images through the network per second, wall clock and per CPU-second."""
    from .methods.iic import IIC

    info = runtime.setup(seed, profile, verbose=verbose)
    cls = get_method(method)
    if not issubclass(cls, IIC):
        raise ValueError(f"{method} has no throughput measurement (methods with one: iic, iic-hog)")
    train = load_dataset(dataset, "train", max_images=images, seed=seed, n_images=min(images, info.profile.n_synthetic))
    est = cls.for_profile(k or train.n_classes, info.profile, seed, **(options or {}))
    speeds = iic_throughput(est, train.x, steps=steps, repeats=repeats)
    result = {"method": method, "dataset": dataset, "profile": info.profile.name, "seed": seed, "n_images": len(train),
              **{key: round(v, 3) if isinstance(v, float) else v for key, v in speeds.items()},
              **provenance(info, est)}
    if verbose:
        print(f"{method} on {dataset} ({info.profile.name}): {result['iic_img_s']:.0f} images/s training vs "
              f"{result['plain_img_s']:.0f} for plain fit of the same network: ratio {result['ratio']:.2f} "
              f"(per CPU-second {result['ratio_cpu']:.2f})")
    if out:
        write_json(out, result)
    return result


def iic_throughput(est, x, steps: int = 10, repeats: int = 2) -> dict:
    """IIC's training speed (each head's step, averaged over the head schedule) against plain `fit` of the same
    trunk (+ a softmax layer, cross-entropy on random labels, in-memory batches of the same size, no
    augmentation): images through the trunk per second, wall clock and per CPU-second (the CPU may be
    shared), best of `repeats` runs of `steps` steps after a warm-up. `iic` also with the copies made inside
    the training step; `iic-hog` on random view features (their HOG is computed once, before training)."""
    import keras

    from .methods.iic import IICModel
    from .methods.iic_hog import IICHog, feature_view_batches

    x = np.asarray(x)
    n, r = min(est.batch_images(), len(x)), est.params["copies"]
    per_step = n * (1 + r)
    x = x[:n * max(1, min(steps, len(x) // n))]
    steps = len(x) // n

    def timed(model, data):
        model.fit(data, epochs=1, verbose=0, steps_per_epoch=1, shuffle=False)  # trace + warm up
        wall = cpu = float("inf")
        for _ in range(repeats):
            t, c = time.perf_counter(), time.process_time()
            model.fit(data, epochs=1, verbose=0, steps_per_epoch=steps, shuffle=False)
            wall, cpu = min(wall, time.perf_counter() - t), min(cpu, time.process_time() - c)
        return steps * per_step / wall, steps * per_step / cpu

    def timed_heads(trainers, data, label=""):  # time per image adds up over the schedule's epochs
        schedule = est.schedule(net)
        rates = {head: timed(model, data) for head, model in trainers.items()}
        for head, rate in rates.items():
            out[f"{label}iic_img_s_head_{head}"] = rate[0]
        return tuple(len(schedule) / sum(1.0 / rates[h][i] for h in schedule) for i in (0, 1))

    def repeat(ds):
        return ds.repeat() if hasattr(ds, "repeat") else ds

    out = {"batch_images": n, "copies": r, "trunk_images_per_step": per_step}
    if isinstance(est, IICHog):
        feats = np.random.default_rng(0).standard_normal((1 + r, len(x), est.params["pca_dim"])).astype("float32")
        shape = feats.shape[2:]
        data, xv = repeat(feature_view_batches(feats, n, shuffle=False)), feats.reshape(-1, feats.shape[-1])
    else:
        shape = x.shape[1:]
        data = repeat(est.batches(x, shuffle=False, pairs=True))
        xv = np.concatenate([keras.ops.convert_to_numpy(est.views(shape)[2](x.astype("float32")))] * (1 + r))
    net = est.build(shape)
    out["iic_img_s"], out["iic_img_cpu_s"] = timed_heads(est.trainers(net, steps, x.shape[1:]), data)
    plain = keras.Sequential([est.trunk(shape)[0],
                              keras.layers.Dense(est.n_clusters, activation="softmax")], name="plain")
    plain.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    yv = np.random.default_rng(0).integers(0, est.n_clusters, len(xv))
    wall = cpu = float("inf")
    for _ in range(repeats + 1):  # first: warm-up
        t, c = time.perf_counter(), time.process_time()
        plain.fit(xv, yv, batch_size=per_step, epochs=1, verbose=0, shuffle=False)
        wall, cpu = min(wall, time.perf_counter() - t), min(cpu, time.process_time() - c)
    out["plain_img_s"], out["plain_img_cpu_s"] = len(xv) / wall, len(xv) / cpu
    tf = None if isinstance(est, IICHog) else training.tensorflow_or_none()
    if tf is not None:  # the copies made inside the training step, as on an accelerator
        original, perturbed, _ = est.views(x.shape[1:])
        inside = {head: IICModel(net.trunk, h, est.params["lamb"], (original, perturbed, r)) for head, h in net.heads.items()}
        for model in inside.values():
            model.compile(optimizer="adam")
        raw = tf.data.Dataset.from_tensor_slices(x.astype("float32")).batch(n, drop_remainder=True).repeat()
        out["in_model_img_s"], out["in_model_img_cpu_s"] = timed_heads(inside, raw, "in_model_")
    out["ratio"] = out["iic_img_s"] / out["plain_img_s"]
    out["ratio_cpu"] = out["iic_img_cpu_s"] / out["plain_img_cpu_s"]
    return out


def suite_name(dataset: str, profile: str, test: str | None = None) -> str:
    """'<dataset>-<profile>': the file stem of a suite's results ('npz:../x/gtsrb_train_32.npz' -> 'gtsrb')."""
    kind, _, arg = dataset.partition(":")
    name = re.split(r"[_-](train|test)", Path(arg.rstrip("/")).stem)[0] if arg else kind
    test_name = suite_name(test, profile).rsplit("-", 1)[0] if test else name
    if test_name != name:  # fit on one dataset, score on another
        name += "-" + test_name
    return f"{name}-{profile}"


def run_all(dataset: str = "synthetic-signs", test: str | None = None, profile=None, seeds: int = 1,
            methods=None, out_dir="results", name: str | None = None, **kw) -> list[dict]:
    """Every registered method (or `methods`) x `seeds` seeds on one dataset: the kit's comparison.

    Each run is written to results/<name>/<method>-seed<N>.json as soon as it ends, so an interrupted suite
    resumes where it stopped (finished runs are read back, not rerun); then `report` writes
    results/<name>.json, results/<name>.md and the figures. Methods that cannot run here (pretrained
    weights offline) are reported as skipped, with why.
    """
    from .methods import available

    prof = runtime.setup(0, profile, verbose=True).profile.name  # the profile is printed first
    folder = Path(out_dir) / (name or suite_name(dataset, prof, test))
    skipped = []
    for m in methods or available():
        for seed in range(seeds):
            path = folder / f"{m}-seed{seed}.json"
            if path.is_file():
                print(f"{m} seed {seed}: done earlier ({path})")
                continue
            print(f"{m} seed {seed}: running", flush=True)
            try:
                run(m, dataset, test=test, profile=prof, seed=seed, verbose=False, out=path, **kw)
            except (ConnectionError, FileNotFoundError, OSError) as e:  # e.g. pretrained weights offline
                skipped.append({"method": m, "seed": seed, "error": f"{type(e).__name__}: {e}"})
                print(f"SKIPPED {m}: {type(e).__name__}: {e}")
                break
    summary = report(folder, skipped=skipped)
    print(Path(summary["markdown"]).read_text())
    return summary["runs"]


def run_label(r: dict) -> str:
    """The method's name, with the options a run set on top of its profile's preset: `scan-hog+cnn
    (overcluster=2)`. Every table says what ran."""
    opts = ", ".join(f"{k}={v}" for k, v in (r.get("options") or {}).items())
    return r["method"] + (f" ({opts})" if opts else "")


def same_data(dataset: str | None) -> str | None:
    """`npz:PATH` by its file name: one file given by an absolute path in one run and a relative one in another."""
    return f"npz:{Path(dataset[4:]).name}" if dataset and dataset.startswith("npz:") else dataset


def summarise(runs: list[dict]) -> list[dict]:
    """One row per (method and its options, dataset, protocol, profile): mean and std over seeds of ACC, NMI,
    ARI, seconds."""
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        groups.setdefault((run_label(r), same_data(r["dataset"]), same_data(r.get("test_dataset")), r["profile"]),
                          []).append(r)
    rows = []
    for (label, dataset, test, profile), rs in groups.items():
        row = {"method": rs[0]["method"], "label": label, "options": rs[0].get("options") or {},
               "dataset": rs[0]["dataset"], "test_dataset": rs[0].get("test_dataset"), "profile": profile,
               "protocol": rs[0].get("protocol"), "n_train": rs[0].get("n_train"), "n_eval": rs[0].get("n_eval"),
               "k": rs[0].get("k"), "seeds": sorted(r["seed"] for r in rs), "device": rs[0].get("device"),
               "date": max(r.get("date", "") for r in rs)}
        for key in ("acc", "nmi", "ari", "seconds", "cpu_seconds"):
            vals = np.array([r[key] for r in rs if r.get(key) is not None], float)
            row[key] = float(vals.mean()) if len(vals) else None
            row[key + "_std"] = float(vals.std()) if len(vals) > 1 else 0.0 if len(vals) else None
        row["warnings"] = sorted({r["warning"] for r in rs if r.get("warning")})
        rows.append(row)
    return sorted(rows, key=lambda r: -(r["acc"] or 0))


def summary_table(rows: list[dict]) -> str:
    """Markdown: ACC, NMI, ARI as mean ± std over the seeds, seconds, machine and date."""
    def pm(r, key):
        if r[key] is None:
            return "-"
        return f"{r[key]:.3f}" + (f" ± {r[key + '_std']:.3f}" if len(r["seeds"]) > 1 else "")

    cols = ["method", "ACC", "NMI", "ARI", "seconds", "CPU s", "seeds", "n_train", "n_eval", "k", "protocol",
            "device", "date"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = [r.get("label", r["method"]) + (" ⚠" if r["warnings"] else ""), pm(r, "acc"), pm(r, "nmi"), pm(r, "ari"),
                 _secs(r["seconds"]), _secs(r["cpu_seconds"]), str(len(r["seeds"])), _fmt(r["n_train"]),
                 _fmt(r["n_eval"]), _fmt(r["k"]), _fmt(r["protocol"]).split(" (")[0], _fmt(r["device"]), _fmt(r["date"])[:10]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


STEPS_INTRO = ("Step by step (mean ± std over seeds; the ACC after each step is on the scored images; wall seconds "
               "per step):")


def steps_table(runs: list[dict]) -> str:
    """Markdown for multi-step methods (SCAN and its students): per method, mean ± std over seeds of the score on
    the images fitted (`fitted`, hold-out runs only) and on the images scored, the ACC after each step, and the
    wall seconds each step took (the run's `log`). Empty when no run records `steps`."""
    groups: dict[str, list[dict]] = {}
    for r in runs:
        if r.get("steps"):
            groups.setdefault(run_label(r), []).append(r)
    if not groups:
        return ""

    def pm(vals):
        vals = np.array([v for v in vals if v is not None], float)
        return "-" if not len(vals) else f"{vals.mean():.3f}" + (f" ± {vals.std():.3f}" if len(vals) > 1 else "")

    lines = []
    for method, rs in groups.items():
        steps = list(rs[0]["steps"])
        secs = [k for k in rs[0].get("log", {}) if k.endswith("_seconds")]
        cols = ["method", "seeds", "ACC / NMI fitted images", "ACC / NMI scored images"]
        cols += [f"ACC after {s}" for s in steps] + [f"{k.removesuffix('_seconds')} s" for k in secs]
        fitted = [pm(r.get("fitted", {}).get(m) for r in rs) for m in ("acc", "nmi")]
        cells = [method, str(len(rs)), " / ".join(fitted) if fitted[0] != "-" else "-",
                 f"{pm(r['acc'] for r in rs)} / {pm(r['nmi'] for r in rs)}"]
        cells += [pm(r["steps"].get(s, {}).get("acc") for r in rs) for s in steps]
        cells += [_secs(float(np.mean([r["log"].get(k, np.nan) for r in rs]))) for k in secs]
        lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols), "| " + " | ".join(cells) + " |", ""]
    return "\n".join(lines)


def print_table(results: list[dict]) -> None:
    cols = ["method", "dataset", "profile", "n_train", "n_eval", "k", "acc", "nmi", "ari", "seconds"]
    rows = [[_fmt(r.get(c)) for c in cols] for r in results]
    widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(cols)]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
    for row in rows:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)))
    for r in results:
        if r.get("warning"):
            print(f"WARNING {r['method']}: {r['warning']}")


def write_json(path, obj) -> Path:
    """Write JSON atomically (temporary file, then rename): an interrupted run leaves no half file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=2)
    os.replace(tmp, path)
    return path


def load_runs(folder) -> list[dict]:
    """Every run JSON in a suite folder (each written by the benchmark command)."""
    runs = []
    for f in sorted(Path(folder).glob("*.json")):
        data = json.loads(f.read_text())
        runs += data if isinstance(data, list) else [data]
    return [r for r in runs if "acc" in r]


def report(folder, skipped=()) -> dict:
    """From the run JSONs in `folder` (results/<name>/), write results/<name>.json (runs + per-method
    summary), results/<name>.md (the table, mean ± std over seeds) and results/<name>-scores.png /
    -time.png. Returns the written summary with the paths."""
    folder = Path(folder)
    runs = load_runs(folder)
    if not runs:
        raise FileNotFoundError(f"no result JSON in {folder}: run `python -m course_lib benchmark --all ...` "
                                "or `benchmark --method M --out {folder}/M-seed0.json` first")
    rows = summarise(runs)
    steps = steps_table(runs)
    base = folder.parent / folder.name
    figures = _figures(rows, base)
    text = (f"# Results: {folder.name}\n\nWritten by `python -m course_lib report {folder.as_posix()}` from the "
            f"{len(runs)} run JSONs in `{folder.name}/` (each written by `python -m course_lib benchmark`).\n"
            f"ACC is Hungarian-matched accuracy; supervised-cnn is the labelled upper reference.\n\n"
            + summary_table(rows)
            + (f"\n{STEPS_INTRO}\n\n{steps}" if steps else "")
            + "".join(f"\n- {r['method']}: {w}" for r in rows for w in r["warnings"])
            + "".join(f"\n- skipped {s['method']}: {s['error']}" for s in skipped)
            + "".join(f"\n\n![{Path(f).stem}]({Path(f).name})" for f in figures) + "\n")
    md = base.with_suffix(".md")
    md.write_text(text)
    summary = {"name": folder.name, "summary": rows, "steps_table": steps, "runs": runs, "skipped": list(skipped),
               "markdown": str(md), "figures": [str(f) for f in figures]}
    write_json(base.with_suffix(".json"), summary)
    write_index(base.parent)
    return summary


RESULTS_ENV = "COURSE_RESULTS"


def published_results(cache=None) -> Path:
    """The kit's results/ folder, wherever a notebook runs: $COURSE_RESULTS; the checkout the library is imported
    from (a clone, an editable install); else the repository pip installed the package from (its
    direct_url.json: a local folder, or a GitHub repository at a commit, whose results/ files listed in
    results/index.json are fetched once into `cache`, default data/results)."""
    if os.environ.get(RESULTS_ENV):
        return Path(os.environ[RESULTS_ENV])
    here = Path(__file__).resolve().parents[1] / "results"
    if (here / "index.json").is_file() or any(here.glob("*.json")):
        return here
    import importlib.metadata as md

    try:
        origin = json.loads(md.distribution("course_lib").read_text("direct_url.json") or "{}")
    except md.PackageNotFoundError:
        origin = {}
    url = origin.get("url", "")
    if url.startswith("file:"):  # a local clone (file:///path or file://localhost/path)
        from urllib.parse import unquote, urlparse

        return Path(unquote(urlparse(url).path)) / "results"
    m = re.match(r"https://github\.com/([^/]+/[^/]+?)(\.git)?/?$", url)
    if not m:
        raise FileNotFoundError(f"no results/ folder beside the library and no repository to fetch it from "
                                f"(installed from {url or 'an unknown place'}): set {RESULTS_ENV}=PATH")
    ref = origin.get("vcs_info", {}).get("commit_id", "main")
    from .data import data_dir

    return fetch_results(f"https://raw.githubusercontent.com/{m.group(1)}/{ref}/results",
                         Path(cache) if cache else data_dir() / "results" / ref[:12])


def published_summary(name: str) -> dict | None:
    """The kit's published summary of suite `name` (e.g. "gtsrb-standard": runs and mean ± std per method), or
    None with the reason printed (offline, not published): for notebooks that quote the kit's own results."""
    try:
        path = published_results() / f"{name}.json"
        return json.loads(path.read_text())
    except (OSError, ConnectionError, ValueError) as e:
        print(f"the kit's {name} results are not available here: {e}")
        return None


def summary_rows(summary: dict | None, methods=None) -> dict:
    """{method: row} of a published summary (ACC, NMI, ARI mean and std, seeds, CPU seconds), for `methods` or all;
    a row whose run set options on top of its preset is keyed by its label, `method (key=value)`."""
    if not summary:
        return {}
    return {r.get("label", r["method"]): r for r in summary["summary"]
            if methods is None or r.get("label", r["method"]) in methods}


def fetch_results(base_url: str, folder: Path) -> Path:
    """Download results/index.json and the files it lists from `base_url` into `folder` (once)."""
    import urllib.request

    if (folder / "index.json").is_file():
        return folder
    try:
        index = json.loads(urllib.request.urlopen(f"{base_url}/index.json", timeout=20).read())
        for name in index["files"]:
            data = urllib.request.urlopen(f"{base_url}/{name}", timeout=20).read()
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(data)
    except OSError as e:
        raise ConnectionError(f"could not fetch the kit's published results from {base_url} ({e}). Offline? "
                              f"Turn on the notebook's Internet (Kaggle), or set {RESULTS_ENV} to a results/ "
                              "folder, or run the benchmark command to make your own") from None
    write_json(folder / "index.json", index)
    return folder


def write_index(results_dir) -> Path:
    """results/index.json: the suite summaries and figures in results/ (what `fetch_results` downloads)."""
    results_dir = Path(results_dir)
    files = sorted(p.name for p in results_dir.glob("*") if p.is_file() and p.suffix in (".json", ".md", ".png")
                   and p.name != "index.json")
    return write_json(results_dir / "index.json", {"files": files})


def update_readme(readme, summary: dict) -> Path:
    """Replace the block between `<!-- results:NAME -->` and `<!-- /results:NAME -->` in `readme` with the
    suite's table (the markers are added at the end the first time)."""
    readme, name = Path(readme), summary["name"]
    start, end = f"<!-- results:{name} -->", f"<!-- /results:{name} -->"
    folder = Path(summary["markdown"]).with_suffix("")
    try:
        shown = folder.resolve().relative_to(readme.resolve().parent).as_posix()
    except ValueError:
        shown = folder.as_posix()
    block = (f"{start}\nWritten by `python -m course_lib report {shown} --readme {readme.name}` from the runs in "
             f"`{shown}/` (each from `python -m course_lib benchmark`):\n\n"
             f"{summary_table(summary['summary'])}"
             + (f"\n{STEPS_INTRO}\n\n{summary['steps_table']}" if summary.get("steps_table") else "") + end)
    text = readme.read_text() if readme.is_file() else ""
    if start in text and end in text:
        text = text[:text.index(start)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    readme.write_text(text)
    return readme


def _figures(rows: list[dict], base: Path) -> list[Path]:
    """<name>-scores.png (ACC/NMI/ARI bars, std over seeds) and <name>-time.png (seconds vs ACC)."""
    from . import viz

    paths = [base.parent / f"{base.name}-scores.png", base.parent / f"{base.name}-time.png"]
    viz.results_bars(rows, base.name).savefig(paths[0], dpi=110)
    viz.cost_vs_acc(rows, f"{base.name}: cost vs ACC").savefig(paths[1], dpi=110)
    return paths


def _secs(v) -> str:
    return "-" if v is None else f"{v:.0f}" if v >= 10 else f"{v:.1f}"


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3f}" if v < 100 else f"{v:.0f}"
    return "-" if v is None else str(v)


def provenance(info, est=None) -> dict:
    """What every result records beside its numbers: the method's parameters, backend, device, machine,
    library versions and the date."""
    return {"params": _jsonable(est.get_params()) if est is not None else {}, "backend": info.backend,
            "device": info.device,
            "machine": _machine(), "versions": runtime.versions(),
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}


def _machine() -> str:
    """CPU model, architecture, cores and OS: two '2-core CPU' machines can differ twofold in speed."""
    return f"{_cpu_model()}, {platform.machine()} {os.cpu_count()} cores, {platform.system()}"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _jsonable(d: dict) -> dict:
    return {k: (v if isinstance(v, (int, float, str, bool, type(None))) else str(v)) for k, v in d.items()}
