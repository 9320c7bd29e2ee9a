"""DeepCluster (Caron, Bojanowski, Joulin, Douze, ECCV 2018; seed 002): alternate KMeans and classification.

Each epoch:
1. features of every image from the convnet without its top layer (Sobel -> AlexNet-style convnet -> fc);
2. PCA to `pca_dim` dimensions with whitening, then L2 normalisation (the official `preprocess_features`);
3. KMeans with k over-clustered (k >> classes); empty clusters are re-seeded by splitting a large one;
4. a new, freshly initialised top layer (k outputs) on the convnet;
5. one epoch of cross-entropy on the pseudo-labels, images drawn uniformly over the non-empty clusters
   (the official `UnifLabelSampler`), through `model.fit`.
NMI between consecutive epochs' assignments is logged: the paper's stability curve.
Epoch 0 clusters the random network's features (init='random', the paper; the full profile) or, in the CPU
presets, HOG descriptors (init='hog'): ten epochs are too few to climb from a random network's weak signal.
At the end: KMeans with K = n_clusters on the learned features, after PCA to `final_pca_dim` (default 2K)
directions with whitening + L2 (the kit's ACC / NMI / ARI); the over-clustered assignment is kept apart
(`overcluster_labels_`, `predict_overclusters`): it can only be scored with a many-to-one mapping, which
flatters, so it is never called ACC.

With `checkpoint_dir` every finished epoch saves the convnet's weights, the epoch number, the history and
the last assignment: a killed run restarts from its last finished epoch.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import keras
import numpy as np
from keras import layers
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.metrics import normalized_mutual_info_score

from .. import augment, models, training
from ..clustering import FeatureClusterer, FeaturePipeline, check_k
from . import Method, register


# ---------------------------------------------------------------- the network
@keras.saving.register_keras_serializable(package="course_lib")
class ContrastNormalise(layers.Layer):
    """Divide each image's maps by their root mean square: the same edges at any contrast look alike.

    After the Sobel layer (linear, so brightness is already gone) this removes contrast too, as HOG's
    block normalisation does; GTSRB has many dark, flat exposures.
    """

    def call(self, x):
        from keras import ops

        rms = ops.sqrt(ops.mean(ops.square(x), axis=(1, 2, 3), keepdims=True))
        return x / (rms + 1e-3)


def alexnet_small(input_shape, widths=(32, 64, 96, 96, 64), kernels=(5, 5, 3, 3, 3), fc: int = 256,
                  dropout: float = 0.5, sobel: bool = True, contrast_norm: bool = False,
                  name: str = "alexnet_small") -> keras.Model:
    """AlexNet's five convolutions and two fully connected layers, scaled for 32-64 px images.

    AlexNet on 224 px opens with an 11x11 stride-4 convolution (224 -> 55); on 32 px that would leave an
    8x8 map after one layer, so here conv1 is 5x5 with stride 1 and every max-pool (3x3, stride 2, as in
    AlexNet) halves the side: 32 -> 16 -> 8 -> 4. Channels and the fc width are scaled down, every conv is
    followed by BatchNorm (as in DeepCluster). The output is the second fc layer *before* its ReLU: the
    features DeepCluster clusters. `sobel` puts the fixed Sobel pre-layer first (greyscale, then x/y edges);
    `contrast_norm` then scales each image's edge maps to unit RMS (`ContrastNormalise`).
    """
    if len(widths) != 5 or len(kernels) != 5:
        raise ValueError("alexnet_small needs 5 conv widths and 5 kernel sizes")
    inputs = keras.Input(input_shape)
    if sobel:
        x = models.SobelFilter(name="sobel")(inputs)
    else:
        x = layers.Rescaling(1 / 255.0)(inputs)
    if contrast_norm:
        x = ContrastNormalise(name="contrast_norm")(x)
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


def with_top_layer(features: keras.Model, k: int, seed: int = 0) -> keras.Model:
    """The convnet + ReLU + a new linear top layer of k outputs (logits), initialised as the official code:
    weights N(0, 0.01), biases 0. Built anew every epoch: cluster j of one epoch has nothing to do with
    cluster j of the last."""
    inputs = keras.Input(features.input_shape[1:])
    x = layers.ReLU()(features(inputs))
    top = layers.Dense(k, kernel_initializer=keras.initializers.RandomNormal(0.0, 0.01, seed=seed),
                       bias_initializer="zeros", dtype="float32", name="top_layer")
    return keras.Model(inputs, top(x), name="deepcluster")


# ---------------------------------------------------------------- clustering steps
def preprocess_features(f: np.ndarray, pca_dim: int = 256, seed: int = 0) -> np.ndarray:
    """PCA to pca_dim with whitening, then L2 normalisation: the official `preprocess_features`."""
    return FeaturePipeline(pca_dim, whiten=True, l2=True, seed=seed).fit_transform(np.asarray(f, np.float32))


def fill_empty_clusters(z: np.ndarray, labels: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Give every empty cluster members by splitting a large cluster in two; returns new labels.

    As faiss' k-means (which the official code runs) does: the cluster to split is drawn with probability
    proportional to (size - 1). faiss only perturbs the copied centroid and lets the next Lloyd iteration
    share out the points; here the assignment is final, so the members are split along their main
    direction (first principal component) at the median, which leaves both halves non-empty.
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
        order = np.argsort(proj, kind="stable")
        moved = members[order[len(members) // 2:]]
        labels[moved] = empty
        sizes[big] -= len(moved)
        sizes[empty] = len(moved)
    return labels


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
    out = [rng.choice(order[s:e], m, replace=(e - s) < m) for s, e, m in zip(starts, ends, per)]
    out = np.concatenate(out)
    rng.shuffle(out)
    return out


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
        fit_images=None, init="random",
        optimizer="adam", learning_rate=1e-3, momentum=0.9, weight_decay=1e-5, batch_size=128, reset_optimizer="top",
        augment="weak",
        final_pca_dim=None, final_n_init=10,  # final_pca_dim None: 2 x n_clusters (`final_dims`)
        checkpoint_dir=None, verbose=0,
    )
    presets = {
        "quick": dict(epochs=6, widths=(16, 32, 48, 48, 32), fc=128, pca_dim=32, final_pca_dim=32),
        # a CPU: the paper's loop from a random network, as many epochs of 20,000 images as ~10 minutes allow
        "standard": dict(epochs=20, epoch_images=20000),
        # full (a GPU): the paper's network; 50 epochs (the paper runs 500 on ImageNet) fit a Colab
        # session: each epoch's PCA + KMeans takes ~19 s on its two host cores, the training ~0.4 min of a T4
        "full": dict(epochs=50, widths=(96, 256, 384, 384, 256), fc=4096, dropout=0.5, pca_dim=256,
                     optimizer="sgd", learning_rate=0.05, batch_size=256),
    }
    smoke = dict(epochs=3, batch_size=64, pca_dim=32, final_n_init=1)

    def __init__(self, n_clusters: int, seed: int = 0, **params):
        super().__init__(n_clusters, seed, **{**self.defaults, **params})
        for key in ("widths", "kernels"):  # from the command line these arrive as "32,64,..."
            if isinstance(self.params[key], str):
                self.params[key] = tuple(int(v) for v in self.params[key].strip("()").split(","))
        if self.params["init"] not in ("random", "hog"):
            raise ValueError(f"init must be 'random' or 'hog', got {self.params['init']!r}")

    # -------------------------------------------------------- pieces
    def overclusters(self, n_images: int) -> int:
        """k, the number of clusters of the pseudo-labels: `k`, else 5 x n_clusters (at most n_images / 20)."""
        if self.params["k"]:
            return int(self.params["k"])
        return max(self.n_clusters, min(5 * self.n_clusters, n_images // 20))

    def final_dims(self) -> int:
        """PCA directions kept (and whitened) for the final K-way KMeans: `final_pca_dim`, else 2K.

        K clusters differ along at most K - 1 directions (their centres span no more); whitening gives every
        kept direction unit variance, so keeping many more than that lets low-variance noise weigh as much as
        the cluster structure. Measured on the standard features (2-core CPU; labels only to score): MNIST
        train -> test 0.724 with 64 directions, 0.925 / 0.936 / 0.940 with 16 / 20 / 30; GTSRB 0.444 with
        64, 0.427 with 86 (= 2K), 0.425 with 128.
        """
        return int(self.params["final_pca_dim"] or 2 * self.n_clusters)

    def build(self, input_shape) -> keras.Model:
        p = self.params
        return alexnet_small(input_shape, p["widths"], p["kernels"], p["fc"], p["dropout"], p["sobel"],
                             p["contrast_norm"])

    def features(self, x) -> np.ndarray:
        """fc features (before ReLU) of uint8 images, N x fc float32."""
        f = self.features_.predict(np.asarray(x), batch_size=512, verbose=0)
        return np.asarray(f, np.float32)

    def first_features(self, x) -> np.ndarray:
        """What epoch 0 clusters when init != 'random': HOG descriptors (a hand-crafted start for short CPU runs;
        a variant of the paper, which starts from the random network's features: init='random')."""
        from .features import hog_features

        return hog_features(np.asarray(x))

    def make_optimizer(self):
        """A fresh optimizer (a new one every epoch: the top layer is new, its moments must be too)."""
        p = self.params
        if p["optimizer"] == "sgd":
            return keras.optimizers.SGD(p["learning_rate"], momentum=p["momentum"], weight_decay=p["weight_decay"])
        if p["optimizer"] == "adam":
            return keras.optimizers.Adam(p["learning_rate"], weight_decay=p["weight_decay"] or None)
        raise ValueError(f"optimizer must be 'sgd' or 'adam', got {p['optimizer']!r}")

    def _augmenter(self, channels: int):
        kind = self.params["augment"]
        if kind in (None, "none"):
            return None
        if kind == "weak":
            return augment.weak_augmenter(seed=self.seed)
        if kind == "strong":
            return augment.strong_augmenter(colour=channels == 3, seed=self.seed)
        raise ValueError(f"augment must be None, 'weak' or 'strong', got {kind!r}")

    def cluster_epoch(self, f: np.ndarray, epoch: int):
        """Preprocess + KMeans (k over-clustered) for one epoch; a new KMeans seed every epoch, as upstream."""
        p = self.params
        z = preprocess_features(f, p["pca_dim"], self.seed)
        return run_kmeans(z, self.k_, seed=self.seed * 1000 + epoch, algorithm=p["kmeans"],
                          max_iter=p["kmeans_iter"])

    def train_epoch(self, x, pseudo: np.ndarray, epoch: int) -> dict:
        """A re-initialised top layer, then one epoch of cross-entropy on uniformly sampled pseudo-labels."""
        p = self.params
        n = p["epoch_images"] or int(round(p["reassign"] * len(x)))
        n = max(p["batch_size"], n)
        idx = uniform_cluster_sample(pseudo, n, seed=self.seed * 1000 + epoch)
        model = self.training_model(epoch)
        hist = training.fit_resumable(model, x[idx], pseudo[idx].astype("int32"), epochs=1,
                                      batch_size=p["batch_size"], verbose=max(0, p["verbose"] - 1),
                                      seed=self.seed * 1000 + epoch, augmenter=self._augmenter(x.shape[-1]))
        return {key: vals[-1] for key, vals in hist.items()}

    def training_model(self, epoch: int) -> keras.Model:
        """The convnet + a top layer of k outputs whose weights are drawn anew (N(0, 0.01), biases 0).

        As the official code: the top layer is new every epoch (its optimizer state too), the convnet keeps
        its optimizer state (reset_optimizer='all' resets that too). One compiled model is reused, so the
        training step is not re-traced every epoch (seconds on a CPU); k is the same every epoch, since
        empty clusters are always filled.
        """
        if getattr(self, "model_", None) is None:
            net = with_top_layer(self.features_, self.k_, seed=self.seed)
            self.top_ = net.get_layer("top_layer")
            self.model_ = training.augment_in_model(net, self._augmenter(self.features_.input_shape[-1]))
            self.model_.compile(optimizer=self.make_optimizer(),
                                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                                metrics=["accuracy"])
        top = self.top_
        top.kernel.assign(keras.random.normal(top.kernel.shape, stddev=0.01, seed=self.seed * 1000 + epoch))
        top.bias.assign(keras.ops.zeros(top.bias.shape))
        everything = self.params["reset_optimizer"] == "all"
        for v in self.model_.optimizer.variables:
            if v.path.endswith("learning_rate") or not (everything or "top_layer" in v.path):
                continue
            v.assign(keras.ops.zeros(v.shape, v.dtype))
        return self.model_

    # -------------------------------------------------------- checkpoints
    def _ckpt(self) -> Path | None:
        d = getattr(self, "checkpoint_dir_", None)  # set by fit: `checkpoint_folder`
        return Path(d) if d else None

    def _save_checkpoint(self, epoch: int, labels: np.ndarray) -> None:
        d = self._ckpt()
        if d is None:
            return
        d.mkdir(parents=True, exist_ok=True)
        tmp = d / "convnet.tmp.weights.h5"
        self.features_.save_weights(str(tmp))
        os.replace(tmp, d / "convnet.weights.h5")
        np.save(d / "labels.tmp.npy", labels)
        os.replace(d / "labels.tmp.npy", d / "labels.npy")
        state = {"epoch": epoch, "history": self.history_, "params": _plain(self.get_params())}
        with open(d / "state.tmp.json", "w") as fh:
            json.dump(state, fh, indent=1)
        os.replace(d / "state.tmp.json", d / "state.json")  # written last: the epoch counts once all is saved

    def _load_checkpoint(self, n_images: int):
        """(next epoch, previous labels) from checkpoint_dir, or (0, None)."""
        d = self._ckpt()
        if d is None or not (d / "state.json").is_file():
            return 0, None
        state = json.loads((d / "state.json").read_text())
        labels = np.load(d / "labels.npy")
        if len(labels) != n_images:
            raise ValueError(f"{d} holds a run on {len(labels)} images, not {n_images}: use another "
                             "checkpoint_dir (or delete it) to start afresh")
        self.features_.load_weights(str(d / "convnet.weights.h5"))
        self.history_ = state["history"]
        return int(state["epoch"]) + 1, labels

    # -------------------------------------------------------- fit / predict
    def loop_images(self, n_images: int) -> np.ndarray | None:
        """Indices of the images the DeepCluster loop runs on: a seeded random subset of `fit_images` (a CPU
        budget; the final clustering still covers every image), or None for all."""
        m = self.params["fit_images"]
        if not m or m >= n_images:
            return None
        return np.sort(np.random.default_rng(self.seed).choice(n_images, m, replace=False))

    def fit(self, x, y=None):
        p = self.params
        x_given, x_all = x, np.asarray(x)
        self.loop_index_ = self.loop_images(len(x_all))
        x = x_all if self.loop_index_ is None else x_all[self.loop_index_]
        self.k_ = self.overclusters(len(x))
        self.checkpoint_dir_ = self.checkpoint_folder(x)
        check_k(self.k_, len(x))
        self.features_ = self.build(x.shape[1:])
        self.model_ = None
        self.history_ = {"epoch": [], "nmi_prev": [], "loss": [], "accuracy": [], "n_clusters": [],
                         "largest_cluster": [], "kmeans_inertia": [], "seconds": [], "seconds_features": [], "seconds_kmeans": []}
        start, prev = self._load_checkpoint(len(x))
        if start and p["verbose"]:
            print(f"resuming from {self._ckpt()} after epoch {start - 1}")
        for epoch in range(start, p["epochs"]):
            t0 = time.perf_counter()
            f = self.first_features(x) if epoch == 0 and p["init"] != "random" else self.features(x)
            t1 = time.perf_counter()
            pseudo, inertia = self.cluster_epoch(f, epoch)
            nmi = float(normalized_mutual_info_score(prev, pseudo)) if prev is not None else float("nan")
            t2 = time.perf_counter()
            logs = self.train_epoch(x, pseudo, epoch)
            sizes = np.bincount(pseudo, minlength=self.k_)
            h = self.history_
            h["epoch"].append(epoch)
            h["nmi_prev"].append(nmi)
            h["loss"].append(float(logs.get("loss", float("nan"))))
            h["accuracy"].append(float(logs.get("accuracy", float("nan"))))
            h["n_clusters"].append(int((sizes > 0).sum()))
            h["largest_cluster"].append(float(sizes.max() / len(pseudo)))
            h["kmeans_inertia"].append(inertia)
            h["seconds"].append(time.perf_counter() - t0)
            h["seconds_features"].append(t1 - t0)
            h["seconds_kmeans"].append(t2 - t1)
            prev = pseudo
            self._save_checkpoint(epoch, pseudo)
            if p["verbose"]:
                print(f"epoch {epoch + 1}/{p['epochs']}: NMI(t, t-1) {nmi:.3f}  loss {h['loss'][-1]:.3f}  "
                      f"pseudo-label acc {h['accuracy'][-1]:.3f}  largest cluster {h['largest_cluster'][-1]:.1%}  "
                      f"{h['seconds'][-1]:.0f} s (features {t1 - t0:.0f}, kmeans {t2 - t1:.0f}), "
                      f"~{(p['epochs'] - epoch - 1) * np.mean(h['seconds'][1:] or h['seconds']) / 60:.1f} min left",
                      flush=True)
        self.pseudo_labels_ = prev  # the last epoch's training targets (of the loop's images)
        t0 = time.perf_counter()
        f = self.features(x_all)
        self.clusterer_ = FeatureClusterer(self.n_clusters, self.final_dims(), whiten=True, l2=True,
                                           algorithm="kmeans", n_init=p["final_n_init"], seed=self.seed).fit(f)
        self.labels_ = self.clusterer_.labels_
        self._keep_fitted(x_given)  # the caller's array: predict returns its labels without a second pass
        self.overclusterer_ = FeatureClusterer(self.k_, p["pca_dim"], whiten=True, l2=True, algorithm="kmeans",
                                               n_init=1, seed=self.seed).fit(f)
        self.overcluster_labels_ = fill_empty_clusters(self.overclusterer_.pipeline.transform(f),
                                                       self.overclusterer_.labels_, self.k_, self.seed)
        self.timings_ = {"final clustering": time.perf_counter() - t0, "epochs": float(sum(self.history_["seconds"]))}
        if p["verbose"]:
            print(f"final clustering (K={self.n_clusters} and k={self.k_}): {self.timings_['final clustering']:.0f} s")
        return self

    def predict(self, x):
        """K = n_clusters clusters of the learned features."""
        if self._is_fitted_on(x):  # the images fit() clustered (the benchmark scores them): no second pass
            return self.labels_
        return self.clusterer_.predict(self.features(x))

    def predict_overclusters(self, x):
        """The k over-clustered assignment of the learned features (score it with a many-to-one mapping only)."""
        if self._is_fitted_on(x):
            return self.overcluster_labels_
        return self.overclusterer_.predict(self.features(x))


def _plain(d: dict) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}
