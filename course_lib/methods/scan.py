"""SCAN: Semantic Clustering by Adopting Nearest neighbours (Van Gansbeke et al. 2020), in three steps.

1. Pretext: learn features without labels — SimCLR (NT-Xent on two strong views), RotNet (predict the
   rotation 0/90/180/270) or, as a classical control, HOG.
2. Mining: the K nearest neighbours of every image in those features.
3. Clustering: a network trained with the SCAN loss  -log<p(x), p(n)> - w H(mean p)  on (image, neighbour)
   pairs, several heads, the head with the lowest loss kept (no labels involved);
   then self-labeling: confident predictions (max p > threshold) become pseudo-labels for a CNN trained
   with cross-entropy on strongly augmented views, class-balanced, while the confident set grows.

Each step's output is cached in `cache_dir` (when given), so a run resumes after the last finished step.
On a CPU (quick/standard) the clustering step trains an MLP on the frozen pretext features of the images and
of `views` strongly augmented copies of each (described once; the SCAN step pairs random views); the full
profile trains the whole CNN end to end on images augmented on the fly, as the paper does.
"""
from __future__ import annotations

import hashlib
import math
import json
import time
import warnings
from pathlib import Path

import numpy as np

from .. import augment, losses, models, training
from ..clustering import FeatureClusterer, FeaturePipeline, nearest_neighbours
from ..distribute import per_replica
from . import Method, register


# ---------------------------------------------------------------- step 1: pretext tasks
def _keras():
    import keras

    return keras


