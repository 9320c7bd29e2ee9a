"""IIC: Invariant Information Clustering (Ji, Henriques and Vedaldi, ICCV 2019), in Keras 3.

A network maps an image x and a perturbed copy x' to cluster probabilities z, z' (softmax over K) and is
trained to maximise their mutual information I(z, z') (`losses.iic_loss`): the clusters must survive the
perturbations (agreement) and be used evenly (the H(z) inside I). As in the official code (xu-ji/IIC):

- two heads on one trunk: head B with K = number of classes (the answer) and head A over-clustering
  (several times K, it only shapes the trunk), each with several sub-heads (independent softmax layers);
- heads trained in alternation, one epoch each (`heads="alternate"`, B first), or on the summed loss;
- every image repeated r times in a batch, each copy perturbed differently (crops/scale, small rotations,
  colour jitter), all paired with the same 'original' view; batches of many images per cluster;
- Sobel input for colour images (`models.SobelFilter`): colour alone is an easy, useless way to agree;
- the reported sub-head is the one with the LOWEST IIC LOSS ON THE TRAINING DATA: chosen without labels.

Two trunks: `trunk="cnn"` (the kit's small CNN on the images, trained end to end as in the paper: the full
profile, for a GPU) and `trunk="hog"` (quick and standard, for a CPU): every image and every perturbed copy
is described once by HOG (+ colour histograms), reduced by PCA, and a two-layer MLP is trained on the IIC
objective over those view features (`feature_view_batches`).

The training model (`IICModel`) overrides `compute_loss`, so `model.fit` trains it with callbacks,
progress bars and `BackupAndRestore` checkpoints; the perturbed copies are made in a tf.data pipeline
(`iic_batches`). `IICMonitor` records, per epoch, the cluster sizes, the entropy of the mean prediction,
a collapse check (`collapse_warning`) and, for display only, ACC on labelled images it is given.
"""
from __future__ import annotations

import contextlib
import math
import time
import warnings

import keras
import numpy as np
from keras import layers, ops

from .. import losses, metrics, training
from ..augment import F32
from ..distribute import per_replica
from ..clustering import FeaturePipeline
from ..models import SobelFilter
from . import Method, register

HEADS = ("A", "B")  # A = over-clustering, B = main (K clusters); history["head"] holds the index


# ---------------------------------------------------------------- perturbations
def iic_views(input_shape, input_size: int = 24, crop: float = 0.72, view_scale=(0.57, 0.86),
              rotation: float = 25.0, jitter: float = 0.4, seed: int = 0):
    """(original view, perturbed view, evaluation view): three Keras preprocessing pipelines, [0, 255] in/out.

    - evaluation: the centre `crop` (fraction of the side) resized to `input_size`;
    - original (x): the same crop, shifted at random within the margin (the paper's random/centre crop);
    - perturbed (x'): rotation up to +-`rotation` degrees, a crop of `view_scale` of the side at a random
      place, resized to `input_size`, then brightness/contrast (and saturation/hue for colour) jitter.
    No horizontal flips: traffic-sign classes come in mirror pairs (33/34, 36/37, 38/39).
    """
    h = input_shape[0]
    side = max(8, round(h * crop))
    margin = (1 - crop) / 2
    resize = [layers.Resizing(input_size, input_size, dtype=F32)] if side != input_size else []
    evaluation = keras.Sequential([layers.CenterCrop(side, side, dtype=F32), *resize], name="eval_view")
    original = keras.Sequential([
        layers.RandomTranslation(margin, margin, fill_mode="nearest", seed=seed, dtype=F32),
        layers.CenterCrop(side, side, dtype=F32), *resize], name="original_view")
    lo, hi = view_scale
    perturbed = [
        layers.RandomRotation(rotation / 360.0, fill_mode="nearest", seed=seed + 1, dtype=F32),
        layers.RandomZoom((lo - 1.0, hi - 1.0), fill_mode="nearest", seed=seed + 2, dtype=F32),  # zoom in: a crop
        layers.RandomTranslation((1 - hi) / 2, (1 - hi) / 2, fill_mode="nearest", seed=seed + 3, dtype=F32),
        layers.Resizing(input_size, input_size, dtype=F32),
    ]
    if jitter:
        if input_shape[-1] == 3:
            perturbed.append(layers.RandomColorJitter(
                value_range=(0, 255), brightness_factor=jitter / 2, contrast_factor=jitter,
                saturation_factor=(0.5 - jitter / 2, 0.5 + jitter / 2), hue_factor=jitter / 4, seed=seed + 4, dtype=F32))
        else:
            perturbed += [layers.RandomBrightness(jitter / 2, value_range=(0, 255), seed=seed + 4, dtype=F32),
                          layers.RandomContrast(jitter, value_range=(0, 255), seed=seed + 5, dtype=F32)]
    return original, keras.Sequential(perturbed, name="perturbed_view"), evaluation


