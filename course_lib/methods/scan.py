"""SCAN: Semantic Clustering by Adopting Nearest neighbours (Van Gansbeke et al. 2020), the paper's method.

1. Pretext (`course_lib.pretext`): a small CNN learns features without labels, SimCLR (default) or RotNet.
2. Mining: the K nearest neighbours of every image in those features (`mine_neighbours`).
3. SCAN step (`SCANModel`, `train_scan`): a clustering network trained with  -log<p(x), p(n)> - w H(mean p)
   on (image, neighbour) pairs, several heads, the head with the lowest loss kept (no labels involved).
   With `overcluster` > 1 the heads have overcluster x K clusters, merged back into K by how often their
   members are each other's neighbours (`clustering.merge_by_links`): a class split in two comes back whole.
4. Self-labeling (`course_lib.selflabel.self_label`): the network fine-tuned on its confident predictions,
   strongly augmented images, while the confident set grows.

On a CPU (quick, standard) step 3 trains an MLP head on the frozen, L2-normalised SimCLR embedding (and on
`views` augmented copies of each image, embedded once); step 4 then fine-tunes the whole network, backbone ->
L2 -> MLP -> head, on strongly augmented images. On a GPU (full, `end_to_end`) step 3 trains the CNN end to end
on images augmented on the fly, as the paper does. Each step is cached in `cache_dir` (when given), so a run
resumes after the last finished step. The HOG stand-in is `scan-hog` (scan_hog.py).
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import keras
import numpy as np
from keras import ops

from .. import augment, losses, models, pretext, selflabel, training
from ..clustering import FeatureClusterer, FeaturePipeline, merge_by_links, merge_linked_pairs, nearest_neighbours
from ..distribute import per_replica
from ..pretext import view_batches  # the two-view pipeline: (anchor, neighbour) pairs here
from . import Method, register


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


# ---------------------------------------------------------------- step 3: the SCAN loss
@keras.saving.register_keras_serializable(package="course_lib")
class SCANModel(keras.Model):
    """encoder + n_heads softmax heads trained with the SCAN loss summed over heads; `augmenter` augments anchors
    and neighbours inside the training step (end to end on an accelerator), else None."""

    def __init__(self, encoder, n_clusters: int, n_heads: int = 5, entropy_weight: float = 5.0, augmenter=None,
                 **kwargs):
        super().__init__(**kwargs)
        self.encoder, self.augmenter = encoder, augmenter
        self.n_heads, self.entropy_weight = n_heads, entropy_weight
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
        total = sum(losses.scan_loss(pa[h], pn[h], self.entropy_weight)[0] for h in range(self.n_heads))
        return per_replica(total)


def train_scan(model, inputs, neighbours, *, epochs: int, batch_size: int, views=None, augmenter=None,
               seed: int = 0, verbose: int = 0) -> dict:
    """The SCAN step's loop: each epoch pairs every sample with one of its neighbours drawn at random.
    `views` (V x N x d): frozen features of augmented copies; a random view of anchor and neighbour is paired.
    `augmenter` (images, end to end): strong augmentation of both. Returns {"loss": [...], "seconds": [...]}."""
    rng = np.random.default_rng(seed)
    n = len(inputs)
    hist = {"loss": [], "seconds": []}
    for epoch in range(epochs):
        t0 = time.perf_counter()
        partner = neighbours[np.arange(n), rng.integers(0, neighbours.shape[1], n)]
        if augmenter is not None:
            data = view_batches(inputs, batch_size, augmenter, seed + epoch, partner)
            h = model.fit(data, epochs=1, verbose=0, shuffle=False, callbacks=[training.NaNGuard()])
        else:
            order = rng.permutation(n)
            if views is not None and len(views) > 1:
                anchor = views[rng.integers(0, len(views), n), np.arange(n)]
                other = views[rng.integers(0, len(views), n), partner]
            else:
                anchor, other = inputs, inputs[partner]
            h = model.fit((anchor[order], other[order]), None, batch_size=batch_size, epochs=1, verbose=0,
                          shuffle=False, callbacks=[training.NaNGuard()])
        hist["loss"].append(float(h.history["loss"][-1]))
        hist["seconds"].append(time.perf_counter() - t0)
        if verbose and (augmenter is not None or epoch % 10 == 9 or epoch == epochs - 1):
            print(training.progress_line("SCAN step: ", epoch, epochs, hist["loss"][-1], hist["seconds"], 2 * n),
                  flush=True)
    return hist


def feature_encoder(dim_in: int):
    """The MLP on frozen, L2-normalised features: one 512-unit block; Gaussian noise and dropout on its input
    stand in for augmentation."""
    return models.mlp_trunk(dim_in, 512, depth=1, noise=0.2, dropout=0.1, name="feature_encoder")


def scan_head_losses(probs: np.ndarray, neighbours: np.ndarray, entropy_weight: float) -> np.ndarray:
    """SCAN loss of each head (heads x N x C probabilities) over all (sample, neighbour) pairs, in NumPy."""
    out = []
    for p in probs:
        cons = -np.log(np.maximum(np.einsum("nc,nkc->nk", p, p[neighbours]), losses.EPS)).mean()
        mean = p.mean(0)
        out.append(cons + entropy_weight * float((mean * np.log(np.maximum(mean, losses.EPS))).sum()))
    return np.asarray(out)


def head_probs(model, inputs, batch: int = 2048) -> np.ndarray:
    """Every head's probabilities of a `SCANModel` on inputs (heads x N x C), in batches."""
    out = [ops.convert_to_numpy(model.probs(inputs[i:i + batch])) for i in range(0, len(inputs), batch)]
    return np.concatenate(out, axis=1)