def view_batches(x, batch_size: int, augmenter, seed: int = 0, partner_index=None):
    """Batches ((aug(x_i), aug(x_j)),) for two-view losses: j = i (SimCLR) or a mined neighbour of i (SCAN).

    partner_index: an N-vector of partners (re-drawn by the caller each epoch); None for two views of i.
    When the training step augments (`training.on_device`), the pairs come unaugmented and the model augments.
    """
    augmenter = training.in_pipeline(augmenter) or (lambda b, training=True: b)
    partner = np.arange(len(x)) if partner_index is None else np.asarray(partner_index)
    tf = training.tensorflow_or_none()
    if tf is None:  # the same pairs from a PyDataset (JAX / PyTorch-only machines)
        def make(idx):
            a, b = (x[i].astype("float32") for i in (idx, partner[idx]))
            return ((_keras().ops.convert_to_numpy(augmenter(a, training=True)),
                     _keras().ops.convert_to_numpy(augmenter(b, training=True))),)

        return training.IndexBatches(len(x), batch_size, make, seed, drop_remainder=len(x) >= batch_size)
    order = np.random.default_rng(seed).permutation(len(x))
    ds = tf.data.Dataset.from_tensor_slices((order, partner[order]))
    ds = ds.batch(batch_size, drop_remainder=len(x) >= batch_size)
    xs = tf.constant(x)

    def views(i, j):
        a, b = tf.gather(xs, i), tf.gather(xs, j)
        return ((augmenter(tf.cast(a, "float32"), training=True), augmenter(tf.cast(b, "float32"), training=True)),)

    return ds.map(views, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def simclr_model(backbone, proj_dim: int = 128, temperature: float = 0.1, augmenter=None):
    """backbone + 2-layer projection head trained with NT-Xent (keras.io pattern: override compute_loss).
    `augmenter`: the views' augmentation inside the training step (on an accelerator), else None."""
    keras = _keras()

    class SimCLR(keras.Model):
        def __init__(self):
            super().__init__()
            self.backbone, self.augmenter = backbone, augmenter
            self.projector = keras.Sequential([keras.layers.Dense(256, activation="relu"),
                                               keras.layers.Dense(proj_dim, dtype="float32")])

        def call(self, inputs, training=False):
            v1, v2 = inputs
            if training and self.augmenter is not None:
                v1, v2 = self.augmenter(v1, training=True), self.augmenter(v2, training=True)
            return (self.projector(self.backbone(v1, training=training)),
                    self.projector(self.backbone(v2, training=training)))

        def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
            return per_replica(losses.nt_xent_loss(y_pred[0], y_pred[1], temperature))

    return SimCLR()


def train_simclr(x, epochs: int, batch_size: int, width: int, lr: float, temperature: float, seed: int,
                 colour: bool, verbose: int = 0, checkpoint=None):
    """SimCLR pretext: returns (backbone, history). `checkpoint`: a path stem to save every epoch to and resume
    from (`training.EpochCheckpoint`)."""
    keras = _keras()
    backbone = models.small_cnn_backbone(x.shape[1:], width=width)
    aug = augment.strong_augmenter(colour=colour, seed=seed)
    model = simclr_model(backbone, temperature=temperature, augmenter=training.on_device(aug))
    model.compile(keras.optimizers.Adam(lr))
    hist = {"loss": [], "seconds": []}
    model((np.zeros((1, *x.shape[1:]), "float32"),) * 2)  # built, so that a checkpoint can be loaded
    ckpt = training.EpochCheckpoint(model, checkpoint)
    for epoch in range(ckpt.restore(hist), epochs):  # a fresh pairing order every epoch
        t0 = time.perf_counter()
        h = model.fit(view_batches(x, batch_size, aug, seed + epoch), epochs=1, verbose=0, shuffle=False,
                      callbacks=[training.NaNGuard()])
        hist["loss"].append(float(h.history["loss"][-1]))
        hist["seconds"].append(time.perf_counter() - t0)
        ckpt.save(epoch + 1, hist)
        if verbose:
            print(training.progress_line("SimCLR: ", epoch, epochs, hist["loss"][-1], hist["seconds"], 2 * len(x)),
                  flush=True)
    return backbone, hist


def train_rotnet(x, epochs: int, batch_size: int, width: int, lr: float, seed: int, verbose: int = 0,
                 checkpoint=None):
    """RotNet pretext (Gidaris et al. 2018): classify which of 0/90/180/270 degrees an image was rotated."""
    keras = _keras()
    backbone = models.small_cnn_backbone(x.shape[1:], width=width)
    clf = models.classifier(backbone, 4, dropout=0.0, name="rotnet")
    clf.compile(keras.optimizers.Adam(lr), "sparse_categorical_crossentropy", metrics=["accuracy"])
    rng = np.random.default_rng(seed)
    hist = {"loss": [], "accuracy": [], "seconds": []}
    ckpt = training.EpochCheckpoint(clf, checkpoint)
    for epoch in range(ckpt.restore(hist), epochs):
        t0 = time.perf_counter()
        r = rng.integers(0, 4, len(x))  # one random rotation per image per epoch keeps an epoch at N images
        xr = np.stack([np.rot90(img, k) for img, k in zip(x, r)]).astype("float32")
        h = clf.fit(xr, r, batch_size=batch_size, epochs=1, verbose=0, shuffle=True,
                    callbacks=[training.NaNGuard()])
        hist["loss"].append(float(h.history["loss"][-1]))
        hist["accuracy"].append(float(h.history["accuracy"][-1]))
        hist["seconds"].append(time.perf_counter() - t0)
        ckpt.save(epoch + 1, hist)
        if verbose:
            print(training.progress_line("RotNet: ", epoch, epochs, hist["loss"][-1], hist["seconds"], len(x)),
                  flush=True)
    return backbone, hist


def embed(backbone, x, batch_size: int = 512) -> np.ndarray:
    return np.asarray(backbone.predict(x.astype("float32"), batch_size=batch_size, verbose=0), np.float32)


# ---------------------------------------------------------------- step 2: mining
def mine_neighbours(features: np.ndarray, k: int = 20) -> np.ndarray:
    """The k nearest neighbours (cosine) of every sample, nearest first (N x k indices)."""
    return nearest_neighbours(features, k, metric="cosine")


def neighbour_label_agreement(neighbours: np.ndarray, y, groups=None) -> dict:
    """Share of mined neighbours with the same true label (display only), and the same share among
    neighbours from other groups (GTSRB tracks: same-track frames are near-duplicates)."""
    y = np.asarray(y)
    same = y[neighbours] == y[:, None]
    out = {"neighbour_acc": float(same.mean())}
    if groups is not None:
        other = np.asarray(groups)[neighbours] != np.asarray(groups)[:, None]
        out["same_group_share"] = float(1 - other.mean())
        out["neighbour_acc_other_groups"] = float(same[other].mean()) if other.any() else float("nan")
    return out


# ---------------------------------------------------------------- step 3: SCAN loss
def clustering_model(encoder, n_clusters: int, n_heads: int, entropy_weight: float, augmenter=None):
    """encoder + n_heads softmax heads trained with the SCAN loss summed over heads; `augmenter` augments anchors
    and neighbours inside the training step (end to end on an accelerator), else None."""
    keras = _keras()
    from keras import ops

    class SCANModel(keras.Model):
        def __init__(self):
            super().__init__()
            self.encoder, self.augmenter = encoder, augmenter
            self.heads = [keras.layers.Dense(n_clusters, activation="softmax", dtype="float32", name=f"head{h}")
                          for h in range(n_heads)]

        def probs(self, x, training=False):
            h = self.encoder(x, training=training)
            return ops.stack([head(h) for head in self.heads], axis=0)  # heads x N x C

        def call(self, inputs, training=False):
            anchors, neighbours = inputs
            if training and self.augmenter is not None:
                anchors, neighbours = self.augmenter(anchors, training=True), self.augmenter(neighbours, training=True)
            return self.probs(anchors, training), self.probs(neighbours, training)

        def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
            pa, pn = y_pred
            return per_replica(sum(losses.scan_loss(pa[h], pn[h], entropy_weight)[0] for h in range(n_heads)))

    return SCANModel()


def feature_encoder(dim_in: int, hidden: int = 512, noise: float = 0.2):
    """MLP on frozen pretext features; Gaussian noise + dropout stand in for image augmentation.

    The features are L2-normalised (elements ~ 1/sqrt(d)), so the noise is scaled the same way.
    """
    keras = _keras()
    return keras.Sequential([keras.Input((dim_in,)), keras.layers.GaussianNoise(noise / math.sqrt(dim_in)),
                             keras.layers.Dropout(0.1),
                             keras.layers.Dense(hidden, use_bias=False), keras.layers.BatchNormalization(),
                             keras.layers.ReLU()], name="feature_encoder")


def scan_head_losses(probs: np.ndarray, neighbours: np.ndarray, entropy_weight: float) -> np.ndarray:
    """SCAN loss of each head (heads x N x C probabilities) over all (sample, neighbour) pairs, in NumPy."""
    out = []
    for p in probs:
        dots = np.einsum("nc,nkc->nk", p, p[neighbours])
        cons = -np.log(np.maximum(dots, losses.EPS)).mean()
        mean = p.mean(0)
        out.append(cons + entropy_weight * float((mean * np.log(np.maximum(mean, losses.EPS))).sum()))
    return np.asarray(out)


# ---------------------------------------------------------------- the method
@register
class SCAN(Method):
    """pretext ('simclr' | 'rotnet' | 'hog') -> mine K neighbours -> SCAN loss -> self-labeling."""

    name = "scan"
    defaults = dict(pretext="simclr", pretext_epochs=20, width=32, batch_size=256, lr=1e-3, temperature=0.1,
                    n_neighbours=20, entropy_weight=5.0, n_heads=5, scan_epochs=30, end_to_end=False, views=0,
                    threshold=0.99, selflabel_rounds=5, selflabel_epochs=2, selflabel_min_steps=200, cache_dir=None,
                    verbose=0)
    presets = {
        # a CPU: a short SimCLR pretext on the small CNN, the SCAN step on its frozen embedding (and on 4 augmented
        # copies of each image, embedded once), self-labeling
        "quick": dict(pretext_epochs=5, scan_epochs=60, selflabel_rounds=2, selflabel_epochs=2),
        "standard": dict(pretext_epochs=8, batch_size=512, views=4, scan_epochs=40, selflabel_rounds=40,
                         selflabel_epochs=5),
        # full (a GPU): SimCLR 200 epochs, SCAN and self-labeling end to end on augmented images: ~40 min of a T4
        "full": dict(pretext_epochs=200, scan_epochs=100, end_to_end=True, selflabel_rounds=20,
                     selflabel_epochs=5, width=64, batch_size=512),
    }
    # threshold 0: in a few steps no sample is 0.99-confident, and the smoke run must reach self-labeling
    smoke = dict(pretext_epochs=3, scan_epochs=3, selflabel_rounds=1, selflabel_epochs=1, selflabel_min_steps=0,
                 batch_size=64, threshold=0.0)

    def __init__(self, n_clusters: int, seed: int = 0, **params):
        super().__init__(n_clusters, seed, **{**self.defaults, **params})
        if self.params["pretext"] not in ("simclr", "rotnet", "hog"):
            raise ValueError(f"pretext must be 'simclr', 'rotnet' or 'hog', got {self.params['pretext']!r}")
        self.log_ = {}

    # ---- helpers
    def _say(self, msg):
        if self.params["verbose"]:
            print(msg, flush=True)

    def _cache(self, x, step: str, keys: tuple) -> Path | None:
        """cache_dir/<step>-<hash of the step's settings, the seed and the images>, or None."""
        folder = self.checkpoint_folder(x, "cache_dir")
        if not folder:
            return None
        cfg = json.dumps({k: self.params[k] for k in keys}, sort_keys=True) + f"|{self.seed}|{x.shape}"
        digest = hashlib.sha1(cfg.encode() + np.ascontiguousarray(x).data).hexdigest()[:12]
        Path(folder).mkdir(parents=True, exist_ok=True)
        return Path(folder) / f"{step}-{digest}"

    # ---- steps
    def pretext(self, x):
        """Step 1: the pretext features of x (N x d) and, for CNN pretexts, the trained backbone."""
        p = self.params
        cache = self._cache(x, "pretext", ("pretext", "pretext_epochs", "width", "batch_size", "lr", "temperature"))
        t0 = time.perf_counter()
        if p["pretext"] == "hog":
            from .features import hog_features

            self.backbone_ = None
            raw = self._describe_views(x)
            self.pipeline_ = FeaturePipeline(64, whiten=True, l2=True, seed=self.seed).fit(raw[0])
        else:
            self.backbone_ = models.small_cnn_backbone(x.shape[1:], width=p["width"])
            if cache is not None and cache.with_suffix(".weights.h5").is_file():
                self.backbone_.load_weights(cache.with_suffix(".weights.h5"))
                self._say("pretext: loaded from cache")
            else:  # every finished epoch saved beside the cache: a restart continues the pretext
                partial = None if cache is None else cache.with_name(cache.name + "-partial")
                if p["pretext"] == "simclr":
                    bb, hist = train_simclr(x, p["pretext_epochs"], p["batch_size"], p["width"], p["lr"],
                                            p["temperature"], self.seed, colour=x.shape[-1] == 3,
                                            verbose=p["verbose"], checkpoint=partial)
                else:
                    bb, hist = train_rotnet(x, p["pretext_epochs"], p["batch_size"], p["width"], p["lr"],
                                            self.seed, verbose=p["verbose"], checkpoint=partial)
                self.backbone_.set_weights(bb.get_weights())
                self.log_["pretext_history"] = hist
                if cache is not None:
                    self.backbone_.save_weights(cache.with_suffix(".weights.h5"))
            raw = self._describe_views(x)
            self.pipeline_ = FeaturePipeline(None, whiten=False, l2=True).fit(raw[0])
        self.pretext_features_ = self.pipeline_.transform(raw[0])
        self.view_features_ = np.stack([self.pipeline_.transform(r) for r in raw[1:]]) if len(raw) > 1 else None
        self.log_["pretext_seconds"] = time.perf_counter() - t0
        return self.pretext_features_

    def _describe(self, x):
        """Raw pretext descriptors of images: HOG, or the trained backbone's embedding."""
        if self.params["pretext"] == "hog":
            from .features import hog_features

            return hog_features(np.asarray(x), border=2 if x.shape[1] >= 28 else 0)
        return embed(self.backbone_, x)

    def _describe_views(self, x):
        """Raw descriptors of x (row 0) and of `views` strongly augmented copies of it (the frozen-feature
        stand-in for the paper's augmented anchors and neighbours in the SCAN step; end to end, the images
        are augmented on the fly instead)."""
        from .features import describe_views

        copies = 0 if self._end_to_end() else self.params["views"]
        return describe_views(x, self._describe, augment.strong_augmenter(colour=x.shape[-1] == 3, seed=self.seed),
                              copies)

    def features(self, x):
        """Pretext features of new images (for pretext + KMeans and for predicting with the SCAN head)."""
        # the images fit() embedded: their pretext features
        return self._features_of(x, lambda x: self.pipeline_.transform(self._describe(x)))

    def _views(self, feats):
        """(1 + views) x N x d: the fitted images' features and those of their augmented copies (none end to
        end: `_describe_views` makes no copies there)."""
        extra = getattr(self, "view_features_", None)
        return feats[None] if extra is None else np.concatenate([feats[None], extra])

    def cluster(self, x, feats, neighbours):
        """Step 3: train the clustering heads with the SCAN loss; keep the head of lowest loss."""
        keras = _keras()
        p = self.params
        t0 = time.perf_counter()
        if p["end_to_end"] and self.backbone_ is not None:
            encoder, inputs, aug = self.backbone_, x, augment.strong_augmenter(colour=x.shape[-1] == 3,
                                                                            seed=self.seed)
        else:
            encoder, inputs, aug = feature_encoder(feats.shape[1]), feats, None
        self.scan_model_ = clustering_model(encoder, self.n_clusters, p["n_heads"], p["entropy_weight"],
                                            training.on_device(aug))
        self.scan_model_.compile(keras.optimizers.Adam(1e-4 if aug is not None else 1e-3))
        rng = np.random.default_rng(self.seed)
        views = self._views(feats)
        hist, seconds = [], []
        for epoch in range(p["scan_epochs"]):  # each epoch pairs every sample with one random neighbour
            t_epoch = time.perf_counter()
            partner = neighbours[np.arange(len(inputs)), rng.integers(0, neighbours.shape[1], len(inputs))]
            if aug is not None:
                data = view_batches(inputs, p["batch_size"], aug, self.seed + epoch, partner)
                h = self.scan_model_.fit(data, epochs=1, verbose=0, shuffle=False, callbacks=[training.NaNGuard()])
            else:
                order = rng.permutation(len(inputs))
                if len(views) > 1:  # a random view (original or augmented copy) of each anchor and neighbour
                    n = len(inputs)
                    anchor = views[rng.integers(0, len(views), n), np.arange(n)]
                    other = views[rng.integers(0, len(views), n), partner]
                else:
                    anchor, other = inputs, inputs[partner]
                h = self.scan_model_.fit((anchor[order], other[order]), None,
                                         batch_size=p["batch_size"], epochs=1, verbose=0, shuffle=False,
                                         callbacks=[training.NaNGuard()])
            hist.append(float(h.history["loss"][-1]))
            seconds.append(time.perf_counter() - t_epoch)
            if p["verbose"] and (aug is not None or epoch % 10 == 9 or epoch == p["scan_epochs"] - 1):
                print(training.progress_line("SCAN step: ", epoch, p["scan_epochs"], hist[-1], seconds, 2 * len(inputs)),
                      flush=True)
        probs = self._scan_probs(inputs)
        head_losses = scan_head_losses(probs, neighbours, p["entropy_weight"])
        self.best_head_ = int(np.argmin(head_losses))
        self.log_.update(scan_history=hist, scan_head_losses=head_losses.tolist(), best_head=self.best_head_,
                         scan_seconds=time.perf_counter() - t0)
        self._say(f"SCAN: head losses {np.round(head_losses, 3)}, kept head {self.best_head_}")
        return probs[self.best_head_]

    def _scan_probs(self, inputs):
        from keras import ops

        out = [ops.convert_to_numpy(self.scan_model_.probs(inputs[i:i + 2048])) for i in range(0, len(inputs), 2048)]
        return np.concatenate(out, axis=1)

    def selflabel_model(self, x):
        """A copy of the SCAN network (encoder + the kept head) to fine-tune: self-labeling continues training
        the same network, as in the paper, so its confidences are comparable with the SCAN step's."""
        keras = _keras()
        old = self.scan_model_.encoder
        if self._end_to_end():
            encoder = models.small_cnn_backbone(x.shape[1:], width=self.params["width"])
        else:
            encoder = feature_encoder(old.input_shape[-1])
        encoder.set_weights(old.get_weights())
        head = keras.layers.Dense(self.n_clusters, activation="softmax", dtype="float32", name="selflabel_head")
        model = keras.Sequential([keras.Input(old.input_shape[1:]), encoder, head], name="selflabel")
        head.set_weights(self.scan_model_.heads[self.best_head_].get_weights())
        if self._end_to_end():  # strongly augmented inputs: in the step on an accelerator, else in the pipeline
            model = training.augment_in_model(model, augment.strong_augmenter(colour=x.shape[-1] == 3,
                                                                              seed=self.seed))
        model.compile(keras.optimizers.Adam(self.params["lr"] / (10 if self._end_to_end() else 1)),
                      "sparse_categorical_crossentropy")
        return model

    def _cluster_floor(self, probs, labels, conf) -> np.ndarray:
        """Every cluster's most confident members up to a quarter of an average confident cluster: at 0.99 a
        few clusters may have no confident sample at all, and cross-entropy would then train them away."""
        floor = math.ceil(0.25 * conf.sum() / self.n_clusters)
        extra = np.zeros(len(labels), bool)
        for c in range(self.n_clusters):
            members = np.flatnonzero(labels == c)
            if 0 < (conf[members]).sum() < floor or (len(members) and not conf[members].any()):
                extra[members[np.argsort(-probs[members, c])[:floor]]] = True
        return extra

    def self_label(self, x, probs):
        """Step 4 (Algorithm 1, lines 9-12): while the confident set Y (confidence >= `threshold`) grows,
        fine-tune the SCAN network with cross-entropy on Y's pseudo-labels, class-balanced. Inputs are
        strongly augmented images when the network is a CNN (end_to_end); on frozen pretext features, the
        images' own features, with the encoder's feature noise and dropout as augmentation (the augmented
        copies of `views` lowered MNIST's ACC here: 0.968 -> 0.966, while training on the originals gives
        0.983). A round after which fewer samples are
        confident is undone and ends the loop (no labels involved). Returns the final probabilities on x, or
        None when too few samples are confident to start or no round was kept (with the reason in log_)."""
        p = self.params
        t0 = time.perf_counter()
        thr = p["threshold"]
        counts = [int((probs.max(1) >= thr).sum())]
        self.classifier_, model, kept, inputs = None, None, None, None
        for rnd in range(p["selflabel_rounds"]):
            conf = probs.max(1) >= thr
            if conf.sum() < max(self.n_clusters, p["batch_size"] // 4):
                msg = (f"self-labeling {'skipped' if model is None else 'stopped'}: only {int(conf.sum())} of "
                       f"{len(x)} samples have confidence >= {thr}; lower `threshold` (e.g. 0.9) or train the "
                       "SCAN step longer")
                warnings.warn(msg, stacklevel=2)
                self.log_["selflabel_warning"] = msg
                break
            labels = probs.argmax(1)
            conf = conf | self._cluster_floor(probs, labels, conf)
            if model is None:
                model, inputs = self.selflabel_model(x), self._head_input(x)
            before = model.get_weights()
            freq = np.bincount(labels[conf], minlength=self.n_clusters).astype(float)
            weights = {c: (conf.sum() / (self.n_clusters * f)) if f else 0.0 for c, f in enumerate(freq)}
            steps_per_epoch = math.ceil(conf.sum() / p["batch_size"])
            epochs = max(p["selflabel_epochs"], math.ceil(p["selflabel_min_steps"] / steps_per_epoch))
            if self._end_to_end():
                data = training.augmented_batches(
                    inputs[conf].astype("float32"), labels[conf], p["batch_size"],
                    augment.strong_augmenter(colour=x.shape[-1] == 3, seed=self.seed + rnd), seed=self.seed + rnd)
                model.fit(data, epochs=epochs, class_weight=weights, verbose=0, shuffle=False,
                          callbacks=[training.NaNGuard()])
            else:
                model.fit(inputs[conf], labels[conf], batch_size=p["batch_size"], epochs=epochs,
                          class_weight=weights, verbose=0, shuffle=True, callbacks=[training.NaNGuard()])
            new = model.predict(inputs, batch_size=2048, verbose=0)
            counts.append(int((new.max(1) >= thr).sum()))
            self._say(f"self-label round {rnd}: trained on {int(conf.sum())} for {epochs} epochs, "
                      f"now {counts[-1]} confident")
            if counts[-1] <= counts[-2]:
                model.set_weights(before)  # Algorithm 1 loops while Len(Y) increases: this round is undone
                self.log_["selflabel_stop"] = f"round {rnd}: the confident set did not grow ({counts[-2]} -> {counts[-1]})"
                break
            probs, kept = new, rnd
        if kept is not None:
            self.classifier_ = model
        self.log_.update(selflabel_confident=counts, selflabel_rounds_kept=0 if kept is None else kept + 1,
                         selflabel_seconds=time.perf_counter() - t0)
        return probs if self.classifier_ is not None else None

    # ---- estimator API
    def fit(self, x, y=None):
        p = self.params
        feats = self.pretext(x)
        self._keep_fitted(x, feats)
        self.kmeans_ = FeatureClusterer(self.n_clusters, None, False, False, "kmeans", 10, self.seed).fit(feats)
        t0 = time.perf_counter()
        self.neighbours_ = mine_neighbours(feats, p["n_neighbours"])
        self.log_["mining_seconds"] = time.perf_counter() - t0
        probs = self.cluster(x, feats, self.neighbours_)
        self.self_label(x, probs)
        return self

    def _end_to_end(self) -> bool:
        return bool(self.params["end_to_end"] and self.backbone_ is not None)

    def _head_input(self, x):
        return x.astype("float32") if self._end_to_end() else self.features(x)

    def predict_steps(self, x) -> dict:
        """Cluster labels of x after each step: pretext + KMeans, SCAN, self-labeling."""
        feats = self.features(x)
        out = {"pretext+kmeans": self.kmeans_.predict(feats),
               "scan": self._scan_probs(self._head_input(x))[self.best_head_].argmax(1)}
        if self.classifier_ is not None:
            out["selflabel"] = self.predict_proba(x).argmax(1)
        return out

    def predict_proba(self, x, step: str | None = None):
        """Cluster probabilities after the last step run (self-labeling when it kept a round, else SCAN), or
        after `step` = "scan" | "selflabel"."""
        step = step or ("selflabel" if self.classifier_ is not None else "scan")
        if step == "selflabel":
            if self.classifier_ is None:
                raise ValueError("self-labeling kept no round (see log_['selflabel_confident']): use step='scan'")
            return self.classifier_.predict(self._head_input(x), batch_size=2048, verbose=0)
        if step != "scan":
            raise ValueError(f"step must be 'scan' or 'selflabel', got {step!r}")
        return self._scan_probs(self._head_input(x))[self.best_head_]

    def predict(self, x):
        return self.predict_proba(x).argmax(1).astype(np.int64)