def iic_batches(x, batch_images: int, copies: int, original, perturbed, seed: int = 0, shuffle: bool = True):
    """Batches ((x, x'),) for fit: x = original views of `batch_images` images (n), x' = `copies` (r)
    perturbed copies of each, stacked image by image (n * r images; copy j of image i at i * r + j): split
    between replicas, each half of x' holds the copies of its half of x.

    With TensorFlow a tf.data pipeline: the perturbations run on its threads beside the training step.
    The last incomplete batch is dropped (a small batch estimates P badly); reshuffled every epoch.
    perturbed=None: batches of the plain images (float32), for a model that makes the copies in its step.
    """
    n = min(batch_images, len(x))
    tf = training.tensorflow_or_none()
    if tf is None:  # batches of the same form from a PyDataset (shuffled by NumPy)
        def make(idx):
            b = x[idx].astype("float32")
            if perturbed is None:
                return b
            return ((ops.convert_to_numpy(original(b, training=True)),
                     ops.convert_to_numpy(perturbed(np.repeat(b, copies, axis=0), training=True))),)

        return training.IndexBatches(len(x), n, make, seed, shuffle, drop_remainder=True)

    def make_pairs(b):
        b = tf.cast(b, "float32")
        if perturbed is None:
            return b
        return ((original(b, training=True), perturbed(tf.repeat(b, copies, axis=0), training=True)),)

    ds = tf.data.Dataset.from_tensor_slices(x)
    if shuffle:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(n, drop_remainder=True).map(make_pairs, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


class FeatureViewBatches(training.IndexBatches):
    """((f, f'),) batches from precomputed view features `feats` ((1 + copies) x N x d, see `IIC.view_features`):
    f = the features of `n` unperturbed images, f' = those of their `copies` perturbed views, stacked image by
    image as in `iic_batches`. Reshuffled every epoch; the last incomplete batch is dropped. Any backend."""

    def __init__(self, feats, n: int, seed: int = 0, shuffle: bool = True):
        self.feats = feats
        super().__init__(feats.shape[1], min(n, feats.shape[1]), self._pairs, seed, shuffle, drop_remainder=True)

    def _pairs(self, idx):
        return ((self.feats[0, idx], self.feats[1:, idx].swapaxes(0, 1).reshape(-1, self.feats.shape[-1])),)


def feature_view_batches(feats, n: int, seed: int = 0, shuffle: bool = True):
    """`FeatureViewBatches`' batches, in the same order; where TensorFlow is installed as a tf.data pipeline
    that gathers them in the graph (no Python per step: ~15% faster training steps on a 2-core CPU)."""
    batches = FeatureViewBatches(feats, n, seed, shuffle)
    tf = training.tensorflow_or_none()
    if tf is None:
        return batches
    table, dim = tf.constant(feats), feats.shape[-1]

    def pairs(idx):
        f = tf.gather(table, idx, axis=1)
        return ((f[0], tf.reshape(tf.transpose(f[1:], (1, 0, 2)), (-1, dim))),)

    ds = training.tf_index_batches(batches, tf).map(pairs, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.apply(tf.data.experimental.assert_cardinality(len(batches))).prefetch(tf.data.AUTOTUNE)


# ---------------------------------------------------------------- networks
@keras.saving.register_keras_serializable(package="course_lib")
class PerImageNorm(layers.Layer):
    """Divide each image by its root-mean-square (after removing its mean when `center`): the same sign
    in bright sun or at dusk gives the same input (HOG's contrast normalisation, image-wide)."""

    def __init__(self, center: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.center = center

    def call(self, x):
        x = ops.cast(x, "float32")
        if self.center:
            x = x - ops.mean(x, axis=(1, 2, 3), keepdims=True)
        return x / ops.sqrt(ops.mean(ops.square(x), axis=(1, 2, 3), keepdims=True) + 1e-6)

    def get_config(self):
        return {**super().get_config(), "center": self.center}


def iic_trunk(input_shape, width: int = 32, sobel=False, pool: str = "gap", normalise: bool = False,
              name: str = "iic_trunk"):
    """The kit's small 4-block CNN (`models.small_cnn_backbone`), with IIC's input options.

    sobel: False (pixels / 255), True (greyscale Sobel x, y: the paper's choice for colour images) or
    "rgb" (pixels and Sobel channels, the paper's `include_rgb`). normalise: per-image contrast
    normalisation of those inputs (`PerImageNorm`). pool: "gap" (global average pooling) or "flatten"
    (the official ClusterNet's flattened last map: keeps where things are).
    """
    inputs = keras.Input(input_shape)
    pixels = layers.Rescaling(1 / 255.0)(inputs)
    edges = SobelFilter()(inputs) if sobel else None
    if normalise:
        pixels = PerImageNorm(center=True)(pixels)
        edges = PerImageNorm(center=False)(edges) if sobel else None
    x = layers.Concatenate()([pixels, edges]) if sobel == "rgb" else edges if sobel else pixels
    for i, mult in enumerate((1, 2, 4, 8)):
        x = layers.Conv2D(width * mult, 3, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization(momentum=0.9)(x)
        x = layers.ReLU()(x)
        if i < 3:
            x = layers.MaxPooling2D()(x)
    x = layers.GlobalAveragePooling2D()(x) if pool == "gap" else layers.Flatten()(x)
    return keras.Model(inputs, x, name=name)


def hog_trunk(dim_in: int, hidden: int = 512, name: str = "iic_hog_trunk"):
    """The CPU trunk: a two-layer MLP on the PCA of HOG (+ colour histogram) features of each view. The
    perturbations still act on the images: every perturbed copy's HOG is computed from the perturbed image."""
    return keras.Sequential([keras.Input((dim_in,)),
                             layers.Dense(hidden, use_bias=False), layers.BatchNormalization(momentum=0.9),
                             layers.ReLU(),
                             layers.Dense(hidden, use_bias=False), layers.BatchNormalization(momentum=0.9),
                             layers.ReLU()],
                            name=name)


class IICModel(keras.Model):
    """Trunk + head A (over-clustering, k_over clusters) + head B (k clusters), `sub_heads` softmax layers each
    (head A: `sub_heads_a`, None for as many as head B).

    fit() takes ((x, x'),) batches from `iic_batches`; compute_loss averages `losses.iic_loss` over the
    sub-heads of each head in `active_heads` and sums the heads: "B" or "A" when the heads alternate (set each
    epoch by `AlternateHeads`: as in the paper, the other head is not computed at all that epoch), "AB" for
    the summed loss. On plain images (predict) the model returns head B's probabilities, N x sub_heads x k,
    after the evaluation view.
    """

    def __init__(self, trunk, eval_view, n_clusters: int, n_over: int = 0, sub_heads: int = 5,
                 lamb: float = 1.0, sub_heads_a: int | None = None, views=None, **kwargs):
        super().__init__(**kwargs)
        self.trunk, self.eval_view = trunk, eval_view
        # views = (original, perturbed, copies): the training step makes the copies from plain image batches
        # (on an accelerator); None: they arrive ready from the input pipeline (`iic_batches`)
        self.original, self.perturbed, self.copies = views or (None, None, 0)
        self.n_clusters, self.n_over, self.sub_heads, self.lamb = n_clusters, n_over, sub_heads, lamb
        self.n_sub = {"B": sub_heads, "A": sub_heads_a or sub_heads}
        self.head_b = layers.Dense(sub_heads * n_clusters, dtype="float32", name="head_B")
        self.head_a = layers.Dense(self.n_sub["A"] * n_over, dtype="float32", name="head_A") if n_over else None
        for head in (self.head_b, self.head_a):  # build now: fit must not create variables while tracing
            if head is not None:
                head.build((None, trunk.output_shape[-1]))
        self.active_heads = "AB" if n_over else "B"  # the heads a training step computes and trains
        self.loss_a_tracker = keras.metrics.Mean(name="loss_A")
        self.loss_b_trackers = [keras.metrics.Mean(name=f"loss_B{s}") for s in range(sub_heads)]

    def _probs(self, head, features, k):
        n_sub = self.n_sub["A" if head is self.head_a else "B"]
        logits = ops.reshape(head(features), (-1, n_sub, k))
        return ops.softmax(ops.cast(logits, "float32"), axis=-1)

    def _paired_probs(self, head, f_orig, f_views, k):
        """(p, p') of one head for a batch of N images and their r copies (views stacked image by image):
        the originals' probabilities and the mean of each image's r copies' probabilities, N x sub-heads x k.

        The paper pairs the original with every copy: P = sum_c p^T p_c. That equals r p^T mean_c(p_c), and
        P is normalised, so pairing with the mean is the same objective with an r times smaller product.
        """
        p = self._probs(head, f_orig, k)
        p_views = ops.reshape(self._probs(head, f_views, k), (ops.shape(p)[0], -1, ops.shape(p)[1], k))
        return p, ops.mean(p_views, axis=1)

    def call(self, inputs, training=False):
        if training and self.perturbed is not None and not isinstance(inputs, (tuple, list)):
            inputs = (self.original(inputs, training=True),  # the copies, made in the step (image by image)
                      self.perturbed(ops.repeat(inputs, self.copies, axis=0), training=True))
        if not isinstance(inputs, (tuple, list)):  # plain images: head B after the evaluation view
            return self._probs(self.head_b, self.trunk(self.eval_view(inputs), training=training), self.n_clusters)
        orig, views = inputs
        f_orig = self.trunk(orig, training=training)
        f_views = self.trunk(views, training=training)
        out = {}
        if "B" in self.active_heads or self.head_a is None:
            out["B"] = self._paired_probs(self.head_b, f_orig, f_views, self.n_clusters)
        if "A" in self.active_heads and self.head_a is not None:
            out["A"] = self._paired_probs(self.head_a, f_orig, f_views, self.n_over)
        return out

    def sub_head_losses(self, y_pred, head: str = "B"):
        """IIC loss of each sub-head of `head` on one batch of pairs: a vector, all sub-heads in one batched
        product (N x S x K -> S x N x K)."""
        p1, p2 = (ops.transpose(p, (1, 0, 2)) for p in y_pred[head])
        return losses.iic_loss(p1, p2, self.lamb)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        total = 0.0
        if "B" in y_pred:
            loss_b = self.sub_head_losses(y_pred, "B")
            for s, tracker in enumerate(self.loss_b_trackers):
                tracker.update_state(loss_b[s])
            total = total + ops.mean(loss_b)
        if "A" in y_pred:
            loss_a = ops.mean(self.sub_head_losses(y_pred, "A"))
            self.loss_a_tracker.update_state(loss_a)
            total = total + loss_a
        return per_replica(total)  # the global batch's loss, scaled for the replicas' summed gradients


@contextlib.contextmanager
def idle_head_has_no_gradient():
    """Silence Keras' "Gradients do not exist" warning for the head an epoch does not train (intended: as in
    the paper it is not computed at all); any other missing gradient still warns."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Gradients do not exist for variables .*head_[AB]")
        yield


class AlternateHeads(keras.callbacks.Callback):
    """Train one head per epoch, cycling through `schedule` (e.g. "BA": head B, then head A, ...).

    Only the epoch's head is computed (its loss, its gradients); the training step of each head is traced
    once and kept, so switching costs nothing after the first round. The other head's losses are logged as
    NaN for that epoch (not trained, not measured).
    """

    def __init__(self, schedule: str = "BA"):
        super().__init__()
        self.schedule = schedule
        self._steps: dict = {}

    def on_epoch_begin(self, epoch, logs=None):
        head, model = self.schedule[epoch % len(self.schedule)], self.model
        if model.active_heads == head and model.train_function is not None:
            return
        model.active_heads = head
        if head in self._steps:
            model.train_function = self._steps[head]
        else:
            model.make_train_function(force=True)
            self._steps[head] = model.train_function

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            head = self.schedule[epoch % len(self.schedule)]
            logs["head"] = float(HEADS.index(head))
            for key in list(logs):
                if (key.startswith("loss_B") and head == "A") or (key == "loss_A" and head == "B"):
                    logs[key] = float("nan")


# ---------------------------------------------------------------- monitoring without labels
def collapse_warning(sizes, max_share: float = 0.5, min_used: float = 0.5, context: str = "") -> str | None:
    """A message when a clustering has collapsed, else None. Needs no labels.

    Collapsed: one cluster holds at least `max_share` of the images, or fewer than `min_used` of the
    clusters are used. The message says what to try.
    """
    sizes = np.asarray(sizes, dtype=np.float64)
    k, n = len(sizes), sizes.sum()
    if n == 0:
        return None
    share, used = sizes.max() / n, int((sizes > 0).sum())
    if share < max_share and used >= min_used * k:
        return None
    return (f"IIC collapse{context}: cluster {int(sizes.argmax())} holds {share:.0%} of the images and only "
            f"{used}/{k} clusters are used. Try: a larger batch (at least ~10 images per cluster: "
            f"batch_images x copies >= {10 * k}), the over-clustering head (overcluster=3..5), more perturbed "
            "copies per image (copies=5), stronger perturbations (crops, colour jitter; Sobel for colour "
            "images), lamb > 1 (rewards balanced clusters), a lower learning rate.")


def mean_entropy(p) -> float:
    """Entropy of the mean prediction, as a fraction of log K (1: all clusters used equally)."""
    mean = np.asarray(p, np.float64).mean(axis=0)
    return float(-(mean * np.log(np.maximum(mean, 1e-12))).sum() / math.log(len(mean)))


class IICMonitor(keras.callbacks.Callback):
    """Per epoch, on `x` (training images): head B's cluster sizes, entropy of its mean prediction and a
    collapse check, for the sub-head with the lowest training loss that epoch; with labels `y`, ACC for
    DISPLAY only (the labels never reach the loss). Adds `entropy`, `largest_cluster`, `clusters_used`,
    `sub_head` (and `display_acc`) to the history; `sizes_` keeps the sizes per epoch.

    A collapsed epoch is common early on (the mutual information then spreads the clusters out): it is
    recorded in `warnings_` and, with `verbose`, printed as progress; `final_warning` says whether the LAST
    epoch is still collapsed (IIC.fit then warns)."""

    def __init__(self, x, y=None, max_share: float = 0.5, verbose: int = 0):
        super().__init__()
        self.x, self.y, self.max_share, self.verbose = x, y, max_share, verbose
        self.collapsed_: list[bool] = []
        self.sizes_: list[np.ndarray] = []
        self.warnings_: list[str] = []
        self._last_sub_head = 0

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        probs = self.model.predict(self.x, batch_size=512, verbose=0)  # N x sub_heads x k
        sub_losses = np.array([np.nan if logs.get(f"loss_B{s}") is None else logs[f"loss_B{s}"]
                               for s in range(probs.shape[1])], np.float64)
        # head B's best sub-head this epoch; in head A's epochs (no head-B loss) the last one chosen
        s = int(np.nanargmin(sub_losses)) if np.isfinite(sub_losses).any() else self._last_sub_head
        self._last_sub_head = s
        p = probs[:, s]
        sizes = np.bincount(p.argmax(1), minlength=p.shape[1])
        self.sizes_.append(sizes)
        logs.update(sub_head=float(s), entropy=mean_entropy(p), largest_cluster=float(sizes.max() / len(p)),
                    clusters_used=float((sizes > 0).sum()))
        if self.y is not None:
            logs["display_acc"] = metrics.hungarian_accuracy(self.y, p.argmax(1))
        message = collapse_warning(sizes, self.max_share, context=f" after epoch {epoch + 1}")
        self.collapsed_.append(message is not None)
        if message:
            self.warnings_.append(message)
            if self.verbose:
                print(f"IIC: after epoch {epoch + 1} cluster {int(sizes.argmax())} holds {sizes.max() / len(p):.0%} "
                      f"of the images, {int((sizes > 0).sum())}/{len(sizes)} clusters used (common early on: the "
                      "mutual information spreads them out; a warning follows if the last epoch is still so)",
                      flush=True)

    def final_warning(self) -> str | None:
        """The collapse message of the last epoch, or None when it is not collapsed."""
        return self.warnings_[-1] if self.collapsed_ and self.collapsed_[-1] else None


def select_sub_head(sub_head_losses) -> int:
    """The sub-head to report: the lowest IIC loss on the training data (no labels involved)."""
    return int(np.argmin(np.asarray(sub_head_losses, dtype=np.float64)))


def evaluate_sub_heads(model: IICModel, batches, max_batches: int | None = None) -> np.ndarray:
    """Mean IIC loss of each head-B sub-head over (perturbed) training batches, in inference mode."""
    totals, count = np.zeros(model.sub_heads), 0
    trained, model.active_heads = model.active_heads, "B"
    try:
        for i, batch in enumerate(batches):
            if max_batches is not None and i >= max_batches:
                break
            inputs = batch[0] if isinstance(batch, (tuple, list)) and len(batch) == 1 else batch
            y_pred = model(inputs, training=False)
            totals += keras.ops.convert_to_numpy(model.sub_head_losses(y_pred, "B")).astype(np.float64)
            count += 1
    finally:
        model.active_heads = trained
    if count == 0:
        raise ValueError("no training batch to choose a sub-head on: fewer images than batch_images?")
    return totals / count


# ---------------------------------------------------------------- throughput
def measure_throughput(method: "IIC", x, steps: int = 10, repeats: int = 2) -> dict:
    """Training speed of IIC against plain `fit` of the same trunk (+ a softmax layer, cross-entropy on
    random labels, in-memory batches of the same size, no augmentation): images through the trunk per
    second, wall clock and per CPU-second (the CPU may be shared), best of `repeats` runs of `steps`
    steps after a warm-up. Also IIC with the copies made inside the model instead of by tf.data.
    """
    x = np.asarray(x)
    n, r = min(method.batch_images(), len(x)), method.params["copies"]
    per_step = n * (1 + r)
    x = x[:n * max(1, min(steps, len(x) // n))]
    steps = len(x) // n

    def timed(model, data, **kw):
        model.fit(data, epochs=1, verbose=0, steps_per_epoch=1, **kw)  # trace + warm up
        best_wall = best_cpu = float("inf")
        for _ in range(repeats):
            t, c = time.perf_counter(), time.process_time()
            model.fit(data, epochs=1, verbose=0, steps_per_epoch=steps, **kw)
            best_wall, best_cpu = min(best_wall, time.perf_counter() - t), min(best_cpu, time.process_time() - c)
        return steps * per_step / best_wall, steps * per_step / best_cpu

    epochs = list(method.params["head_schedule"]) if method.params["heads"] == "alternate" else ["AB"]

    def timed_iic(model, data, **kw):
        """Images/s of IIC training as fit() runs it: each head's step timed, averaged over the schedule
        (time per image adds up: an epoch of head A and one of head B take the sum of their times)."""
        if model.head_a is None:
            return timed(model, data, **kw)
        rates = {}
        with idle_head_has_no_gradient():
            for heads in dict.fromkeys(epochs):  # each head's step once
                model.active_heads, model.train_function = heads, None
                rates[heads] = timed(model, data, **kw)
                out[f"iic_img_s_head_{heads}"] = rates[heads][0]
        return tuple(len(epochs) / sum(1.0 / rates[h][i] for h in epochs) for i in (0, 1))

    def repeat(ds):
        return ds.repeat() if hasattr(ds, "repeat") else ds

    out = {"batch_images": n, "copies": r, "trunk_images_per_step": per_step}
    if method.uses_hog():  # the training step on view features (their HOG is computed once, before training)
        d = method.params["pca_dim"]
        feats = np.random.default_rng(0).standard_normal((1 + r, len(x), d)).astype("float32")
        iic = method.build((d,))
        iic.compile(optimizer="adam")
        data = repeat(feature_view_batches(feats, n, shuffle=False))  # as fit trains it
        out["iic_img_s"], out["iic_img_cpu_s"] = timed_iic(iic, data, shuffle=False)
        plain = keras.Sequential([hog_trunk(d, method.params["hidden"]),
                                  layers.Dense(method.n_clusters, activation="softmax")], name="plain")
        xv = feats.reshape(-1, d)
    else:
        iic = method.build(x.shape[1:])
        iic.compile(optimizer="adam")
        out["iic_img_s"], out["iic_img_cpu_s"] = timed_iic(iic, repeat(method.batches(x)), shuffle=False)
        size = method.params["input_size"]
        plain = keras.Sequential([iic_trunk((size, size, x.shape[-1]), method.params["width"],
                                            method.uses_sobel(x.shape[1:]), method.params["pool"],
                                            method.params["normalise"]),
                                  layers.Dense(method.n_clusters, activation="softmax")], name="plain")
        _, _, evaluation = method.views(x.shape[1:])
        xv = np.concatenate([keras.ops.convert_to_numpy(evaluation(x.astype("float32")))] * (1 + r))
    plain.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    yv = np.random.default_rng(0).integers(0, method.n_clusters, len(xv))
    t_fit = {}
    for _ in range(repeats + 1):  # first: warm-up
        t, c = time.perf_counter(), time.process_time()
        plain.fit(xv, yv, batch_size=per_step, epochs=1, verbose=0, shuffle=False)
        t_fit = {"w": min(t_fit.get("w", 1e9), time.perf_counter() - t), "c": min(t_fit.get("c", 1e9), time.process_time() - c)}
    out["plain_img_s"], out["plain_img_cpu_s"] = len(xv) / t_fit["w"], len(xv) / t_fit["c"]

    if not method.uses_hog():
        original, perturbed, _ = method.views(x.shape[1:])
        inside = IICModel(iic.trunk, iic.eval_view, method.n_clusters, iic.n_over, iic.sub_heads, iic.lamb,
                          iic.n_sub["A"], views=(original, perturbed, r), name="iic_views_in_model")
        inside.compile(optimizer="adam")
        tf = training.tensorflow_or_none()
        if tf is not None:
            raw = tf.data.Dataset.from_tensor_slices(x.astype("float32")).batch(n, drop_remainder=True).repeat()
            out["in_model_img_s"], out["in_model_img_cpu_s"] = timed_iic(inside, raw, shuffle=False)
    out["ratio"] = out["iic_img_s"] / out["plain_img_s"]
    out["ratio_cpu"] = out["iic_img_cpu_s"] / out["plain_img_cpu_s"]
    return out


# ---------------------------------------------------------------- the method
@register
class IIC(Method):
    """Invariant Information Clustering: a CNN trained to give an image and its perturbed copies the same
    cluster, maximising their mutual information (`losses.iic_loss`). No labels, no k-means.

    Head B has `n_clusters` outputs, head A `overcluster` times more (0: no head A); `sub_heads` of each
    (`sub_heads_a` of head A when set).
    The reported sub-head is chosen WITHOUT labels: the lowest IIC loss on the training data
    (`sub_head_losses_`, `sub_head_`). Batches hold `batch_images` images x `copies` perturbed copies
    (None: enough for ~30 pairs per cluster of head B). `sobel=None` uses Sobel input for colour images.

    fit(x, y=None, validation=None): `y` is ignored; `validation=(x_val, y_val)` only feeds the per-epoch
    display ACC of the monitor. After fit: model_, history_ (losses, entropy, cluster sizes, display ACC),
    monitor_.sizes_ (cluster sizes per epoch), sub_head_, sub_head_losses_, timings_, images_per_second_.
    """

    name = "iic"
    defaults = dict(trunk="cnn", overcluster=5, sub_heads=5, sub_heads_a=None, copies=5, batch_images=None, lamb=1.0,
                    heads="alternate", head_schedule="BA", input_size=24, crop=0.72, view_scale=(0.57, 0.86),
                    rotation=25.0, jitter=0.4, sobel=None, normalise=False, width=32, pool="gap", pca_dim=128,
                    hidden=512, colour_bins=0, epochs=10, learning_rate=1e-3, select_images=10000,
                    monitor_images=2000, checkpoint_dir=None, verbose=0)
    presets = {
        # a CPU: the paper's CNN on the pixels of perturbed copies, as many epochs as a CPU budget allows
        "quick": dict(epochs=8, copies=3, lamb=2.0, head_schedule="BBA"),
        "standard": dict(epochs=6, copies=3, lamb=2.0, head_schedule="BBA"),
        # full (a GPU): 100 epochs of 6 views, wider, the official ClusterNet's flattened map: ~20 min of a T4
        "full": dict(epochs=100, width=64, pool="flatten", lamb=2.0, head_schedule="BBA"),
    }
    smoke = dict(epochs=3, batch_images=32, select_images=64, monitor_images=64)  # BBA: both heads, B twice

    def __init__(self, n_clusters: int, seed: int = 0, **params):
        super().__init__(n_clusters, seed, **{**self.defaults, **params})
        self.timings_: dict[str, float] = {}

    # -- pieces, public so that a notebook can show them one by one
    def batch_images(self) -> int:
        p = self.params
        if p["batch_images"]:
            return int(p["batch_images"])
        return max(128, math.ceil(30 * self.n_clusters / p["copies"]))

    def uses_sobel(self, input_shape):
        return (input_shape[-1] == 3) if self.params["sobel"] is None else self.params["sobel"]

    def views(self, input_shape):
        p = self.params
        return iic_views(input_shape, p["input_size"], p["crop"], tuple(p["view_scale"]), p["rotation"],
                         p["jitter"], self.seed)

    def uses_hog(self) -> bool:
        if self.params["trunk"] not in ("cnn", "hog"):
            raise ValueError(f"trunk must be 'cnn' or 'hog', got {self.params['trunk']!r}")
        return self.params["trunk"] == "hog"

    def build(self, input_shape) -> IICModel:
        """The training model; `input_shape` is the images' shape (trunk='cnn') or (feature dim,) (trunk='hog')."""
        p = self.params
        n_over = int(round(p["overcluster"] * self.n_clusters)) if p["overcluster"] else 0
        views = None
        if self.uses_hog():
            trunk, evaluation = hog_trunk(input_shape[-1], p["hidden"]), layers.Identity()
        else:
            original, perturbed, evaluation = self.views(input_shape)
            size = p["input_size"]
            trunk = iic_trunk((size, size, input_shape[-1]), p["width"], self.uses_sobel(input_shape), p["pool"],
                              p["normalise"])
            if training.augment_on_device():  # the training step makes the perturbed copies
                views = (original, perturbed, p["copies"])
        model = IICModel(trunk, evaluation, self.n_clusters, n_over, p["sub_heads"], p["lamb"], p["sub_heads_a"],
                         views, name="iic")
        model(np.zeros((1, *input_shape), "float32"))  # build the weights
        return model

    def hog(self, x) -> np.ndarray:
        """HOG of the greyscale images (+ colour histograms for colour images when `colour_bins` > 0, weighted
        half the HOG vector's length)."""
        from .features import hog_features

        bins = self.params["colour_bins"] if x.shape[-1] == 3 else 0
        return hog_features(np.asarray(x), border=2 if x.shape[1] >= 28 else 0, colour_bins=bins, colour_weight=0.5)

    def hog_perturbation(self, input_shape):
        """trunk='hog': the perturbation of the copies, at full size (rotation, crop/scale, shift,
        brightness/contrast or colour jitter; no flips), [0, 255] in and out."""
        p = self.params
        return iic_views(input_shape, input_shape[0], 1.0, tuple(p["view_scale"]), p["rotation"], p["jitter"],
                         self.seed)[1]

    def view_features(self, x) -> np.ndarray:
        """trunk='hog': raw HOG features of every image (row 0) and of `copies` perturbed copies of it (rows
        1..copies), (1 + copies) x N x D: each copy is perturbed (`hog_perturbation`), then described."""
        from .features import describe_views

        return describe_views(x, self.hog, self.hog_perturbation(x.shape[1:]), self.params["copies"])

    def reduced_view_features(self, x, fit: bool = False) -> np.ndarray:
        """`view_features` through the PCA + L2 pipeline (fitted on the unperturbed rows when `fit` or when
        there is none yet): what the MLP trunk trains on."""
        raw = self.view_features(x)
        if fit or not hasattr(self, "pipeline_"):
            self.pipeline_ = FeaturePipeline(self.params["pca_dim"], whiten=False, l2=True, seed=self.seed).fit(raw[0])
        return np.stack([self.pipeline_.transform(f) for f in raw])

    def features(self, x) -> np.ndarray:
        """What the trunk sees for plain images: the images (trunk='cnn') or their reduced HOG (trunk='hog')."""
        if not self.uses_hog():
            return np.asarray(x).astype("float32")
        return self._features_of(x, lambda x: self.pipeline_.transform(self.hog(x)))

    def batches(self, x, shuffle: bool = True, pairs: bool = False):
        """Training batches: view features (trunk='hog'), images with their perturbed copies, or plain images
        when the training step makes the copies (on an accelerator; `pairs=True` makes them here anyway)."""
        if self.uses_hog():
            feats = self._view_features if self._is_fitted_on(x) else self.reduced_view_features(x)
            return feature_view_batches(feats, self.batch_images(), self.seed, shuffle)
        original, perturbed, _ = self.views(x.shape[1:])
        if training.augment_on_device() and not pairs:
            original = perturbed = None
        return iic_batches(x, self.batch_images(), self.params["copies"], original, perturbed, self.seed, shuffle)

    # -- scikit-learn shape
    def fit(self, x, y=None, validation=None):
        p = self.params
        x = np.asarray(x)
        rng = np.random.default_rng(self.seed)
        t0 = time.perf_counter()
        if self.uses_hog():  # describe every image and its perturbed copies once
            self._view_features = self.reduced_view_features(x, fit=True)
            self._keep_fitted(x, self._view_features[0])
            self.timings_["views (HOG of every copy)"] = time.perf_counter() - t0
        self.model_ = self.build(self.features(x[:1]).shape[1:])
        n = min(self.batch_images(), len(x))
        steps = p["epochs"] * (len(x) // n)
        lr = keras.optimizers.schedules.CosineDecay(p["learning_rate"], decay_steps=max(1, steps), alpha=0.1)
        self.model_.compile(optimizer=keras.optimizers.Adam(lr))
        monitor_idx = rng.choice(len(x), min(p["monitor_images"], len(x)), replace=False)
        x_val, y_val = validation if validation is not None else (x[monitor_idx], None)
        self.monitor_ = IICMonitor(self.features(np.asarray(x_val)), None if y_val is None else np.asarray(y_val),
                                   verbose=p["verbose"])
        callbacks = [self.monitor_]
        if p["heads"] == "alternate" and self.model_.head_a is not None:
            callbacks.insert(0, AlternateHeads(p["head_schedule"]))
        elif p["heads"] not in ("alternate", "sum"):
            raise ValueError(f"heads must be 'alternate' or 'sum', got {p['heads']!r}")
        verbose = p["verbose"]
        if verbose == 1:  # one line per epoch with the projected time left
            callbacks.append(training.EpochProgress(p["epochs"], (len(x) // n) * n * (1 + p["copies"]), "IIC: "))
            verbose = 0
        t0 = time.perf_counter()
        with idle_head_has_no_gradient():
            hist = self.model_.fit(self.batches(x), epochs=p["epochs"], verbose=verbose, shuffle=False,
                                   callbacks=self._callbacks(callbacks, self.checkpoint_folder(x)))
        self.history_ = {k: [float(v) for v in vals] for k, vals in hist.history.items()}
        self.timings_["training"] = time.perf_counter() - t0
        per_epoch = (len(x) // n) * n * (1 + p["copies"])  # images through the trunk in one epoch
        self.images_per_second_ = per_epoch / float(np.median(self.history_["seconds"]))
        t0 = time.perf_counter()
        n_select = max(1, min(len(x), p["select_images"]) // n)
        if self.uses_hog():
            select = FeatureViewBatches(self._view_features, n, self.seed + 1)
        else:
            select = self.batches(x[rng.permutation(len(x))], pairs=True)
        self.sub_head_losses_ = evaluate_sub_heads(self.model_, select, n_select)
        self.sub_head_ = select_sub_head(self.sub_head_losses_)
        if self.monitor_.final_warning():  # still collapsed at the end of training: that is worth a warning
            warnings.warn(self.monitor_.final_warning(), RuntimeWarning, stacklevel=2)
        self.timings_["sub-head selection"] = time.perf_counter() - t0
        return self

    def measure_throughput(self, x, steps: int = 10, repeats: int = 2) -> dict:
        """Training images/s against plain `fit` of the same trunk (`measure_throughput`)."""
        return measure_throughput(self, x, steps, repeats)

    def _callbacks(self, extra, checkpoint_dir=None):
        cbs = [training.NaNGuard(), training.EpochTimer(), *extra]
        if checkpoint_dir:
            cbs.append(keras.callbacks.BackupAndRestore(checkpoint_dir, delete_checkpoint=False))
        return cbs

    def predict_heads(self, x) -> np.ndarray:
        """Head B's probabilities for every sub-head: N x sub_heads x K."""
        return self.model_.predict(self.features(x), batch_size=512, verbose=0)

    def predict_proba(self, x) -> np.ndarray:
        return self.predict_heads(x)[:, self.sub_head_]

    def predict(self, x) -> np.ndarray:
        return self.predict_proba(x).argmax(1).astype(np.int64)
