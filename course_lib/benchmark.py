"""The kit's main job: fit a method without labels, score it with labels, write the result as JSON.

    python -m course_lib benchmark --method pixels-kmeans --dataset npz:../shared/data/gtsrb_train_32.npz
"""
from __future__ import annotations

import datetime as dt
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from . import metrics, runtime
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
        out: str | Path | None = None, verbose: bool = True, image_size: int | None = None) -> dict:
    """Fit `method` on `dataset`, score it, print a line and (optionally) write JSON. Returns the result."""
    info = runtime.setup(seed, profile, verbose=verbose)
    cls = get_method(method)
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
        **scores, "seconds": round(seconds, 2), "fit_seconds": round(fit_seconds, 2),
        "cpu_seconds": round(cpu_seconds, 2),  # CPU time of all threads: wall time / cores on a busy machine
        "params": _jsonable(est.get_params()), "profile_settings": info.profile.asdict(),
        "backend": info.backend, "device": info.device, "machine": _machine(), "versions": runtime.versions(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if hasattr(est, "predict_steps"):  # multi-step methods (SCAN): the score after each step
        result["steps"] = {step: {k: v for k, v in metrics.evaluate(ev.y, lab).items() if k in ("acc", "nmi", "ari")}
                           for step, lab in est.predict_steps(ev.x).items()}
    if getattr(est, "log_", None):
        result["log"] = json.loads(json.dumps(est.log_, default=float))
    if scores["largest_cluster"] > max(0.5, 3 * scores["largest_class"]) and not cls.predicts_labels:
        result["warning"] = (f"collapse: one cluster holds {scores['largest_cluster']:.0%} of the images "
                             f"(largest class {scores['largest_class']:.0%})")
    if verbose:
        print_table([result])
    if out:
        write_json(out, result)
    return result


def run_all(dataset: str = "synthetic-signs", profile=None, seed: int = 0, out=None, **kw) -> list[dict]:
    """Every registered method on one dataset (the README's 'run it' command)."""
    from .methods import available

    results = []
    for m in available():
        try:
            results.append(run(m, dataset, profile=profile, seed=seed, verbose=False, **kw))
        except (ConnectionError, FileNotFoundError, OSError) as e:  # e.g. pretrained weights offline
            results.append({"method": m, "dataset": dataset, "error": f"{type(e).__name__}: {e}"})
    print_table([r for r in results if "error" not in r])
    for r in results:
        if "error" in r:
            print(f"SKIPPED {r['method']}: {r['error']}")
    if out:
        write_json(out, results)
    return results


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


def markdown_table(results: list[dict]) -> str:
    """A Markdown table of benchmark results (one row each), with profile, machine and date."""
    cols = ["method", "dataset", "protocol", "profile", "n_train", "n_eval", "k", "acc", "nmi", "ari", "seconds",
            "cpu_seconds", "device", "date"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in results:
        lines.append("| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def report(folder) -> Path:
    """Write folder/README.md: the table of every result JSON in the folder."""
    folder = Path(folder)
    results = []
    for f in sorted(folder.glob("*.json")):
        data = json.loads(f.read_text())
        results += data if isinstance(data, list) else [data]
    out = folder / "README.md"
    text = (f"# Results in {folder.name}\n\nWritten by `python -m course_lib report {folder}` from the JSON files "
            f"beside it (each from `python -m course_lib benchmark ... --out`).\n\n" + markdown_table(results))
    out.write_text(text)
    return out


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3f}" if v < 100 else f"{v:.0f}"
    return "-" if v is None else str(v)


def _machine() -> str:
    return f"{platform.machine()} {os.cpu_count()} cores, {platform.system()}"


def _jsonable(d: dict) -> dict:
    return {k: (v if isinstance(v, (int, float, str, bool, type(None))) else str(v)) for k, v in d.items()}