def copy_model(model):
    """A new model of the same architecture holding a copy of `model`'s weights."""
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


# ---------------------------------------------------------------- the method
@register
class SCAN(Method):
    """pretext ('simclr' | 'rotnet') -> mine K neighbours -> SCAN loss -> self-labeling [-> CNN student]."""

    name = "scan"
    defaults = dict(pretext="simclr", pretext_epochs=20, width=32, batch_size=256, learning_rate=1e-3,
                    temperature=0.1, n_neighbours=20, entropy_weight=5.0, n_heads=5, scan_epochs=30, overcluster=1,
                    end_to_end=False, views=0, threshold=0.99, selflabel_rounds=5, selflabel_epochs=2,
                    selflabel_min_steps=200, student=None, student_epochs=15, student_width=32, student_rounds=2,
                    student_select="confident", student_agreement=0.8, refine=0,
                    student_scan=False, student_finetune=0, student_finetune_weight=1.0, blur=0.0, merge_pairs=False,
                    cache_dir=None, verbose=0)
    presets = {
        # a CPU: short SimCLR, the SCAN step on the frozen embedding, self-labeling fine-tunes the whole CNN
        "quick": dict(pretext_epochs=5, scan_epochs=60, selflabel_rounds=2, selflabel_epochs=2),
        # all images, 4 augmented copies of each embedded once for the SCAN step; 8 SimCLR epochs and at most 4
        # self-labeling rounds of the whole CNN: about 30 CPU minutes on GTSRB
        "standard": dict(pretext_epochs=8, batch_size=512, views=4, scan_epochs=40, selflabel_rounds=4,
                         selflabel_epochs=2),
        "full": dict(pretext_epochs=200, scan_epochs=100, end_to_end=True, selflabel_rounds=20,
                     selflabel_epochs=5, width=64, batch_size=512),  # a GPU: ~40 min of a T4
    }
    # threshold 0: in a few steps no sample is 0.99-confident, and the smoke run must reach self-labeling
    smoke = dict(pretext_epochs=2, scan_epochs=2, selflabel_rounds=1, selflabel_epochs=1, selflabel_min_steps=0,
                 batch_size=64, threshold=0.0)
    pretexts = ("simclr", "rotnet")
    selflabel_on_images = True  # self-labeling trains on strongly augmented images

    def __init__(self, n_clusters: int, seed: int = 0, **params):
        super().__init__(n_clusters, seed, **{**self.defaults, **params})
        if self.params.get("pretext", self.pretexts[0]) not in self.pretexts:
            raise ValueError(f"pretext must be one of {self.pretexts}, got {self.params['pretext']!r}")
        if self.params["student"] not in (None, "cnn"):
            raise ValueError(f"student must be None or 'cnn', got {self.params['student']!r}")
        if self.params["student_select"] not in ("confident", "reliable"):
            raise ValueError(f"student_select must be 'confident' (the teacher's confident samples) or 'reliable' "
                             f"(those most of whose neighbours share their cluster), got {self.params['student_select']!r}")
        if int(self.params["refine"]) < 0 or (int(self.params["refine"]) and self.params["student"] != "cnn"):
            raise ValueError(f"refine (passes of iterated distillation) must be 0, or >= 1 with student='cnn' (the "
                             f"passes mine neighbours in the student's features), got refine={self.params['refine']} "
                             f"and student={self.params['student']!r}")
        if self.params["student_scan"] and self.params["student"] != "cnn":
            raise ValueError("student_scan=True runs the SCAN step on the CNN student's embedding: it needs "
                             f"student='cnn', got student={self.params['student']!r}")
        if int(self.params["student_finetune"]) < 0 or (int(self.params["student_finetune"]) and
                                                         (self.params["student"] != "cnn" or self.params["student_scan"])):
            raise ValueError("student_finetune (epochs of the SCAN loss end to end through the CNN student) must be 0, "
                             "or > 0 with student='cnn' and without student_scan, got "
                             f"student_finetune={self.params['student_finetune']}, student={self.params['student']!r}, "
                             f"student_scan={self.params['student_scan']}")
        if not 0 <= float(self.params["blur"]) <= 1:
            raise ValueError(f"blur is the share of strongly augmented images that are blurred, in [0, 1], got "
                             f"{self.params['blur']}")
        if int(self.params["overcluster"]) < 1:
            raise ValueError(f"overcluster must be an integer >= 1 (1: no over-clustering), got {self.params['overcluster']}")
        self.log_, self.classifier_, self.student_, self.merge_ = {}, None, None, None
        self.first_student_ = None  # with refine: the student of the first pass
        self.student_scan_ = None  # with student_scan: (SCAN network on the student's embedding, kept head)
        self.finetuned_ = None  # with student_finetune: the student's network trained end to end with the SCAN loss
        self.pair_merge_ = None  # with merge_pairs: K x K matrix joining the final clusters that are halves of one

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

    def _augmenter(self, x, seed=0):
        return augment.strong_augmenter(colour=x.shape[-1] == 3, seed=self.seed + seed,
                                        blur=float(self.params["blur"]))

    # ---- step 1
    def pretext(self, x):
        """Step 1: train (or load) the pretext backbone; the L2-normalised features of x (N x d)."""
        p = self.params
        t0 = time.perf_counter()
        keys = ("pretext", "pretext_epochs", "width", "batch_size", "learning_rate", "temperature")
        cache = self._cache(x, "pretext", keys)
        self.backbone_ = models.small_cnn_backbone(x.shape[1:], width=p["width"])
        if cache is not None and cache.with_suffix(".weights.h5").is_file():
            self.backbone_.load_weights(cache.with_suffix(".weights.h5"))
            self._say("pretext: loaded from cache")
        else:  # every finished epoch saved beside the cache: a restart continues the pretext
            partial = None if cache is None else cache.with_name(cache.name + "-partial")
            kw = dict(batch_size=p["batch_size"], width=p["width"], learning_rate=p["learning_rate"], seed=self.seed,
                      verbose=p["verbose"], checkpoint=partial)
            if p["pretext"] == "simclr":
                bb, hist = pretext.train_simclr(x, p["pretext_epochs"], temperature=p["temperature"], **kw)
            else:
                bb, hist = pretext.train_rotnet(x, p["pretext_epochs"], **kw)
            self.backbone_.set_weights(bb.get_weights())
            self.log_["pretext_history"] = hist
            if cache is not None:
                self.backbone_.save_weights(cache.with_suffix(".weights.h5"))
        self._describe_all(x)
        self.log_["pretext_seconds"] = time.perf_counter() - t0
        return self.pretext_features_

    def _describe(self, x):
        return pretext.embed(self.backbone_, x)

    def _describe_all(self, x, pca_dim=None, whiten=False):
        """pretext_features_ (N x d) and view_features_ (`views` x N x d: strongly augmented copies described
        once, the frozen-feature stand-in for augmented anchors and neighbours; none end to end)."""
        from .features import describe_views

        copies = 0 if self._end_to_end() else self.params["views"]
        raw = describe_views(x, self._describe, self._augmenter(x), copies)
        self.pipeline_ = self._pipeline(pca_dim, whiten).fit(raw[0])
        self.pretext_features_ = self.pipeline_.transform(raw[0])
        self.view_features_ = np.stack([self.pipeline_.transform(r) for r in raw[1:]]) if copies else None

    def _pipeline(self, pca_dim, whiten):
        return FeaturePipeline(pca_dim, whiten=whiten, l2=True, seed=self.seed)

    def features(self, x):
        """Pretext features of new images (the fitted images': those fit() computed)."""
        return self._features_of(x, lambda x: self.pipeline_.transform(self._describe(x)))

    # ---- step 3
    def cluster(self, x, feats, neighbours):
        """Step 3: train the clustering heads with the SCAN loss; keep the head of lowest loss; with
        `overcluster` > 1, merge its clusters into K by neighbour links. Returns N x K probabilities."""
        p = self.params
        t0 = time.perf_counter()
        end_to_end = self._end_to_end()
        encoder = self.backbone_ if end_to_end else feature_encoder(feats.shape[1])
        aug = self._augmenter(x) if end_to_end else None
        self.scan_model_ = SCANModel(encoder, self.n_clusters * int(p["overcluster"]), p["n_heads"],
                                     p["entropy_weight"], training.on_device(aug))
        self.scan_model_.compile(keras.optimizers.Adam(p["learning_rate"] / (10 if end_to_end else 1)))
        views = None
        if not end_to_end and getattr(self, "view_features_", None) is not None:
            views = np.concatenate([feats[None], self.view_features_])
        hist = train_scan(self.scan_model_, x if end_to_end else feats, neighbours, epochs=p["scan_epochs"],
                          batch_size=p["batch_size"], views=views, augmenter=aug, seed=self.seed,
                          verbose=p["verbose"])
        probs = self._scan_probs(x if end_to_end else feats)
        head_losses = scan_head_losses(probs, neighbours, p["entropy_weight"])
        self.best_head_ = training.lowest_loss(head_losses)
        self.log_.update(scan_history=hist["loss"], scan_head_losses=head_losses.tolist(), best_head=self.best_head_,
                         scan_seconds=time.perf_counter() - t0)
        self._say(f"SCAN: head losses {np.round(head_losses, 3)}, kept head {self.best_head_}")
        if int(p["overcluster"]) > 1:
            self.merge_ = merge_by_links(probs[self.best_head_], neighbours, self.n_clusters)
            self.log_["merged_groups"] = [np.flatnonzero(col).tolist() for col in self.merge_.T]
            self._say(f"SCAN: {self.merge_.shape[0]} clusters merged into {self.n_clusters} by neighbour links")
        return self._merged(probs[self.best_head_])

    def _merged(self, probs):
        """K' over-clustered probabilities -> K (unchanged without over-clustering)."""
        return probs if self.merge_ is None else probs @ self.merge_

    def kept_head(self) -> list:
        """The layers that end the self-labeling network: the SCAN step's kept head, then (over-clustering) a
        frozen layer that sums the probabilities of merged clusters, so it outputs K clusters. Built by the model
        they are added to; `copy_kept_head` then gives them the SCAN step's weights."""
        units = self.scan_model_.heads[self.best_head_].units
        layers = [keras.layers.Dense(units, activation="softmax", dtype="float32", name="selflabel_head")]
        if self.merge_ is not None:
            layers.append(keras.layers.Dense(self.n_clusters, use_bias=False, trainable=False, dtype="float32",
                                             name="merge"))
        return layers

    def copy_kept_head(self, layers) -> None:
        layers[0].set_weights(self.scan_model_.heads[self.best_head_].get_weights())
        if self.merge_ is not None:
            layers[1].set_weights([self.merge_])

    def _scan_probs(self, inputs):
        return head_probs(self.scan_model_, inputs)

    # ---- step 4
    def selflabel_network(self, x):
        """A copy of the SCAN network on images, to fine-tune: backbone -> L2 -> MLP -> kept head (on the frozen
        embedding's path), or backbone -> kept head (end to end); strongly augmented in the model on an
        accelerator, compiled at learning_rate / 10."""
        layers = [copy_model(self.backbone_)]
        if not self._end_to_end():
            layers += [keras.layers.UnitNormalization(dtype="float32"), copy_model(self.scan_model_.encoder)]
        head = self.kept_head()
        model = keras.Sequential([keras.Input(x.shape[1:]), *layers, *head], name="selflabel")
        self.copy_kept_head(head)
        model = training.augment_in_model(model, self._augmenter(x))
        model.compile(keras.optimizers.Adam(self.params["learning_rate"] / 10), "sparse_categorical_crossentropy")
        return model

    def _selflabel_inputs(self, x):
        """What the self-labeling network reads: the images (scan-hog: the frozen features)."""
        return x.astype("float32")

    def self_label(self, x, probs):
        """Step 4 (Algorithm 1, lines 9-12), `selflabel.self_label` on the SCAN network; then, with
        `student="cnn"`, the final clustering distilled into a fresh CNN on the pixels. Returns the final
        probabilities on x, or None when no round was kept (the reason in log_)."""
        p = self.params
        model = self.selflabel_network(x)
        aug = self._augmenter(x, 1) if self.selflabel_on_images else None
        res = selflabel.self_label(model, self._selflabel_inputs(x), probs, threshold=p["threshold"],
                                   rounds=p["selflabel_rounds"], epochs=p["selflabel_epochs"],
                                   min_steps=p["selflabel_min_steps"], batch_size=p["batch_size"], augmenter=aug,
                                   seed=self.seed, verbose=p["verbose"])
        self.classifier_ = model if res.probs is not None else None
        self.log_.update(selflabel_confident=res.confident, selflabel_rounds_kept=res.rounds_kept,
                         selflabel_seconds=res.seconds)
        self.log_.update({f"selflabel_{k}": v for k, v in (("stop", res.stop), ("warning", res.warning)) if v})
        if p["student"] == "cnn":
            return self.distil(x, probs if res.probs is None else res.probs)
        return res.probs

    def distil(self, x, probs):
        """issue 20's step: a fresh CNN on the pixels trained on the clustering's confident pseudo-labels (round 0),
        then on its own confident predictions while they outgrow the teacher's set, up to `student_rounds` rounds
        of at least `student_epochs` epochs (`selflabel.self_label(fresh=True)`). `student_select="reliable"`:
        round 0 trains instead on the samples at least `student_agreement` of whose mined neighbours share their
        cluster (`selflabel.reliable`)."""
        p = self.params
        start = None
        if p["student_select"] == "reliable":
            start = selflabel.reliable(probs.argmax(1), self.neighbours_, p["student_agreement"])
            self.log_["student_reliable"] = int(start.sum())
        aug = self._augmenter(x, 2)
        student = selflabel.cnn_student(x.shape[1:], self.n_clusters, p["student_width"], aug, p["learning_rate"])
        res = selflabel.self_label(student, x, probs, threshold=p["threshold"], rounds=p["student_rounds"],
                                   epochs=p["student_epochs"], min_steps=p["selflabel_min_steps"],
                                   batch_size=p["batch_size"], augmenter=aug, fresh=True, start=start, seed=self.seed,
                                   verbose=p["verbose"])
        self.student_ = student if res.probs is not None else None
        self.log_.update(student_confident=res.confident, student_rounds_kept=res.rounds_kept,
                         student_seconds=res.seconds)
        return res.probs

    # ---- estimator API
    def fit(self, x, y=None):
        p = self.params
        feats = self.pretext(x)  # step 1
        self._keep_fitted(x, feats)
        self.kmeans_ = FeatureClusterer(self.n_clusters, None, False, False, "kmeans", 10, self.seed).fit(feats)
        t0 = time.perf_counter()
        self.neighbours_ = mine_neighbours(feats, p["n_neighbours"])  # step 2
        self.log_["mining_seconds"] = time.perf_counter() - t0
        probs = self.cluster(x, feats, self.neighbours_)  # step 3
        self.self_label(x, probs)  # step 4
        for _ in range(int(p["refine"])):  # iterated distillation: steps 2-4 again, in the student's features too
            if not self.refine(x, feats):
                break
        if p["student_scan"]:
            self.scan_on_student(x)
        if int(p["student_finetune"]):
            self.finetune_student(x, feats)
        if p["merge_pairs"]:
            self.merge_pairs(x)
        return self

    def merge_pairs(self, x) -> None:
        """issue 20: the last step's clusters that are halves of one group joined, by the mined neighbours' links
        between them (`clustering.merge_linked_pairs`: a pair joined only while its members' strays mostly go to
        each other), no labels. The entropy term wants K equal clusters and cuts the largest classes in two; the
        joined-away clusters stay empty."""
        t0 = time.perf_counter()
        self.pair_merge_ = None
        labels = self.predict_proba(x).argmax(1)
        merge, joins = merge_linked_pairs(labels, self.neighbours_, self.n_clusters)
        self.pair_merge_ = merge
        self.log_.update(merge_pairs_joined=joins, merge_pairs_seconds=time.perf_counter() - t0)
        self._say(f"merge pairs: {len(joins)} pairs of clusters joined " +
                  ", ".join(f"{b} -> {a} (R {r:.2f})" for a, b, r in joins))

    def _mine_with_student(self, x, feats) -> np.ndarray:
        """Neighbours mined in the pretext features joined to the CNN student's embedding (each L2-normalised,
        halves of equal weight): what `refine` and `student_finetune` train on."""
        joint = np.concatenate([feats, selflabel.student_embedding(self.student_, x)], axis=1) / np.sqrt(2)
        return mine_neighbours(joint, self.params["n_neighbours"])

    def _share_kept(self, neighbours) -> float:
        """The share of the pretext's neighbours (`neighbours_`) that `neighbours` keep."""
        return float(np.mean([len(np.intersect1d(a, b)) for a, b in zip(neighbours, self.neighbours_)])
                     / neighbours.shape[1])

    def refine(self, x, feats) -> bool:
        """One pass of iterated distillation (issue 20): the CNN student's features, which see what the pretext
        features may miss (on GTSRB: colour, the pictogram inside the rim), are joined to the pretext features
        (each L2-normalised, halves of equal weight); neighbours mined there; then the SCAN step, self-labeling
        and a fresh student again. `neighbours_` stays the pretext's (neighbour consistency stays comparable).
        The previous passes' logs are kept in log_["passes"]. False when there is no student to refine from."""
        p = self.params
        if self.student_ is None:
            self.log_["refine_stop"] = "the student kept no round: nothing to refine from"
            return False
        t0 = time.perf_counter()
        neighbours = self._mine_with_student(x, feats)
        kept = self._share_kept(neighbours)
        passes = self.log_.pop("passes", [])
        self.log_ = {**{k: self.log_[k] for k in ("pretext_seconds", "mining_seconds") if k in self.log_},
                     "passes": passes + [dict(self.log_)], "refine_neighbours_kept": kept}
        if self.first_student_ is None:
            self.first_student_ = self.student_
        self._say(f"refine: neighbours mined in HOG + the student's features; {kept:.0%} of the previous ones kept")
        self.self_label(x, self.cluster(x, feats, neighbours))
        self.log_["refine_seconds"] = time.perf_counter() - t0
        return True

    def scan_on_student(self, x) -> bool:
        """issue 20: the SCAN step once more, on the CNN student's own frozen, L2-normalised embedding (and on
        that of `views` augmented copies): neighbours mined there, a fresh MLP and heads trained with the SCAN
        loss, the head of lowest loss kept. Unlike `refine`, what the student learned from the pixels decides
        the clusters as well as the neighbours. The final clustering is that head on the student's embedding.
        False when there is no student to read."""
        p = self.params
        if self.student_ is None:
            self.log_["student_scan_stop"] = "the student kept no round: no embedding to cluster"
            return False
        from .features import describe_views

        t0 = time.perf_counter()
        views = describe_views(x, lambda im: selflabel.student_embedding(self.student_, im), self._augmenter(x, 3),
                               p["views"])
        feats = views[0]
        neighbours = mine_neighbours(feats, p["n_neighbours"])
        kept = self._share_kept(neighbours)
        model = SCANModel(feature_encoder(feats.shape[1]), self.n_clusters, p["n_heads"], p["entropy_weight"])
        model.compile(keras.optimizers.Adam(p["learning_rate"]))
        hist = train_scan(model, feats, neighbours, epochs=p["scan_epochs"], batch_size=p["batch_size"],
                          views=views if p["views"] else None, seed=self.seed + 3, verbose=p["verbose"])
        probs = head_probs(model, feats)
        head_losses = scan_head_losses(probs, neighbours, p["entropy_weight"])
        self.student_scan_ = (model, training.lowest_loss(head_losses))
        self.log_.update(student_scan_neighbours_kept=kept,
                         student_scan_head_losses=head_losses.tolist(), student_scan_history=hist["loss"],
                         student_scan_seconds=time.perf_counter() - t0)
        self._say(f"SCAN on the student's embedding: head losses {np.round(head_losses, 3)}, "
                  f"{kept:.0%} of the pretext's neighbours kept")
        return True

    def finetune_student(self, x, feats) -> bool:
        """issue 20: SCAN end to end through the CNN student, as the paper trains its network: the student's
        backbone with its softmax as the one head, trained on strongly augmented (image, neighbour) pairs with
        the SCAN loss for `student_finetune` epochs at learning_rate / 10 and entropy weight
        `student_finetune_weight`, starting from the student's clustering. The neighbours are mined in the
        pretext features joined to the student's (as `refine`). The fine-tuned network gives the final clustering.
        False when there is no student to start from."""
        p = self.params
        if self.student_ is None:
            self.log_["student_finetune_stop"] = "the student kept no round: nothing to fine-tune"
            return False
        t0 = time.perf_counter()
        backbone, softmax = selflabel.student_parts(self.student_)
        neighbours = self._mine_with_student(x, feats)
        kept = self._share_kept(neighbours)
        aug, images = self._augmenter(x, 4), x.astype("float32")
        model = SCANModel(copy_model(backbone), self.n_clusters, 1, p["student_finetune_weight"],
                          training.on_device(aug))
        model.probs(images[:1])  # build, then start from the student's softmax
        model.heads[0].set_weights(softmax.get_weights())
        model.compile(keras.optimizers.Adam(p["learning_rate"] / 10))
        start = head_probs(model, images)
        hist = train_scan(model, x, neighbours, epochs=int(p["student_finetune"]), batch_size=p["batch_size"],
                          augmenter=aug, seed=self.seed + 4, verbose=p["verbose"])
        probs = head_probs(model, images)
        self.finetuned_ = model
        self.log_.update(
            student_finetune_neighbours_kept=kept, student_finetune_history=hist["loss"],
            student_finetune_loss=[float(scan_head_losses(q, neighbours, p["student_finetune_weight"])[0])
                                   for q in (start, probs)],  # before, after: the SCAN loss on all pairs
            student_finetune_clusters_used=int(len(np.unique(probs[0].argmax(1)))),
            student_finetune_seconds=time.perf_counter() - t0)
        self._say(f"SCAN through the student: loss {self.log_['student_finetune_loss'][0]:.3f} -> "
                  f"{self.log_['student_finetune_loss'][1]:.3f}, {self.log_['student_finetune_clusters_used']} "
                  f"clusters used, {kept:.0%} of the pretext's neighbours kept")
        return True

    def _end_to_end(self) -> bool:
        return bool(self.params.get("end_to_end"))

    def _head_input(self, x):
        return x.astype("float32") if self._end_to_end() else self.features(x)

    def predict_steps(self, x) -> dict:
        """Cluster labels of x after each step: pretext + KMeans, SCAN, self-labeling, the CNN student."""
        out = {"pretext+kmeans": self.kmeans_.predict(self.features(x))}
        if self.first_student_ is not None:  # refine: the first pass's student, whose features the last pass mined
            out["first student"] = np.asarray(self.first_student_.predict(x.astype("float32"), batch_size=1024,
                                                                          verbose=0)).argmax(1)
        probs = {"scan": self.predict_proba(x, "scan")}
        for step, made in (("selflabel", self.classifier_), ("student", self.student_),
                           ("student scan", self.student_scan_), ("student finetuned", self.finetuned_)):
            if made is not None:
                probs[step] = self.predict_proba(x, step)
        out.update({step: p.argmax(1) for step, p in probs.items()})
        if self.pair_merge_ is not None:  # the last step's probabilities, its closed pairs joined
            out["merged pairs"] = (probs[self._last_step()] @ self.pair_merge_).argmax(1)
        return out

    def _last_step(self) -> str:
        return ("student finetuned" if self.finetuned_ is not None else
                "student scan" if self.student_scan_ is not None else
                "student" if self.student_ is not None else
                "selflabel" if self.classifier_ is not None else "scan")

    def predict_proba(self, x, step: str | None = None):
        """Cluster probabilities after the last step run (the student fine-tuned with the SCAN loss, else the SCAN
        step on the student's embedding, else the student, else self-labeling when it kept a round, else SCAN;
        then, with merge_pairs, its linked pairs of clusters joined), or after `step` = "scan" | "selflabel" |
        "student" | "student scan" | "student finetuned" (before any join)."""
        if step is None and self.pair_merge_ is not None:
            return self.predict_proba(x, self._last_step()) @ self.pair_merge_
        step = step or self._last_step()
        if step == "scan":
            return self._merged(self._scan_probs(self._head_input(x))[self.best_head_])
        if step == "student scan" and self.student_scan_ is not None:
            model, head = self.student_scan_
            return head_probs(model, selflabel.student_embedding(self.student_, x))[head].astype(np.float32)
        if step == "student finetuned" and self.finetuned_ is not None:
            return head_probs(self.finetuned_, x.astype("float32"))[0].astype(np.float32)
        if step not in ("selflabel", "student"):
            raise ValueError(f"step must be 'scan', 'selflabel', 'student', 'student scan' (with student_scan) or "
                             f"'student finetuned' (with student_finetune), got {step!r}")
        model = self.classifier_ if step == "selflabel" else self.student_
        if model is None:
            raise ValueError(f"the {step} step kept no model (see log_): use step='scan'")
        inputs = x.astype("float32") if step == "student" else self._selflabel_inputs(x)
        return np.asarray(model.predict(inputs, batch_size=1024, verbose=0), np.float32)

    def predict(self, x):
        return self.predict_proba(x).argmax(1).astype(np.int64)
