"""From images or feature vectors to cluster labels: the classical pipeline every method ends with.

pixels (optional centre crop, per-image standardisation) -> PCA (optionally whitened) -> L2 -> KMeans /
MiniBatchKMeans / GaussianMixture / agglomerative.
"""
from __future__ import annotations

import time

import numpy as np
from sklearn.cluster import AgglomerativeClustering, KMeans, MiniBatchKMeans
from sklearn.decomposition import PCA
from sklearn.mixture import GaussianMixture
from sklearn.preprocessing import normalize

ALGORITHMS = ("kmeans", "minibatch", "gmm", "agglomerative")
# Ward needs an N x N distance matrix: ~0.4 GB of float32 at 10,000 rows, ~14 GB at 60,000 (kills Colab)
AGGLOMERATIVE_MAX_ROWS = 10_000


def check_k(k: int, n: int) -> None:
    """k clusters need at least k samples."""
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"the number of clusters must be a positive integer, got {k!r}")
    if k > n:
        raise ValueError(f"cannot make {k} clusters from {n} samples: use k <= {n} or more images")


def pixel_features(x: np.ndarray, centre_crop: float = 1.0, standardise: bool = False) -> np.ndarray:
    """Flatten uint8 images to float32 vectors in [0, 1].

    centre_crop: the central fraction of the side to keep (GTSRB signs sit in the middle; borders are
    background). standardise: per-image zero mean / unit variance (removes brightness and contrast), the
    arithmetic of `models.PerImageNorm`.
    """
    if not 0 < centre_crop <= 1:
        raise ValueError(f"centre_crop is a fraction of the side in (0, 1], got {centre_crop}")
    h, w = x.shape[1:3]
    ch, cw = max(1, round(h * centre_crop)), max(1, round(w * centre_crop))
    top, left = (h - ch) // 2, (w - cw) // 2
    f = x[:, top:top + ch, left:left + cw].astype(np.float32) / 255.0
    if standardise:
        from keras import ops

        from .models import per_image_norm

        f = ops.convert_to_numpy(per_image_norm(f))
    return f.reshape(len(x), -1)


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


