"""DeepCluster (Caron, Bojanowski, Joulin, Douze, ECCV 2018): a convnet learns from its own KMeans clusters.

Every epoch of `DeepCluster.fit`, as the paper and its official code (facebookresearch/deepcluster):
1. features of every image from the convnet without its top layer (`features`);
2. PCA with whitening, then L2 normalisation (`preprocess_features`);
3. KMeans with k >> classes, empty clusters refilled by splitting a large one (`run_kmeans`);
4. the epoch's images drawn equally from every cluster (`uniform_cluster_sample`);
5. a re-initialised top layer of k outputs (`reset_top_layer`);
6. one epoch of cross-entropy on the pseudo-labels (`train_epoch`).
Epoch 0 clusters the random network's features. NMI between consecutive assignments is logged: the paper's
stability curve. At the end, KMeans with K = n_clusters on the learned features (the kit's ACC / NMI / ARI);
the over-clustered assignment is kept apart (`overcluster_labels_`): it can only be scored many-to-one.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import keras
import numpy as np
from keras import layers
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.metrics import normalized_mutual_info_score

from .. import augment, models, training
from ..clustering import FeatureClusterer, FeaturePipeline, check_k
from ..runtime import atomic_write
from . import Method, register


# ---------------------------------------------------------------- the network
def alexnet_small(input_shape, widths=(32, 64, 96, 96, 64), kernels=(5, 5, 3, 3, 3), fc: int = 256,
                  dropout: float = 0.5, sobel: bool = True, contrast_norm: bool = False,
                  name: str = "alexnet_small") -> keras.Model:
    """AlexNet's five convolutions and two fully connected layers, scaled for 32-64 px images.

    conv1 is 5x5 with stride 1 (AlexNet's 11x11 stride 4 would leave an 8x8 map of a 32 px image) and every
    max-pool (3x3, stride 2) halves the side: 32 -> 16 -> 8 -> 4. Every conv is followed by BatchNorm, as in
    DeepCluster. The output is the second fc layer *before* its ReLU: the features DeepCluster clusters.
    `sobel` puts the fixed Sobel pre-layer first (greyscale, then x/y edges); `contrast_norm` scales each
    image's input maps to unit RMS (`models.PerImageNorm`), so edges at any contrast look alike.
    """
    if len(widths) != 5 or len(kernels) != 5:
        raise ValueError("alexnet_small needs 5 conv widths and 5 kernel sizes")
    inputs = keras.Input(input_shape)
    x = models.SobelFilter(name="sobel")(inputs) if sobel else layers.Rescaling(1 / 255.0)(inputs)
    if contrast_norm:
        x = models.PerImageNorm(center=False, name="contrast_norm")(x)
    for i, (w, k) in enumerate(zip(widths, kernels)):
        x = layers.Conv2D(w, k, padding="same", use_bias=False, name=f"conv{i + 1}")(x)
        x = layers.BatchNormalization(momentum=0.9, name=f"bn{i + 1}")(x)
        x = layers.ReLU()(x)
        if i in (0, 1, 4):
            x = layers.MaxPooling2D(3, 2, padding="same")(x)
    x = layers.Flatten()(x)
    x = layers.Dropout(dropout)(x)
    x = layers.Dense(fc, activation="relu", name="fc1")(x)
    x = layers.Dropout(dropout)(x)
    x = layers.Dense(fc, name="fc2")(x)  # no ReLU: the training model adds it before the top layer
    return keras.Model(inputs, x, name=name)


def with_top_layer(convnet: keras.Model, k: int, seed: int = 0) -> keras.Model:
    """The convnet + ReLU + a linear top layer of k outputs (logits), weights N(0, 0.01), biases 0."""
    inputs = keras.Input(convnet.input_shape[1:])
    x = layers.ReLU()(convnet(inputs))
    top = layers.Dense(k, kernel_initializer=keras.initializers.RandomNormal(0.0, 0.01, seed=seed),
                       bias_initializer="zeros", dtype="float32", name="top_layer")
    return keras.Model(inputs, top(x), name="deepcluster")


def training_model(convnet: keras.Model, k: int, optimizer, augmenter=None, seed: int = 0) -> keras.Model:
    """`with_top_layer`, compiled with cross-entropy on the pseudo-labels (the augmenter inside on a GPU)."""
    model = training.augment_in_model(with_top_layer(convnet, k, seed), augmenter)
    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


def reset_top_layer(model: keras.Model, seed: int, optimizer_state: str = "top") -> None:
    """Draw the top layer anew (N(0, 0.01), biases 0) and zero its optimizer moments: cluster j of this epoch
    has nothing to do with cluster j of the last. optimizer_state="all" zeroes the convnet's moments too.
    In place, so the compiled training step is not traced again every epoch."""
    for v in model.weights:
        if "top_layer" in v.path:
            v.assign(keras.random.normal(v.shape, stddev=0.01, seed=seed) if v.path.endswith("kernel")
                     else keras.ops.zeros(v.shape))
    for v in model.optimizer.variables:
        if not v.path.endswith("learning_rate") and (optimizer_state == "all" or "top_layer" in v.path):
            v.assign(keras.ops.zeros(v.shape, v.dtype))


def features(convnet: keras.Model, x) -> np.ndarray:
    """fc features (before ReLU) of uint8 images, N x fc float32 (inference mode)."""
    return np.asarray(convnet.predict(np.asarray(x), batch_size=512, verbose=0), np.float32)


def train_epoch(model: keras.Model, x, pseudo, batch_size: int, augmenter=None, seed: int = 0,
                verbose: int = 0) -> dict:
    """One epoch of cross-entropy on the pseudo-labels; returns its loss and accuracy."""
    hist = training.fit_resumable(model, x, np.asarray(pseudo, "int32"), epochs=1, batch_size=batch_size,
                                  verbose=verbose, seed=seed, augmenter=augmenter)
    return {key: vals[-1] for key, vals in hist.items()}


# ---------------------------------------------------------------- clustering steps
def preprocess_features(f: np.ndarray, pca_dim: int = 256, seed: int = 0) -> np.ndarray:
    """PCA to pca_dim with whitening, then L2 normalisation: the official `preprocess_features`."""
    return FeaturePipeline(pca_dim, whiten=True, l2=True, seed=seed).fit_transform(np.asarray(f, np.float32))


def fill_empty_clusters(z: np.ndarray, labels: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Give every empty cluster members by splitting a large cluster in two; returns new labels.

    As faiss' k-means (which the official code runs), the cluster to split is drawn with probability
    proportional to (size - 1); its members are split at the median of their first principal component.
    """
    labels = np.asarray(labels, np.int64).copy()
    check_k(k, len(labels))
    rng = np.random.default_rng(seed)
    sizes = np.bincount(labels, minlength=k)
    for empty in np.flatnonzero(sizes == 0):
        weights = np.maximum(sizes - 1, 0).astype(np.float64)
        big = int(rng.choice(k, p=weights / weights.sum()))
        members = np.flatnonzero(labels == big)
        centred = z[members] - z[members].mean(0)
        direction = np.linalg.svd(centred, full_matrices=False)[2][0] if len(members) > 2 else None
        proj = centred @ direction if direction is not None else np.arange(len(members), dtype=np.float64)
        moved = members[np.argsort(proj, kind="stable")[len(members) // 2:]]
        labels[moved] = empty
        sizes[big] -= len(moved)
        sizes[empty] = len(moved)
    return labels


def run_kmeans(z: np.ndarray, k: int, seed: int = 0, algorithm: str = "kmeans", max_iter: int = 20):
    """KMeans on the preprocessed features; returns (labels without empty clusters, inertia)."""
    if algorithm == "kmeans":
        km = KMeans(k, n_init=1, max_iter=max_iter, random_state=seed)
    elif algorithm == "minibatch":
        km = MiniBatchKMeans(k, n_init=1, batch_size=4096, max_iter=max_iter, random_state=seed)
    else:
        raise ValueError(f"algorithm must be 'kmeans' or 'minibatch', got {algorithm!r}")
    labels = km.fit_predict(z)
    return fill_empty_clusters(z, labels, k, seed), float(km.inertia_)


def uniform_cluster_sample(labels: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """n image indices drawn equally from every non-empty cluster, shuffled (the official UnifLabelSampler).

    Each cluster gets n // c or n // c + 1 draws (c non-empty clusters), with replacement only when it has
    fewer members than draws. Without it a few huge clusters dominate the loss and the network learns to
    put everything in them (the trivial solution the paper warns about).
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    clusters = np.unique(labels)
    per = np.full(len(clusters), n // len(clusters))
    per[rng.choice(len(clusters), n - per.sum(), replace=False)] += 1
    order = np.argsort(labels, kind="stable")
    starts = np.searchsorted(labels[order], clusters)
    ends = np.r_[starts[1:], len(labels)]
    out = np.concatenate([rng.choice(order[s:e], m, replace=(e - s) < m) for s, e, m in zip(starts, ends, per)])
    rng.shuffle(out)
    return out


# ---------------------------------------------------------------- the method
@register
class DeepCluster(Method):
    """Sobel + small AlexNet trained on its own over-clustered KMeans pseudo-labels, then KMeans (K classes).

    After fit: features_ (the convnet without top layer), history_ (per epoch: nmi_prev, loss, seconds...),
    labels_ (final K-cluster assignment), overcluster_labels_ (the last over-clustered assignment).
    """

    name = "deepcluster"
    defaults = dict(
        k=None,  # over-clustering: None -> 5 x n_clusters, at most one cluster per 20 images (`overclusters`)
        epochs=10, widths=(24, 48, 72, 72, 48), kernels=(5, 3, 3, 3, 3), fc=256, dropout=0.2, sobel=True,
        contrast_norm=True, pca_dim=64, kmeans="kmeans", kmeans_iter=20, reassign=1.0, epoch_images=None,
        optimizer="adam", learning_rate=1e-3, momentum=0.9, weight_decay=1e-5, batch_size=128,
        reset_optimizer="top", augment="weak",
        final_pca_dim=None, final_n_init=10,  # final_pca_dim None: 2 x n_clusters (`final_dims`)
        checkpoint_dir=None, verbose=0,
    )
    presets = {
        # a notebook's minutes: a narrower network, 6 epochs of every image
        "quick": dict(epochs=6, widths=(16, 32, 48, 48, 32), fc=128, pca_dim=32, final_pca_dim=32),
        # a CPU: as many epochs of 20,000 images as ~30 minutes allow
        "standard": dict(epochs=20, epoch_images=20000),
        # a GPU: AlexNet's widths, SGD as the paper; 50 epochs (the paper's 500 would not fit a Colab session)
        "full": dict(epochs=50, widths=(96, 256, 384, 384, 256), fc=4096, dropout=0.5, pca_dim=256,
                     optimizer="sgd", learning_rate=0.05, batch_size=256),
    }
    smoke = dict(epochs=2, batch_size=64, pca_dim=32, final_n_init=1)  # 2 reassignments: the loss must fall

    def __init__(self, n_clusters: int, seed: int = 0, **params):
        super().__init__(n_clusters, seed, **{**self.defaults, **params})
        for key in ("widths", "kernels"):  # from the command line these arrive as "32,64,..."
            if isinstance(self.params[key], str):
                self.params[key] = tuple(int(v) for v in self.params[key].strip("()").split(","))

    def overclusters(self, n_images: int) -> int:
        """k, the number of clusters of the pseudo-labels: `k`, else 5 x n_clusters (at most n_images / 20)."""
        if self.params["k"]:
            return int(self.params["k"])
        return max(self.n_clusters, min(5 * self.n_clusters, n_images // 20))

    def final_dims(self) -> int:
        """PCA directions kept (and whitened) for the final K-way KMeans: `final_pca_dim`, else 2K. K clusters
        differ along at most K - 1 directions; whitening many more lets low-variance noise weigh as much."""
        return int(self.params["final_pca_dim"] or 2 * self.n_clusters)

    def build(self, input_shape) -> keras.Model:
        p = self.params
        return alexnet_small(input_shape, p["widths"], p["kernels"], p["fc"], p["dropout"], p["sobel"],
                             p["contrast_norm"])

    def make_optimizer(self):
        p = self.params
        if p["optimizer"] == "sgd":
            return keras.optimizers.SGD(p["learning_rate"], momentum=p["momentum"], weight_decay=p["weight_decay"])
        if p["optimizer"] == "adam":
            return keras.optimizers.Adam(p["learning_rate"], weight_decay=p["weight_decay"] or None)
        raise ValueError(f"optimizer must be 'sgd' or 'adam', got {p['optimizer']!r}")

    def augmenter(self, x):
        return augment.augmenter(self.params["augment"], x.shape[-1] == 3, self.seed)

    def epoch_features(self, x, epoch: int) -> np.ndarray:
        """What epoch `epoch` clusters: the convnet's features (`deepcluster-hog` starts from HOG instead)."""
        return features(self.features_, x)

    # -------------------------------------------------------- fit: the paper's loop
    def fit(self, x, y=None):
        p = self.params
        x_given, x = x, np.asarray(x)
        self.k_ = self.overclusters(len(x))
        check_k(self.k_, len(x))
        self.checkpoint_dir_ = self.checkpoint_folder(x)
        self.features_ = self.build(x.shape[1:])
        self.model_ = training_model(self.features_, self.k_, self.make_optimizer(), self.augmenter(x), self.seed)
        self.history_ = {key: [] for key in ("epoch", "nmi_prev", "loss", "accuracy", "n_clusters", "largest_cluster",
                                             "kmeans_inertia", "seconds", "seconds_features", "seconds_kmeans")}
        start, prev = self._load_checkpoint(len(x))
        n = max(p["batch_size"], p["epoch_images"] or round(p["reassign"] * len(x)))  # images per epoch
        for epoch in range(start, p["epochs"]):
            seed = self.seed * 1000 + epoch  # a new KMeans start, sample and top layer every epoch
            t0 = time.perf_counter()
            f = self.epoch_features(x, epoch)  # 1. features
            t1 = time.perf_counter()
            z = preprocess_features(f, p["pca_dim"], self.seed)  # 2. PCA, whitening, L2
            pseudo, inertia = run_kmeans(z, self.k_, seed, p["kmeans"], p["kmeans_iter"])  # 3. k clusters
            t2 = time.perf_counter()
            idx = uniform_cluster_sample(pseudo, n, seed)  # 4. equally many images from every cluster
            reset_top_layer(self.model_, seed, p["reset_optimizer"])  # 5. a new top layer
            logs = train_epoch(self.model_, x[idx], pseudo[idx], p["batch_size"], self.augmenter(x), seed,
                               max(0, p["verbose"] - 1))  # 6. one epoch of cross-entropy
            self._log(epoch, prev, pseudo, inertia, logs, (t0, t1, t2, time.perf_counter()))
            prev = pseudo
            self._save_checkpoint(epoch, pseudo)
        self.pseudo_labels_ = prev  # the last epoch's training targets
        self._cluster_final(x)
        self._keep_fitted(x_given)  # the caller's array: predict returns its labels without a second pass
        return self

    def _log(self, epoch, prev, pseudo, inertia, logs, times) -> None:
        h, sizes = self.history_, np.bincount(pseudo, minlength=self.k_)
        h["epoch"].append(epoch)
        h["nmi_prev"].append(float(normalized_mutual_info_score(prev, pseudo)) if prev is not None else float("nan"))
        h["loss"].append(float(logs.get("loss", float("nan"))))
        h["accuracy"].append(float(logs.get("accuracy", float("nan"))))
        h["n_clusters"].append(int((sizes > 0).sum()))
        h["largest_cluster"].append(float(sizes.max() / len(pseudo)))
        h["kmeans_inertia"].append(inertia)
        h["seconds"].append(times[3] - times[0])
        h["seconds_features"].append(times[1] - times[0])
        h["seconds_kmeans"].append(times[2] - times[1])
        if self.params["verbose"]:
            print(f"epoch {epoch + 1}/{self.params['epochs']}: NMI(t, t-1) {h['nmi_prev'][-1]:.3f}  loss "
                  f"{h['loss'][-1]:.3f}  pseudo-label acc {h['accuracy'][-1]:.3f}  largest cluster "
                  f"{h['largest_cluster'][-1]:.1%}  {h['seconds'][-1]:.0f} s", flush=True)

    def _cluster_final(self, x) -> None:
        """KMeans with K = n_clusters (2K whitened PCA directions) and with k (the over-clustering)."""
        p, t0 = self.params, time.perf_counter()
        f = features(self.features_, x)
        self.clusterer_ = FeatureClusterer(self.n_clusters, self.final_dims(), whiten=True, l2=True,
                                           algorithm="kmeans", n_init=p["final_n_init"], seed=self.seed).fit(f)
        self.labels_ = self.clusterer_.labels_
        self.overclusterer_ = FeatureClusterer(self.k_, p["pca_dim"], whiten=True, l2=True, algorithm="kmeans",
                                               n_init=1, seed=self.seed).fit(f)
        self.overcluster_labels_ = fill_empty_clusters(self.overclusterer_.pipeline.transform(f),
                                                       self.overclusterer_.labels_, self.k_, self.seed)
        self.timings_ = {"final clustering": time.perf_counter() - t0, "epochs": float(sum(self.history_["seconds"]))}

    def predict(self, x):
        """K = n_clusters clusters of the learned features."""
        if self._is_fitted_on(x):  # the images fit() clustered (the benchmark scores them): no second pass
            return self.labels_
        return self.clusterer_.predict(features(self.features_, x))

    def predict_overclusters(self, x):
        """The k over-clustered assignment of the learned features (score it with a many-to-one mapping only)."""
        if self._is_fitted_on(x):
            return self.overcluster_labels_
        return self.overclusterer_.predict(features(self.features_, x))

    # -------------------------------------------------------- checkpoints: resume a killed run
    def _save_checkpoint(self, epoch: int, labels: np.ndarray) -> None:
        if not self.checkpoint_dir_:
            return
        d = Path(self.checkpoint_dir_)
        with atomic_write(d / "convnet.weights.h5") as tmp:
            self.features_.save_weights(str(tmp))
        with atomic_write(d / "labels.npy") as tmp:
            np.save(tmp, labels)
        params = {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.get_params().items()}
        with atomic_write(d / "state.json") as tmp:  # written last: the epoch counts once all is saved
            tmp.write_text(json.dumps({"epoch": epoch, "history": self.history_, "params": params}, indent=1))

    def _load_checkpoint(self, n_images: int):
        """(next epoch, previous labels) from the checkpoint folder, or (0, None)."""
        d = Path(self.checkpoint_dir_) if self.checkpoint_dir_ else None
        if d is None or not (d / "state.json").is_file():
            return 0, None
        state = json.loads((d / "state.json").read_text())
        labels = np.load(d / "labels.npy")
        if len(labels) != n_images:
            raise ValueError(f"{d} holds a run on {len(labels)} images, not {n_images}: use another "
                             "checkpoint_dir (or delete it) to start afresh")
        self.features_.load_weights(str(d / "convnet.weights.h5"))
        self.history_ = state["history"]
        if self.params["verbose"]:
            print(f"resuming from {d} after epoch {state['epoch']}")
        return int(state["epoch"]) + 1, labels
