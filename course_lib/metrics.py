"""Scoring a clustering against true labels: mappings, ACC, NMI, ARI, top-5, confusion matrices.

A clustering numbers its clusters arbitrarily, so accuracy needs a cluster -> class mapping first:
- Hungarian (one-to-one, the standard 'ACC' of the papers): the assignment maximising matches;
- majority vote (many-to-one: each cluster takes its most frequent class; what seed 000 did by hand).
  With over-clustering (k > classes) many-to-one is the only possible mapping, but it flatters:
  with one cluster per image it reaches 1.0. It is reported separately, never as ACC.
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score


def _as_labels(y) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"labels must be a 1-D array, got shape {y.shape}")
    return y.astype(np.int64)


def contingency(y_true, y_pred) -> np.ndarray:
    """counts[i, j] = number of samples in cluster i with true class j."""
    y_true, y_pred = _as_labels(y_true), _as_labels(y_pred)
    if len(y_true) != len(y_pred):
        raise ValueError(f"y_true has {len(y_true)} labels but y_pred has {len(y_pred)}")
    counts = np.zeros((y_pred.max() + 1, y_true.max() + 1), dtype=np.int64)
    np.add.at(counts, (y_pred, y_true), 1)
    return counts


def hungarian_mapping(y_true, y_pred) -> dict[int, int]:
    """One-to-one cluster -> class mapping maximising the number of matches (Kuhn-Munkres)."""
    counts = contingency(y_true, y_pred)
    rows, cols = linear_sum_assignment(counts, maximize=True)
    return {int(r): int(c) for r, c in zip(rows, cols)}


def majority_mapping(y_true, y_pred) -> dict[int, int]:
    """Many-to-one mapping: every non-empty cluster takes its most frequent true class."""
    counts = contingency(y_true, y_pred)
    return {int(i): int(np.argmax(row)) for i, row in enumerate(counts) if row.sum() > 0}


def apply_mapping(y_pred, mapping: dict[int, int], unmapped: int = -1) -> np.ndarray:
    """Translate cluster ids to class ids; clusters without a partner become `unmapped` (always wrong)."""
    y_pred = _as_labels(y_pred)
    lut = np.full(y_pred.max() + 1, unmapped, dtype=np.int64)
    for cluster, cls in mapping.items():
        if cluster < len(lut):
            lut[cluster] = cls
    return lut[y_pred]


def hungarian_accuracy(y_true, y_pred) -> float:
    """ACC: accuracy after the best one-to-one matching of clusters to classes."""
    y_true = _as_labels(y_true)
    return float(np.mean(apply_mapping(y_pred, hungarian_mapping(y_true, y_pred)) == y_true))


def majority_accuracy(y_true, y_pred) -> float:
    """Accuracy after majority-vote (many-to-one) mapping. Not ACC: see the module docstring."""
    y_true = _as_labels(y_true)
    return float(np.mean(apply_mapping(y_pred, majority_mapping(y_true, y_pred)) == y_true))


def top_k_accuracy(y_true, proba, k: int = 5, mapping: dict[int, int] | None = None) -> float:
    """Top-k accuracy from cluster probabilities (N x C), after mapping clusters to classes.

    Without a mapping the Hungarian mapping of the arg-max prediction is used, as in SCAN's Table 4.
    """
    y_true, proba = _as_labels(y_true), np.asarray(proba)
    if mapping is None:
        mapping = hungarian_mapping(y_true, proba.argmax(1))
    top = np.argsort(-proba, axis=1)[:, :k]
    mapped = apply_mapping(top.ravel(), mapping).reshape(top.shape)
    return float(np.mean((mapped == y_true[:, None]).any(axis=1)))


def confusion_matrix(y_true, y_pred, n_classes: int | None = None, mapping: str = "hungarian") -> np.ndarray:
    """Confusion matrix (true class x predicted class) after mapping clusters to classes.

    mapping: 'hungarian', 'majority' or 'identity' (predictions already are class ids).
    Clusters left without a partner are dropped from the columns (counted as errors in ACC).
    """
    y_true = _as_labels(y_true)
    if mapping == "identity":
        mapped = _as_labels(y_pred)
    else:
        fn = hungarian_mapping if mapping == "hungarian" else majority_mapping
        mapped = apply_mapping(y_pred, fn(y_true, y_pred))
    n = n_classes or int(max(y_true.max(), mapped.max()) + 1)
    cm = np.zeros((n, n), dtype=np.int64)
    keep = mapped >= 0
    np.add.at(cm, (y_true[keep], mapped[keep]), 1)
    return cm


def cluster_sizes(y_pred, k: int | None = None) -> np.ndarray:
    y_pred = _as_labels(y_pred)
    return np.bincount(y_pred, minlength=k or 0)


def evaluate(y_true, y_pred, proba=None, predicts_labels: bool = False) -> dict:
    """All the scores of one clustering, as plain floats.

    acc: Hungarian ACC (or plain accuracy when predicts_labels, i.e. a supervised classifier);
    acc_majority: many-to-one accuracy (over-clustering; never called ACC); nmi, ari;
    top5 when probabilities are given; largest_cluster: share of the biggest cluster (collapse check).
    """
    y_true, y_pred = _as_labels(y_true), _as_labels(y_pred)
    sizes = cluster_sizes(y_pred)
    out = {
        "acc": float(np.mean(y_pred == y_true)) if predicts_labels else hungarian_accuracy(y_true, y_pred),
        "acc_majority": majority_accuracy(y_true, y_pred),
        "nmi": float(normalized_mutual_info_score(y_true, y_pred)),
        "ari": float(adjusted_rand_score(y_true, y_pred)),
        "n_clusters_used": int((sizes > 0).sum()),
        "largest_cluster": float(sizes.max() / len(y_pred)),
        "largest_class": float(np.bincount(y_true).max() / len(y_true)),
    }
    if proba is not None:
        proba = np.asarray(proba)
        mapping = {i: i for i in range(proba.shape[1])} if predicts_labels else None
        out["top5"] = top_k_accuracy(y_true, proba, 5, mapping) if proba.shape[1] > 5 else 1.0
    return out


def neighbour_accuracy(features, y, k: int = 10, groups=None, metric: str = "cosine") -> float:
    """Share of each image's k nearest neighbours (cosine, never itself) that have its true label.

    What an embedding offers a neighbour-based method (kNN, SCAN's mining) before any clustering.
    groups (GTSRB track ids, `ds.groups`): neighbours from the image's own group are skipped. Frames of one
    track are near-duplicates, so without this the score mostly measures 'same track', not 'same class'.
    """
    from .clustering import nearest_neighbours

    y = _as_labels(y)
    idx = nearest_neighbours(features, k, metric=metric, groups=groups)
    return float(np.mean(y[idx] == y[:, None]))


# ---------------------------------------------------------------- judging a clustering without labels
def neighbour_consistency(y_pred, neighbours) -> float:
    """Share of each image's mined neighbours (N x k indices) that fall in its own cluster. No labels: how
    well a clustering respects the neighbourhoods it was trained on. A single cluster scores 1, so compare
    only clusterings with the same number of well-used clusters."""
    y_pred = _as_labels(y_pred)
    return float((y_pred[np.asarray(neighbours)] == y_pred[:, None]).mean())


def stability(runs) -> float:
    """Mean adjusted Rand index between every pair of clusterings of the same images (e.g. one per seed). No
    labels: a setting whose clusters come back whatever the seed found structure, not an accident of one run."""
    from itertools import combinations

    from sklearn.metrics import adjusted_rand_score

    pairs = [adjusted_rand_score(_as_labels(a), _as_labels(b)) for a, b in combinations(runs, 2)]
    if not pairs:
        raise ValueError("stability needs at least two clusterings of the same images")
    return float(np.mean(pairs))
