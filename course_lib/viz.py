"""Figures for the notebooks: image grids, class and cluster grids, class counts, confusion heat maps,
training curves and the cluster-size (collapse) check.

Every function builds and returns a matplotlib Figure with the object-oriented API: no pyplot state, no
plt.show(), so it works under the Agg backend, in scripts (`fig.savefig(...)`) and in notebooks (a Figure
as the last expression of a cell is drawn once). Images are uint8 N x H x W x C with C = 1 or 3.
"""
from __future__ import annotations

import io
import math
import textwrap

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

TILE = 1.1  # inches per image tile


class NotebookFigure(Figure):
    """A Figure that draws itself as a PNG in Jupyter, with or without `%matplotlib inline`."""

    def _repr_png_(self) -> bytes:
        buf = io.BytesIO()
        self.savefig(buf, format="png", bbox_inches="tight")
        return buf.getvalue()


def _figure(width: float, height: float) -> Figure:
    return NotebookFigure(figsize=(width, height), layout="constrained")


def _show_image(ax, img: np.ndarray) -> None:
    """Draw one uint8 HxWxC image (C=1: grey) without ticks."""
    img = np.asarray(img)
    if img.ndim == 3 and img.shape[-1] == 1:
        ax.imshow(img[..., 0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    else:
        ax.imshow(img, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    for side in ax.spines.values():
        side.set_visible(False)


def _short(name: str, width: int = 16, lines: int = 2) -> str:
    """A class name wrapped to fit above a tile ('No passing for vehicles over...' -> 2 short lines)."""
    return "\n".join(textwrap.wrap(str(name), width, max_lines=lines, placeholder="…"))


def _sample(idx: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    return idx if len(idx) <= n else rng.choice(idx, n, replace=False)


def image_grid(x, labels=None, titles=None, n_cols: int = 10, class_names=None, title: str | None = None,
               tile: float = TILE) -> Figure:
    """A grid of images, n_cols a row; each titled by `titles[i]`, else by `labels[i]` (through class_names)."""
    x = np.asarray(x)
    n = len(x)
    if n == 0:
        raise ValueError("image_grid needs at least one image")
    n_cols = max(1, min(n_cols, n))
    n_rows = math.ceil(n / n_cols)
    titled = titles is not None or labels is not None
    fig = _figure(n_cols * tile, n_rows * (tile + (0.3 if titled else 0)) + (0.3 if title else 0))
    axes = fig.subplots(n_rows, n_cols, squeeze=False).ravel()
    for i, ax in enumerate(axes):
        if i >= n:
            fig.delaxes(ax)
            continue
        _show_image(ax, x[i])
        text = None
        if titles is not None:
            text = str(titles[i])
        elif labels is not None:
            lab = int(labels[i])
            text = _short(class_names[lab]) if class_names is not None else str(lab)
        if text:
            ax.set_title(text, fontsize=6)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def class_grid(x, y, class_names, per_class: int = 1, n_cols: int = 11, seed: int = 0,
               classes=None, tile: float = TILE) -> Figure:
    """Examples of every class: per_class=1 gives one titled tile a class (n_cols a row);
    per_class>1 gives one row a class, labelled with its name. Missing classes show an empty tile."""
    x, y = np.asarray(x), np.asarray(y)
    rng = np.random.default_rng(seed)
    classes = list(range(len(class_names))) if classes is None else list(classes)
    picks = {c: _sample(np.flatnonzero(y == c), per_class, rng) for c in classes}
    if per_class == 1:
        n_cols = max(1, min(n_cols, len(classes)))
        n_rows = math.ceil(len(classes) / n_cols)
        fig = _figure(n_cols * tile, n_rows * (tile + 0.3))
        axes = fig.subplots(n_rows, n_cols, squeeze=False).ravel()
        for i, ax in enumerate(axes):
            if i >= len(classes):
                fig.delaxes(ax)
                continue
            c = classes[i]
            _tile(ax, x, picks[c][:1])
            ax.set_title(f"{c}: {_short(class_names[c], 14)}", fontsize=5.5)
        return fig
    fig = _figure(per_class * tile * 0.8 + 1.6, len(classes) * tile * 0.8)
    axes = fig.subplots(len(classes), per_class, squeeze=False)
    for row, c in zip(axes, classes):
        for j, ax in enumerate(row):
            _tile(ax, x, picks[c][j:j + 1])
        row[0].set_ylabel(f"{c}: {_short(class_names[c], 18)}", fontsize=6, rotation=0, ha="right", va="center")
    return fig


def _tile(ax, x, idx) -> None:
    """The image x[idx[0]], or an empty framed tile when idx is empty."""
    if len(idx):
        _show_image(ax, x[idx[0]])
    else:
        _show_image(ax, np.full(x.shape[1:], 255, np.uint8))
        ax.text(0.5, 0.5, "none", ha="center", va="center", fontsize=6, transform=ax.transAxes)


def cluster_grid(x, clusters, n_clusters_shown: int = 10, per_cluster: int = 10, y=None, class_names=None,
                 seed: int = 0, tile: float = TILE) -> Figure:
    """Random members of the largest clusters, one row a cluster, largest first.

    With true labels y each row also names the cluster's majority class and its share (purity).
    """
    x, clusters = np.asarray(x), np.asarray(clusters)
    rng = np.random.default_rng(seed)
    ids, sizes = np.unique(clusters, return_counts=True)
    order = ids[np.argsort(-sizes, kind="stable")][:n_clusters_shown]
    fig = _figure(per_cluster * tile * 0.8 + 1.8, len(order) * tile * 0.8)
    axes = fig.subplots(len(order), per_cluster, squeeze=False)
    for row, c in zip(axes, order):
        members = np.flatnonzero(clusters == c)
        pick = _sample(members, per_cluster, rng)
        for j, ax in enumerate(row):
            if j < len(pick):
                _show_image(ax, x[pick[j]])
            else:
                ax.axis("off")
        label = f"cluster {c}\nn={len(members)}"
        if y is not None:
            counts = np.bincount(np.asarray(y)[members])
            top = int(counts.argmax())
            name = _short(class_names[top], 16, 1) if class_names is not None else str(top)
            label += f"\n{name} {counts[top] / len(members):.0%}"
        row[0].set_ylabel(label, fontsize=6, rotation=0, ha="right", va="center")
    return fig


def class_histogram(y, class_names=None, n_classes: int | None = None, title: str | None = None) -> Figure:
    """Images per class as bars (one tick a class), with the max/min imbalance ratio in the title."""
    y = np.asarray(y).astype(np.int64)
    n = n_classes or (len(class_names) if class_names is not None else int(y.max()) + 1)
    counts = np.bincount(y, minlength=n)
    fig = _figure(max(5.0, 0.16 * n + 1.5), 3.0)
    ax = fig.subplots()
    ax.bar(np.arange(n), counts, color="tab:blue", width=0.8)
    ax.axhline(counts.mean(), color="tab:red", lw=1, ls="--", label=f"mean {counts.mean():.0f}")
    ax.set_xticks(np.arange(n))
    ax.set_xticklabels([str(i) for i in range(n)], fontsize=6 if n > 20 else 8)
    ax.set_xlim(-0.7, n - 0.3)
    ax.set_xlabel("class id")
    ax.set_ylabel("images")
    nonzero = counts[counts > 0]
    ratio = nonzero.max() / nonzero.min() if len(nonzero) else float("nan")
    ax.set_title(title or f"{len(y)} images, {len(nonzero)} classes, largest/smallest = {ratio:.1f}", fontsize=9)
    ax.legend(fontsize=7)
    return fig


def confusion_heatmap(cm, class_names=None, normalize: bool = True, title: str | None = None,
                      annot: bool | None = None) -> Figure:
    """Seaborn heat map of a (true x predicted) confusion matrix; rows normalised to recall by default.

    Every class gets a tick (small fonts for 43 classes); numbers are written in the cells up to 12 classes.
    """
    import seaborn as sns

    cm = np.asarray(cm, dtype=np.float64)
    n = cm.shape[0]
    if normalize:
        cm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    annot = n <= 12 if annot is None else annot
    side = max(4.0, 0.2 * n + 2.5)
    fig = _figure(side + 1.0, side)
    ax = fig.subplots()
    fs = 8 if n <= 20 else 5
    sns.heatmap(cm, ax=ax, cmap="viridis", vmin=0, vmax=1 if normalize else None, square=True,
                annot=annot, fmt=".2f" if normalize else ".0f", annot_kws={"fontsize": fs},
                cbar_kws={"shrink": 0.7, "label": "share of the true class" if normalize else "images"},
                xticklabels=list(range(n)), yticklabels=_tick_names(class_names, n))
    ax.tick_params(axis="both", labelsize=fs, length=1)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or ("confusion matrix (rows: recall)" if normalize else "confusion matrix"), fontsize=9)
    return fig


def _tick_names(class_names, n: int):
    if class_names is None:
        return list(range(n))
    return [f"{i} {textwrap.shorten(str(name), 24, placeholder='…')}" for i, name in enumerate(class_names[:n])]


def training_curves(history, title: str | None = None, skip=("seconds", "epoch", "learning_rate", "lr")) -> Figure:
    """Per-epoch curves from a Keras history dict (or History), one axis per metric family:
    `loss` and `val_loss` share an axis, `accuracy` and `val_accuracy` another, and so on.

    A dict of named histories ({"seed CNN": h1, "small CNN": h2}) overlays several runs. The mean
    seconds per epoch (history['seconds'], from training.EpochTimer) go into the legend.
    """
    runs = _as_runs(history)
    families: list[str] = []
    for h in runs.values():
        for key in h:
            fam = key[4:] if key.startswith("val_") else key
            if fam not in skip and fam not in families:
                families.append(fam)
    if not families:
        raise ValueError(f"no metric to plot in the history (keys: {[list(h) for h in runs.values()]})")
    fig = _figure(3.6 * len(families), 3.0)
    axes = np.atleast_1d(fig.subplots(1, len(families)))
    colours = {name: f"C{i}" for i, name in enumerate(runs)}
    for ax, fam in zip(axes, families):
        for name, h in runs.items():
            label = name or "train"
            if name and h.get("seconds"):
                label += f" ({np.mean(h['seconds']):.1f} s/epoch)"
            if fam in h:
                ax.plot(np.arange(1, len(h[fam]) + 1), h[fam], color=colours[name], marker=".", label=label)
            if "val_" + fam in h:
                ax.plot(np.arange(1, len(h["val_" + fam]) + 1), h["val_" + fam], color=colours[name],
                        ls="--", marker=".", label=(name + " " if name else "") + "validation")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(fam, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def _as_runs(history) -> dict[str, dict]:
    """{name: {metric: [values]}} from one history (dict or keras History) or a dict of them."""
    history = getattr(history, "history", history)
    if history and all(isinstance(getattr(v, "history", v), dict) for v in history.values()):
        return {str(k): dict(getattr(v, "history", v)) for k, v in history.items()}
    return {"": dict(history)}


def cluster_size_bars(y_pred, y_true=None, title: str | None = None) -> Figure:
    """Cluster sizes sorted largest first, beside the sorted class sizes: the collapse check.

    A healthy clustering follows the class-size curve; a collapsed one has a few huge bars and many
    empty clusters.
    """
    y_pred = np.asarray(y_pred).astype(np.int64)
    sizes = np.sort(np.bincount(y_pred))[::-1]
    fig = _figure(max(5.0, 0.12 * len(sizes) + 2.0), 3.0)
    ax = fig.subplots()
    pos = np.arange(len(sizes))
    ax.bar(pos, sizes, width=0.8, color="tab:orange", label=f"clusters ({(sizes > 0).sum()} non-empty)")
    if y_true is not None:
        classes = np.sort(np.bincount(np.asarray(y_true).astype(np.int64)))[::-1]
        ax.step(np.arange(len(classes)), classes, where="mid", color="tab:blue", lw=1.5,
                label=f"classes ({len(classes)})")
    ax.set_xlabel("rank (largest first)")
    ax.set_ylabel("images")
    share = sizes[0] / max(len(y_pred), 1)
    ax.set_title(title or f"cluster sizes, sorted: largest holds {share:.0%} of the images", fontsize=9)
    ax.legend(fontsize=7)
    return fig


def results_bars(rows: list[dict], title: str | None = None, references: dict | None = None) -> Figure:
    """ACC / NMI / ARI per method (rows from `benchmark.summarise`), error bars = std over seeds; optional
    horizontal reference lines {label: ACC} (e.g. the seeds' published numbers)."""
    fig = _figure(max(6.0, 0.9 * len(rows) + 2), 3.8)
    ax = fig.subplots()
    pos, width = np.arange(len(rows)), 0.27
    for i, key in enumerate(("acc", "nmi", "ari")):
        ax.bar(pos + (i - 1) * width, [r[key] or 0 for r in rows], width,
               yerr=[r.get(key + "_std") or 0 for r in rows], capsize=2, label=key.upper())
    for j, (label, acc) in enumerate((references or {}).items()):
        ax.axhline(acc, color="0.3", lw=0.8, ls=(0, (4, 2 + j)))
        ax.annotate(label, (len(rows) - 0.5, acc), fontsize=7, ha="right", va="bottom", color="0.3")
    ax.set_xticks(pos, [r.get("label", r["method"]) for r in rows], rotation=30, ha="right")
    ax.set(ylim=(0, 1), ylabel="score", title=title)
    ax.legend(ncols=3, loc="upper right", fontsize=8)
    return fig


def cost_vs_acc(rows: list[dict], title: str | None = None) -> Figure:
    """Wall seconds (log scale) against ACC, one labelled point per method."""
    fig = _figure(6.0, 4.0)
    ax = fig.subplots()
    for r in rows:
        ax.errorbar(r["seconds"], r["acc"], yerr=r.get("acc_std") or 0, fmt="o", capsize=2)
        ax.annotate(r.get("label", r["method"]), (r["seconds"], r["acc"]), fontsize=8, xytext=(4, 3), textcoords="offset points")
    ax.set(xscale="log", xlabel="seconds (fit + predict, wall)", ylabel="ACC", ylim=(0, 1), title=title)
    return fig