class JointPipeline:
    """Two descriptors side by side: the first columns and the last `tail` columns each through their own
    FeaturePipeline (PCA, whitening, L2), the second scaled by `weight`, joined, L2-normalised again. With both
    parts unit length, `weight` sets the second part's share of every cosine similarity."""

    def __init__(self, tail: int, weight: float, pca_dim: int | None = 64, whiten: bool = True, seed: int = 0):
        self.tail, self.weight = int(tail), float(weight)
        self.parts = [FeaturePipeline(pca_dim, whiten, True, seed), FeaturePipeline(pca_dim, whiten, True, seed)]

    def _split(self, f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return f[:, :-self.tail], f[:, -self.tail:]

    def fit(self, f: np.ndarray) -> "JointPipeline":
        for part, cols in zip(self.parts, self._split(f)):
            part.fit(cols)
        return self

    def transform(self, f: np.ndarray) -> np.ndarray:
        a, b = (part.transform(cols) for part, cols in zip(self.parts, self._split(f)))
        return normalize(np.concatenate([a, self.weight * b], axis=1)).astype(np.float32)

    def fit_transform(self, f: np.ndarray) -> np.ndarray:
        return self.fit(f).transform(f)


class SampledAgglomerative:
    """Ward agglomerative clustering in bounded memory: Ward on a sample of N rows, the rest to the nearest
    cluster mean.

    Up to max_rows rows this is AgglomerativeClustering(n_clusters, linkage="ward"). Above, Ward runs on a
    random sample of max_rows rows (drawn with seed) and every other row goes to the nearest mean of the
    sample's clusters. predict sends new rows to the nearest cluster mean too. After fit: labels_,
    cluster_centers_ (k x d), n_fitted_ (the rows Ward saw) and sampled_ (whether it sampled).
    """

    def __init__(self, n_clusters: int, max_rows: int = AGGLOMERATIVE_MAX_ROWS, seed: int = 0):
        self.n_clusters, self.max_rows, self.seed = n_clusters, max_rows, seed

    def fit(self, x: np.ndarray) -> "SampledAgglomerative":
        x = np.asarray(x)
        check_k(self.n_clusters, len(x))
        if self.max_rows < self.n_clusters:
            raise ValueError(f"max_rows={self.max_rows} is fewer rows than the {self.n_clusters} clusters")
        self.sampled_ = len(x) > self.max_rows
        rows = np.arange(len(x))
        if self.sampled_:
            rows = np.sort(np.random.default_rng(self.seed).choice(len(x), self.max_rows, replace=False))
        xs = x[rows]
        ward = AgglomerativeClustering(self.n_clusters, linkage="ward").fit_predict(xs).astype(np.int64)
        self.n_fitted_ = len(xs)
        self.cluster_centers_ = np.stack([xs[ward == c].mean(0) for c in range(self.n_clusters)])
        self.labels_ = ward
        if self.sampled_:
            self.labels_ = self.predict(x)
            self.labels_[rows] = ward  # the sampled rows keep Ward's labels
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        """The nearest cluster mean of each row."""
        x, c = np.asarray(x), self.cluster_centers_
        d = (x ** 2).sum(1, keepdims=True) - 2 * x @ c.T + (c ** 2).sum(1)
        return np.argmin(d, 1).astype(np.int64)

    def fit_predict(self, x: np.ndarray) -> np.ndarray:
        return self.fit(x).labels_


def make_clusterer(k: int, algorithm: str = "kmeans", seed: int = 0, n_init: int = 10,
                   max_rows: int = AGGLOMERATIVE_MAX_ROWS):
    """A scikit-learn-style clusterer with fit / predict / fit_predict.

    max_rows: agglomerative only, the most rows Ward clusters (see SampledAgglomerative).
    """
    if algorithm == "kmeans":
        return KMeans(k, n_init=n_init, random_state=seed)
    if algorithm == "minibatch":
        return MiniBatchKMeans(k, n_init=n_init, batch_size=4096, random_state=seed)
    if algorithm == "gmm":
        return GaussianMixture(k, covariance_type="diag", n_init=max(1, n_init // 5), random_state=seed)
    if algorithm == "agglomerative":
        return SampledAgglomerative(k, max_rows, seed)
    raise ValueError(f"unknown clustering algorithm {algorithm!r}: choose one of {ALGORITHMS}")


class FeatureClusterer:
    """Feature pipeline + clusterer: `fit(features)`, `predict(features)`, like every method of the kit.

    max_rows: agglomerative only, the most rows Ward clusters (the rest go to the nearest cluster mean).
    """

    def __init__(self, n_clusters: int, pca_dim: int | None = 50, whiten: bool = False, l2: bool = True,
                 algorithm: str = "kmeans", n_init: int = 10, seed: int = 0,
                 max_rows: int = AGGLOMERATIVE_MAX_ROWS):
        self.n_clusters, self.algorithm, self.n_init, self.seed = n_clusters, algorithm, n_init, seed
        self.max_rows = max_rows
        self.pipeline = FeaturePipeline(pca_dim, whiten, l2, seed)

    def fit(self, f: np.ndarray) -> "FeatureClusterer":
        check_k(self.n_clusters, len(f))
        t0 = time.perf_counter()
        z = self.pipeline.fit_transform(f)
        t1 = time.perf_counter()
        self.clusterer_ = make_clusterer(self.n_clusters, self.algorithm, self.seed, self.n_init,
                                         self.max_rows)
        self.labels_ = np.asarray(self.clusterer_.fit_predict(z), np.int64)
        self.timings_ = {"pca+l2": t1 - t0, self.algorithm: time.perf_counter() - t1}  # seconds per stage
        return self

    def predict(self, f: np.ndarray) -> np.ndarray:
        return np.asarray(self.clusterer_.predict(self.pipeline.transform(f)), np.int64)

    def fit_predict(self, f: np.ndarray) -> np.ndarray:
        return self.fit(f).labels_


# ---------------------------------------------------------------- nearest neighbours
def nearest_neighbours(features: np.ndarray, k: int, metric: str = "cosine", groups=None,
                       chunk_size: int = 2048) -> np.ndarray:
    """Indices (N x k) of each row's k nearest other rows, nearest first; a row is never its own neighbour.

    metric 'cosine' or 'euclidean': exact, by matrix products on float32 in chunks of rows (a 40,000 x 128
    set takes seconds). groups: rows sharing a group id (e.g. GTSRB track ids) are not neighbours of each
    other. Other metrics go through scikit-learn's NearestNeighbors (no groups).
    """
    f = np.asarray(features, np.float32)
    n = len(f)
    if not 1 <= k < n:
        raise ValueError(f"k must be in [1, {n - 1}] for {n} rows, got {k}")
    if metric not in ("cosine", "euclidean"):
        if groups is not None:
            raise ValueError(f"groups are supported for 'cosine' and 'euclidean' only, not {metric!r}")
        from sklearn.neighbors import NearestNeighbors

        idx = NearestNeighbors(n_neighbors=k + 1, metric=metric).fit(f).kneighbors(f, return_distance=False)
        return _drop_self(idx, k)
    if metric == "cosine":
        f = normalize(f).astype(np.float32)
        sq = np.zeros(n, np.float32)
    else:
        sq = (f ** 2).sum(1)
    groups = None if groups is None else np.asarray(groups)
    out = np.empty((n, k), np.int64)
    sample = np.sort(np.random.default_rng(0).choice(n, min(n, max(16 * k, 2048)), replace=False))
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        # similarity = -squared distance up to a per-row constant: 2 a.b - |b|^2 (cosine: a.b)
        sim = f[start:stop] @ f.T
        if metric == "euclidean":
            sim = 2 * sim - sq[None, :]
        rows = np.arange(stop - start)
        sim[rows, start + rows] = -np.inf
        if groups is not None:
            sim[groups[start:stop, None] == groups[None, :]] = -np.inf
        out[start:stop] = _top_k_columns(sim, k, sample)
    return out


def _top_k_columns(sim: np.ndarray, k: int, sample: np.ndarray) -> np.ndarray:
    """Column indices of each row's k largest values, largest first (ties: lower column first).

    Faster than argpartition over every column: each row's k-th largest value among a sample of columns is
    a lower bound of its true k-th largest, so only the few values above it need sorting.
    """
    n_rows, n_cols = sim.shape
    m = len(sample)
    thr = np.partition(sim[:, sample], m - k, axis=1)[:, m - k] if m < n_cols else np.full(n_rows, -np.inf)
    mask = sim >= thr[:, None]
    if mask.sum() > 64 * k * n_rows:  # a poor bound (many masked columns in the sample): plain partition
        part = np.argpartition(sim, n_cols - k, axis=1)[:, n_cols - k:]
        order = np.lexsort((part, -np.take_along_axis(sim, part, 1)), axis=1)
        return np.take_along_axis(part, order, 1)
    r, c = np.nonzero(mask)
    order = np.lexsort((-sim[r, c], r))
    r, c = r[order], c[order]
    first = np.searchsorted(r, np.arange(n_rows))
    return c[first[:, None] + np.arange(k)]


def _drop_self(idx: np.ndarray, k: int) -> np.ndarray:
    """Remove each row's own index from k+1 neighbours (it may not come first when duplicates tie)."""
    own = idx == np.arange(len(idx))[:, None]
    own[~own.any(1), -1] = True  # self not among them (many exact ties): drop the farthest instead
    return idx[~own].reshape(len(idx), k)


# ---------------------------------------------------------------- over-clustering, then merging by neighbour links
def _cluster_links(probs: np.ndarray, neighbours: np.ndarray) -> np.ndarray:
    """K x K: links[a, b] = sum over samples i and their mined neighbours j of p_ia p_jb + p_ib p_ja (with hard
    one-hot `probs`, the number of (i, j) pairs with one end in a and the other in b)."""
    probs = np.asarray(probs, np.float64)
    links = probs.T @ probs[np.asarray(neighbours)].sum(1)  # links[a, b], from a's samples to b
    return links + links.T


def _join(links: np.ndarray, group: np.ndarray, active: np.ndarray, a: int, b: int) -> None:
    """Cluster b joined into a, in place: its links added to a's, b made inactive, its members a's."""
    links[a] += links[b]
    links[:, a] += links[:, b]
    links[b], links[:, b] = 0, 0
    active[b] = False
    group[group == b] = a


def merge_by_links(probs: np.ndarray, neighbours: np.ndarray, n_clusters: int) -> np.ndarray:
    """Merge K' clusters into `n_clusters` without labels: while there are too many, join the two clusters whose
    members are most often each other's mined neighbours, links(a, b) / sqrt(size(a) size(b)).

    links(a, b) = sum over samples i in a and their neighbours j of p_ia p_jb (soft: `probs` N x K', so a cluster
    no sample chose still has a place to go); size(a) = sum_i p_ia. A class split in two (by lighting, by
    viewpoint) leaves its halves full of each other's neighbours; two classes never mined as neighbours stay
    apart. Returns the K' x n_clusters 0/1 matrix M: the merged probabilities are probs @ M."""
    probs = np.asarray(probs, np.float64)
    k = probs.shape[1]
    if n_clusters > k:
        raise ValueError(f"cannot merge {k} clusters into {n_clusters}: over-cluster with at least {n_clusters}")
    links = _cluster_links(probs, neighbours)
    size = probs.sum(0)
    group = np.arange(k)  # the cluster each original cluster has been merged into
    active = np.ones(k, bool)
    for _ in range(k - n_clusters):
        strength = links / np.sqrt(np.outer(size, size) + 1e-12)
        strength[~active] = strength[:, ~active] = -np.inf
        np.fill_diagonal(strength, -np.inf)
        a, b = np.unravel_index(np.argmax(strength), strength.shape)  # b joins a
        _join(links, group, active, a, b)
        size[a], size[b] = size[a] + size[b], 0
    merged = np.zeros((k, n_clusters), np.float32)
    merged[np.arange(k), np.searchsorted(np.flatnonzero(active), group)] = 1
    return merged


def merge_linked_pairs(labels: np.ndarray, neighbours: np.ndarray, n_clusters: int) -> tuple[np.ndarray, list]:
    """Join clusters that are halves of one group, without labels: while some pair of clusters (a, b) has more
    mined-neighbour links between them than from either to every other cluster together,

        R(a, b) = links(a, b) / (links(a, others) + links(b, others)) > 1,

    join the pair of largest R. links(a, b) counts the pairs (i, j), j among i's mined neighbours, with one in a
    and the other in b. No number of clusters to reach and no threshold to tune: a pair is joined only when it
    is closed, its members' neighbours that leave their own cluster mostly going to the other one. On GTSRB the
    SCAN entropy term (which wants equal clusters) cuts the largest classes (Yield, Priority road: ~6% of the
    images each) into a sharp and a blurred half; two different classes, even 4 and 9 or two speed limits, keep
    most of their strays elsewhere (issue 20; results/NOTES.md). The joined-away clusters are left empty, so
    fewer than `n_clusters` are used afterwards.

    R compares a pair with the rest, so it asks for many clusters in a rich feature space, where a class's strays
    spread over several others: with the true classes as the clusters, max R is 0.33 on GTSRB (HOG neighbours),
    0.36 on MNIST, < 1 on digits. Where a class touches one other only (a few blobs in a plane, nearly separated
    classes), two distinct classes can be a closed pair too and would be joined: check R on labelled data first.

    Returns the K x K 0/1 matrix M (merged probabilities: probs @ M; the column of a joined-away cluster is 0)
    and the joins made, [(a, b, R), ...] (b joined into a)."""
    labels, k = np.asarray(labels), n_clusters
    links = _cluster_links(np.eye(k)[labels], neighbours)
    group = np.arange(k)
    active = np.bincount(labels, minlength=k) > 0
    joins = []
    while active.sum() > 2:  # R needs other clusters to compare with
        others = links.sum(1) - np.diag(links)  # each cluster's links to all other clusters
        leave = others[:, None] + others[None, :] - 2 * links  # ... except to the partner
        ratio = np.where(np.outer(active, active), links / np.maximum(leave, 1e-12), -np.inf)
        ratio[np.diag_indices(k)] = -np.inf
        a, b = np.unravel_index(np.argmax(ratio), ratio.shape)
        if ratio[a, b] <= 1:
            break
        joins.append((int(a), int(b), float(ratio[a, b])))
        _join(links, group, active, a, b)
    merged = np.zeros((k, k), np.float32)
    merged[np.arange(k), group] = 1
    return merged, joins


# ---------------------------------------------------------------- seed 004: K-means as a one-layer network
class KMeansNetwork:
    """K-means as a one-layer network trained by winner-take-all (competitive learning), as in seed 004.

    The layer has one neuron a cluster, weights W (d x k). For an input x the winner is the neuron nearest
    to x: argmin_j |x - w_j|^2 = argmax_j (w_j . x - |w_j|^2 / 2), a linear layer with weights W and bias
    -|w_j|^2 / 2. Seed 004's argmax of W^T x alone is the nearest neuron only when every w_j has the same
    length (and x is normalised too, it is then the cosine winner); otherwise a long weight vector wins
    inputs that are far from it and swallows the data.
    Only the winner learns: w_j <- w_j + eta_j (x - w_j), on mini-batches (the mean of the batch's inputs
    that neuron won). learning_rate=None uses eta_j = (inputs won in this batch) / (inputs won so far),
    which makes w_j the running mean of its inputs (MacQueen's online k-means, Sculley's mini-batch
    k-means); a number gives a fixed rate that decays linearly to 0 over the epochs. n_init: runs from
    different initial weights (k-means++ or random samples), the lowest inertia kept, as in KMeans.
    """

    def __init__(self, n_clusters: int, epochs: int = 10, learning_rate: float | None = None,
                 batch_size: int = 256, seed: int = 0, init: str = "k-means++", n_init: int = 1):
        self.n_clusters, self.epochs, self.learning_rate = n_clusters, epochs, learning_rate
        self.batch_size, self.seed, self.init, self.n_init = batch_size, seed, init, n_init

    def _init_weights(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if self.init == "k-means++":
            from sklearn.cluster import kmeans_plusplus

            centres, _ = kmeans_plusplus(x, self.n_clusters, random_state=int(rng.integers(2**31)))
            return centres.T.copy()
        if self.init == "random":  # k random samples
            return x[rng.choice(len(x), self.n_clusters, replace=False)].T.copy()
        raise ValueError(f"init must be 'k-means++' or 'random', got {self.init!r}")

    def activations(self, x: np.ndarray) -> np.ndarray:
        """The layer's outputs W^T x - |w|^2 / 2 (N x k): the winner is their argmax."""
        w = self.weights_
        return np.asarray(x, np.float32) @ w - 0.5 * (w ** 2).sum(0)

    def fit(self, x: np.ndarray) -> "KMeansNetwork":
        from threadpoolctl import threadpool_limits

        x = np.asarray(x, np.float32)
        check_k(self.n_clusters, len(x))
        best = None
        # one BLAS thread: the products here are small, and BLAS threads waiting on each other cost far more
        with threadpool_limits(1):
            for run in range(self.n_init):  # like KMeans' n_init: keep the run with the lowest inertia
                self._fit(x, self.seed + run)
                if best is None or self.inertia_ < best[0]:
                    best = (self.inertia_, self.weights_, self.inertia_history_)
        _, self.weights_, self.inertia_history_ = best
        self.cluster_centers_ = self.weights_.T.copy()
        self.labels_ = self.predict(x)
        self.inertia_ = self.inertia_history_[-1]
        return self

    def _fit(self, x: np.ndarray, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.weights_ = self._init_weights(x, rng).astype(np.float32)  # d x k
        counts = np.zeros(self.n_clusters)
        steps = self.epochs * -(-len(x) // self.batch_size)
        step = 0
        self.inertia_history_ = []
        for _ in range(self.epochs):
            order = rng.permutation(len(x))
            for start in range(0, len(x), self.batch_size):
                xb = x[order[start:start + self.batch_size]]
                win = self.activations(xb).argmax(1)
                won = np.zeros((len(xb), self.n_clusters), np.float32)
                won[np.arange(len(xb)), win] = 1.0
                n_won = won.sum(0)
                sums = won.T @ xb  # k x d: the sum of the inputs each neuron won
                active = n_won > 0
                counts += n_won
                if self.learning_rate is None:
                    eta = n_won[active] / counts[active]
                else:
                    eta = np.full(active.sum(), self.learning_rate * (1 - step / steps))
                means = sums[active] / n_won[active, None]
                self.weights_[:, active] += (eta[:, None] * (means - self.weights_[:, active].T)).T
                step += 1
            self.inertia_history_.append(self.score_inertia(x))
        self.inertia_ = self.inertia_history_[-1]

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.activations(x).argmax(1).astype(np.int64)

    def fit_predict(self, x: np.ndarray) -> np.ndarray:
        return self.fit(x).labels_

    def score_inertia(self, x: np.ndarray) -> float:
        """Sum of squared distances of the rows of x to their nearest neuron (K-means' objective)."""
        x = np.asarray(x, np.float32)
        d = (x ** 2).sum(1) - 2 * self.activations(x).max(1)
        return float(np.maximum(d, 0).sum())
