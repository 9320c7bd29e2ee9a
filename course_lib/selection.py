"""Choosing a setting without labels (issue 20).

An unsupervised method has settings (SCAN's entropy weight, how many neighbours it mines) and no labels to pick
them by. The rule here: fit every setting of a grid with several seeds and keep the setting whose clusterings
come back the same whatever the seed (`metrics.stability`, the mean pairwise ARI between the seeds' clusterings
of the same images), among the settings that deliver the K clusters asked for in every seed: fewer, larger
clusters agree across seeds more easily, so a setting that leaves clusters empty could win on stability alone.
Labels are used only afterwards, to show in the table what accuracy would have picked:

    python -m course_lib select --method scan-hog --dataset digits --grid entropy_weight=1,2,5 \\
        --grid n_neighbours=5,20 --seeds 3

Each run is written to results/<name>/ as soon as it ends (a restart resumes), then results/<name>.json and .md.
"""
from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

import keras
import numpy as np

from . import metrics, runtime
from .benchmark import prepare_data, provenance, write_index, write_json
from .methods import get_method


def settings(grid: dict) -> list[dict]:
    """Every combination of the grid's values: {'a': [1, 2], 'b': [5]} -> [{'a': 1, 'b': 5}, {'a': 2, 'b': 5}]."""
    keys = list(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def setting_name(setting: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in setting.items())


def fit_one(method: str, train, ev, k: int, profile, seed: int, options: dict) -> dict:
    """Fit one setting with one seed; its cluster labels of the evaluation images and what it cost."""
    keras.utils.set_random_seed(seed)
    est = get_method(method).for_profile(k, profile, seed, **options)
    t0, c0 = time.perf_counter(), time.process_time()
    est.fit(train.x)
    pred = np.asarray(est.predict(ev.x))
    run = {"seed": seed, "options": options, "predictions": pred.tolist(),
           "seconds": round(time.perf_counter() - t0, 2), "cpu_seconds": round(time.process_time() - c0, 2)}
    if getattr(est, "neighbours_", None) is not None and ev is train:  # SCAN: agreement with its own neighbours
        run["neighbour_consistency"] = metrics.neighbour_consistency(pred, est.neighbours_[:, :5])
    return run


def summarise_setting(runs: list[dict], y) -> dict:
    """Label-free: stability across the seeds, the clusters used (fewest over the seeds) and neighbour
    consistency; with labels, for display only: mean ACC / NMI."""
    preds = [np.asarray(r["predictions"]) for r in runs]
    scores = [metrics.evaluate(y, p) for p in preds]
    row = {"seeds": [r["seed"] for r in runs], "stability": metrics.stability(preds),
           "clusters_used": min(len(np.unique(p)) for p in preds),
           "acc": float(np.mean([s["acc"] for s in scores])), "acc_std": float(np.std([s["acc"] for s in scores])),
           "nmi": float(np.mean([s["nmi"] for s in scores])),
           "cpu_seconds": float(np.mean([r["cpu_seconds"] for r in runs]))}
    if all("neighbour_consistency" in r for r in runs):
        row["neighbour_consistency"] = float(np.mean([r["neighbour_consistency"] for r in runs]))
    return row


def choose(rows: list[dict], k: int) -> int:
    """The rule, without labels: the most stable row among those that use all k clusters in every seed (all
    rows when none does)."""
    full = [i for i, r in enumerate(rows) if r.get("clusters_used", k) >= k] or list(range(len(rows)))
    return max(full, key=lambda i: rows[i]["stability"])


def study(method: str, dataset: str, grid: dict, seeds: int = 3, test: str | None = None, profile=None,
          options: dict | None = None, out_dir="results", name: str | None = None,
          holdout: float | None = None, verbose: bool = True) -> dict:
    """Fit `method` with every setting of `grid` x `seeds` seeds; pick by stability; write the table.
    holdout: choose on the track-wise (1 - holdout) part only, the images a later `benchmark --holdout` run
    fits on; the held-out part is never seen, not even without its labels."""
    if seeds < 2:
        raise ValueError("stability compares clusterings across seeds: use --seeds 2 or more")
    info = runtime.setup(0, profile, verbose=verbose)
    train, ev, protocol = prepare_data(dataset, test, info.profile, 0, holdout, False)
    if holdout:
        ev, protocol = train, f"fit and scored on the track-wise {1 - holdout:.0%} a hold-out run fits on"
    name = name or f"{Path(dataset.partition(':')[2] or dataset).stem}-selection-{method}-{info.profile.name}"
    folder = Path(out_dir) / name
    rows = []
    for setting in settings(grid):
        runs = []
        for seed in range(seeds):
            path = folder / f"{setting_name(setting)}-seed{seed}.json"
            if path.is_file():
                runs.append(json.loads(path.read_text()))
                continue
            run = fit_one(method, train, ev, k=train.n_classes, profile=info.profile, seed=seed,
                          options={**(options or {}), **setting})
            write_json(path, run)
            runs.append(run)
            if verbose:
                print(f"{setting_name(setting)} seed {seed}: {run['cpu_seconds']:.0f} CPU s", flush=True)
        rows.append({"setting": setting, **summarise_setting(runs, ev.y)})
    by_stability = choose(rows, train.n_classes)
    by_acc = max(range(len(rows)), key=lambda i: rows[i]["acc"])
    summary = {"name": name, "method": method, "dataset": dataset, "test_dataset": test, "protocol": protocol,
               "profile": info.profile.name, "n_train": len(train), "n_eval": len(ev), "grid": grid,
               "k": train.n_classes,
               "rule": ("highest stability (mean pairwise ARI between the seeds' clusterings) among the settings "
                        "that use all K clusters in every seed; no labels"),
               "rows": rows, "chosen": rows[by_stability]["setting"], "best_by_acc": rows[by_acc]["setting"],
               "agrees": by_stability == by_acc,
               "acc_chosen": rows[by_stability]["acc"], "acc_best": rows[by_acc]["acc"], **provenance(info)}
    base = Path(out_dir) / name
    write_json(base.with_suffix(".json"), summary)
    base.with_suffix(".md").write_text(markdown(summary))
    write_index(base.parent)
    return summary


def markdown(summary: dict) -> str:
    """The study as a Markdown table; the chosen row in bold."""
    keys = list(summary["grid"])
    has_nc = all("neighbour_consistency" in r for r in summary["rows"])
    cols = (keys + ["stability (no labels)", f"clusters used (of {summary.get('k', '?')})"]
            + (["neighbour consistency"] if has_nc else []) + ["ACC", "NMI", "CPU s"])
    lines = [f"# Label-free selection: {summary['method']} on {summary['dataset']} ({summary['profile']})", "",
             f"Written by `python -m course_lib select` ({summary['date'][:10]}, {summary['device']}). "
             f"{len(summary['rows'][0]['seeds'])} seeds per setting; {summary['protocol']}, "
             f"{summary['n_eval']} images. Rule: {summary['rule']}. ACC (labels) is shown only to judge the rule.",
             "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in summary["rows"]:
        cells = [str(r["setting"][k]) for k in keys] + [f"{r['stability']:.3f}", str(r.get("clusters_used", "?"))]
        cells += [f"{r['neighbour_consistency']:.3f}"] if has_nc else []
        cells += [f"{r['acc']:.3f} ± {r['acc_std']:.3f}", f"{r['nmi']:.3f}", f"{r['cpu_seconds']:.0f}"]
        if r["setting"] == summary["chosen"]:
            cells = [f"**{c}**" for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    verdict = ("the same setting accuracy would have picked" if summary["agrees"] else
               f"not the setting accuracy would have picked ({setting_name(summary['best_by_acc'])}, "
               f"ACC {summary['acc_best']:.3f})")
    lines += ["", f"Stability picks {setting_name(summary['chosen'])} (ACC {summary['acc_chosen']:.3f}): {verdict}.", ""]
    return "\n".join(lines)
