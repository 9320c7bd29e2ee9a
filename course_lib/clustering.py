"""From images or feature vectors to cluster labels: the classical pipeline every method ends with.

pixels (optional centre crop, per-image standardisation) -> PCA (optionally whitened) -> L2 -> KMeans /
MiniBatchKMeans / GaussianMixture / agglomerative.
"""
from __future__ import annotations

import numpy as np
from sklearn.cluster import AgglomerativeClustering, KMeans, MiniBatchKMeans
from sklearn.decomposition import PCA
from sklearn.mixture import GaussianMixture
from sklearn.preprocessing import normalize

ALGORITHMS = ("kmeans", "minibatch", "gmm", "agglomerative")


def check_k(k: int, n: int) -> None:
    """k clusters need at least k samples."""
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"the number of clusters must be a positive integer, got {k!r}")
    if k > n:
        raise ValueError(f"cannot make {k} clusters from {n} samples: use k <= {n} or more images")


def pixel_features(x: np.ndarray, centre_crop: float = 1.0, standardise: bool = False) -> np.ndarray:
    """Flatten uint8 images to float32 vectors in [0, 1].

    centre_crop: the central fraction of the side to keep (GTSRB signs sit in the middle; borders are
    background). standardise: per-image zero mean / unit variance (removes brightness and contrast).
    """
    if not 0 < centre_crop <= 1:
        raise ValueError(f"centre_crop is a fraction of the side in (0, 1], got {centre_crop}")
    h, w = x.shape[1:3]
    ch, cw = max(1, round(h * centre_crop)), max(1, round(w * centre_crop))
    top, left = (h - ch) // 2, (w - cw) // 2
    f = x[:, top:top + ch, left:left + cw].reshape(len(x), -1).astype(np.float32) / 255.0
    if standardise:
        f = (f - f.mean(1, keepdims=True)) / (f.std(1, keepdims=True) + 1e-6)
    return f


class FeaturePipeline:
    """PCA (optionally whitened) then L2 normalisation, fitted on one set and applied to others."""

    def __init__(self, pca_dim: int | None = 50, whiten: bool = False, l2: bool = True, seed: int = 0):
        self.pca_dim, self.whiten, self.l2, self.seed = pca_dim, whiten, l2, seed

    def fit(self, f: np.ndarray) -> "FeaturePipeline":
        self.pca_ = None
        if self.pca_dim and self.pca_dim < f.shape[1]:
            dim = min(self.pca_dim, len(f))
            self.pca_ = PCA(dim, whiten=self.whiten, svd_solver="randomized", random_state=self.seed).fit(f)
        return self

    def transform(self, f: np.ndarray) -> np.ndarray:
        if self.pca_ is not None:
            f = self.pca_.transform(f)
        return normalize(f).astype(np.float32) if self.l2 else f.astype(np.float32)

    def fit_transform(self, f: np.ndarray) -> np.ndarray:
        return self.fit(f).transform(f)


def make_clusterer(k: int, algorithm: str = "kmeans", seed: int = 0, n_init: int = 10):
    """A scikit-learn clusterer with fit / predict (agglomerative predicts only what it was fitted on)."""
    if algorithm == "kmeans":
        return KMeans(k, n_init=n_init, random_state=seed)
    if algorithm == "minibatch":
        return MiniBatchKMeans(k, n_init=n_init, batch_size=4096, random_state=seed)
    if algorithm == "gmm":
        return GaussianMixture(k, covariance_type="diag", n_init=max(1, n_init // 5), random_state=seed)
    if algorithm == "agglomerative":
        return AgglomerativeClustering(k, linkage="ward")
    raise ValueError(f"unknown clustering algorithm {algorithm!r}: choose one of {ALGORITHMS}")


class FeatureClusterer:
    """Feature pipeline + clusterer: `fit(features)`, `predict(features)`, like every method of the kit."""

    def __init__(self, n_clusters: int, pca_dim: int | None = 50, whiten: bool = False, l2: bool = True,
                 algorithm: str = "kmeans", n_init: int = 10, seed: int = 0):
        self.n_clusters, self.algorithm, self.n_init, self.seed = n_clusters, algorithm, n_init, seed
        self.pipeline = FeaturePipeline(pca_dim, whiten, l2, seed)

    def fit(self, f: np.ndarray) -> "FeatureClusterer":
        check_k(self.n_clusters, len(f))
        z = self.pipeline.fit_transform(f)
        self.clusterer_ = make_clusterer(self.n_clusters, self.algorithm, self.seed, self.n_init)
        self.labels_ = np.asarray(self.clusterer_.fit_predict(z), np.int64)
        # agglomerative clustering has no out-of-sample rule: new points go to the nearest cluster mean
        self.centres_ = np.stack([z[self.labels_ == c].mean(0) for c in range(self.n_clusters)])
        return self

    def predict(self, f: np.ndarray) -> np.ndarray:
        z = self.pipeline.transform(f)
        if self.algorithm == "agglomerative":
            d = (z ** 2).sum(1, keepdims=True) - 2 * z @ self.centres_.T + (self.centres_ ** 2).sum(1)
            return np.argmin(d, 1).astype(np.int64)
        return np.asarray(self.clusterer_.predict(z), np.int64)

    def fit_predict(self, f: np.ndarray) -> np.ndarray:
        return self.fit(f).labels_
