"""IIC: Invariant Information Clustering (Ji, Henriques and Vedaldi, ICCV 2019), in Keras 3.

A CNN maps an image x and perturbed copies x' of it to cluster probabilities z, z' (a softmax over K) and is
trained to maximise their mutual information I(z, z') (`losses.iic_loss`): the clusters must survive the
perturbations (agreement) and be used evenly (the H(z) inside I). As in the official code (xu-ji/IIC):

- two heads on one trunk: head B with K = number of classes (the answer) and head A over-clustering (several
  times K: it only shapes the trunk), each with several sub-heads (independent softmax layers);
- the heads trained in alternation, one epoch at a time (`head_schedule`, e.g. "BBA"): two compiled
  training models share the trunk (`IICModel`), and an explicit epoch loop picks one (`train_heads`);
- every image repeated r times in a batch, each copy perturbed differently (crops/scale, small rotations,
  colour jitter), all paired with the same 'original' view;
- Sobel input for colour images: colour alone is an easy, useless way to agree;
- the reported sub-head is the one with the LOWEST IIC LOSS ON THE TRAINING DATA: chosen without labels.

On a CPU the copies are made in a tf.data pipeline (`iic_batches`); on an accelerator inside the training
step (`training.augment_on_device`). `iic-hog` (iic_hog.py) is the CPU stand-in: the same model and loop on
HOG features.
"""
from __future__ import annotations

import math
import time
import warnings
from pathlib import Path

import keras
import numpy as np
from keras import layers, ops

from .. import losses, metrics, training
from ..augment import F32, jit_ready
from ..distribute import per_replica
from ..models import small_cnn_backbone
from . import Method, register

HEADS = ("A", "B")  # A = over-clustering, B = main (K clusters); history["head"] holds the index


# ---------------------------------------------------------------- perturbations and batches
def iic_views(input_shape, input_size: int = 24, crop: float = 0.72, view_scale=(0.57, 0.86),
              rotation: float = 25.0, jitter: float = 0.4, seed: int = 0):
    """(original view, perturbed view, evaluation view): three Keras preprocessing pipelines, [0, 255] in/out.

    - evaluation: the centre `crop` (fraction of the side) resized to `input_size`;
    - original (x): the same crop, shifted at random within the margin (the paper's random/centre crop);
    - perturbed (x'): rotation up to +-`rotation` degrees, a crop of `view_scale` of the side at a random
      place, resized to `input_size`, then brightness/contrast (and saturation/hue for colour) jitter.
    No horizontal flips: traffic-sign classes come in mirror pairs (33/34, 36/37, 38/39).
    """
    side = max(8, round(input_shape[0] * crop))
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
        layers.Resizing(input_size, input_size, dtype=F32)]
    if jitter and input_shape[-1] == 3:
        perturbed.append(layers.RandomColorJitter(
            value_range=(0, 255), brightness_factor=jitter / 2, contrast_factor=jitter,
            saturation_factor=(0.5 - jitter / 2, 0.5 + jitter / 2), hue_factor=jitter / 4, seed=seed + 4, dtype=F32))
    elif jitter:
        perturbed += [layers.RandomBrightness(jitter / 2, value_range=(0, 255), seed=seed + 4, dtype=F32),
                      layers.RandomContrast(jitter, value_range=(0, 255), seed=seed + 5, dtype=F32)]
    return jit_ready(original), jit_ready(keras.Sequential(perturbed, name="perturbed_view")), evaluation


def iic_batches(x, batch_images: int, copies: int, original, perturbed, seed: int = 0, shuffle: bool = True):
    """Batches ((x, x'),) for fit: x = original views of `batch_images` images (n), x' = `copies` (r)
    perturbed copies of each, stacked image by image (copy j of image i at i * r + j): split between
    replicas, each half of x' holds the copies of its half of x. perturbed=None: plain image batches, for a
    model that makes the copies in its step. The last incomplete batch is dropped (a small batch estimates P
    badly); reshuffled every epoch. With TensorFlow a tf.data pipeline (the copies made on its threads)."""
    n = min(batch_images, len(x))
    tf = training.tensorflow_or_none()
    if tf is None:  # the same batches from a PyDataset (shuffled by NumPy)
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


# ---------------------------------------------------------------- the network
class SubHeads(layers.Layer):
    """`n_sub` independent softmax layers of `k` clusters on the trunk's features: N x n_sub x k, float32."""

    def __init__(self, n_sub: int, k: int, **kwargs):
        super().__init__(dtype="float32", **kwargs)
        self.n_sub, self.k = n_sub, k
        self.dense = layers.Dense(n_sub * k, dtype="float32")

    def build(self, input_shape):
        self.dense.build(input_shape)

    def call(self, features):
        return ops.softmax(ops.reshape(self.dense(features), (-1, self.n_sub, self.k)), axis=-1)


class IICNet(keras.Model):
    """Phi: (evaluation view ->) trunk -> {"B": head B, "A": head A}, each N x sub-heads x clusters."""

    def __init__(self, trunk, eval_view, head_b, head_a=None, **kwargs):
        super().__init__(**kwargs)
        self.trunk, self.eval_view, self.head_b, self.head_a = trunk, eval_view, head_b, head_a

    @property
    def heads(self) -> dict:
        return {"B": self.head_b} if self.head_a is None else {"B": self.head_b, "A": self.head_a}

    def call(self, x, training=False):
        features = self.trunk(self.eval_view(x), training=training)
        return {name: head(features) for name, head in self.heads.items()}


# ---------------------------------------------------------------- the training step and the loop
class IICModel(keras.Model):
    """One head's training model: `trunk` -> `head` (a `SubHeads`) on an image and its perturbed copies.

    One per head, sharing the trunk; each compiled with its own optimizer. fit() takes ((x, x'),) batches
    (`iic_batches`), or plain images when `views` = (original, perturbed, copies) makes the copies here.
    """

    def __init__(self, trunk, head, lamb: float = 1.0, views=None, **kwargs):
        super().__init__(**kwargs)
        self.trunk, self.head, self.lamb = trunk, head, lamb
        self.original, self.perturbed, self.copies = views or (None, None, 0)
        self.sub_head_loss = [keras.metrics.Mean(name=f"loss_{head.name[-1]}{s}") for s in range(head.n_sub)]
        self.built = True  # trunk and head are built: fit must not create variables while tracing

    def call(self, inputs, training=False):
        if not isinstance(inputs, (tuple, list)):  # plain images: the copies are made in the step
            inputs = (self.original(inputs, training=True),
                      self.perturbed(ops.repeat(inputs, self.copies, axis=0), training=True))
        x, x_copies = inputs
        p = self.head(self.trunk(x, training=training))  # N x S x K: every sub-head's probabilities
        p_copies = self.head(self.trunk(x_copies, training=training))  # N r x S x K, copies image by image
        # the paper pairs x with each copy: P = sum_c p^T p_c = r p^T mean_c(p_c), and P is normalised
        return p, ops.mean(ops.reshape(p_copies, (ops.shape(p)[0], -1, *p.shape[1:])), axis=1)

    def sub_head_losses(self, y_pred):
        """-I(z, z') of each sub-head: P (K x K) = the batch's joint distribution of z and z', one per sub-head."""
        p, p_copies = (ops.swapaxes(q, 0, 1) for q in y_pred)  # S x N x K
        return losses.iic_loss(p, p_copies, self.lamb)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        loss = self.sub_head_losses(y_pred)
        for s, tracker in enumerate(self.sub_head_loss):
            tracker.update_state(loss[s])
        return per_replica(ops.mean(loss))  # the global batch's loss, scaled for the replicas' summed gradients


def train_heads(trainers: dict, batches, schedule: str, epochs: int, start: int = 0, end_of_epoch=None) -> None:
    """The paper's loop: each epoch trains the head `schedule` names ("BBA": B, B, A, B, B, A, ...); the other
    head is not computed at all. end_of_epoch(epoch, logs): the monitor, a checkpoint, a progress line."""
    for epoch in range(start, epochs):
        head = schedule[epoch % len(schedule)]
        t0 = time.perf_counter()
        fitted = trainers[head].fit(batches, epochs=1, verbose=0, shuffle=False, callbacks=[training.NaNGuard()])
        logs = {key: values[-1] for key, values in fitted.history.items()}
        logs.update(head=float(HEADS.index(head)), epoch=float(epoch), seconds=time.perf_counter() - t0)
        if end_of_epoch is not None:
            end_of_epoch(epoch, logs)


def evaluate_sub_heads(model: IICModel, batches, max_batches: int | None = None) -> np.ndarray:
    """Mean IIC loss of each sub-head of `model`'s head over (perturbed) training batches, in inference mode."""
    totals, count = 0.0, 0
    for i, batch in enumerate(batches):
        if max_batches is not None and i >= max_batches:
            break
        y_pred = model(batch[0] if len(batch) == 1 else batch, training=False)
        totals = totals + ops.convert_to_numpy(model.sub_head_losses(y_pred)).astype(np.float64)
        count += 1
    if count == 0:
        raise ValueError("no training batch to choose a sub-head on: fewer images than batch_images?")
    return totals / count


# ---------------------------------------------------------------- monitoring without labels
def collapse_warning(sizes, max_share: float = 0.5, min_used: float = 0.5, context: str = "") -> str | None:
    """A message when a clustering has collapsed (one cluster holds >= `max_share` of the images, or fewer than
    `min_used` of the clusters are used), else None. Needs no labels; the message says what to try."""
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


class IICMonitor:
    """After each epoch, for head B's sub-head with the lowest loss that epoch (in head A's epochs the last
    one): cluster sizes, entropy of the mean prediction, largest share, a collapse check, and with labels `y`
    ACC for DISPLAY only (labels never reach the loss). An early collapse is common (the mutual information
    then spreads the clusters out): `final_warning` says whether the LAST epoch is still collapsed."""

    def __init__(self, y=None, max_share: float = 0.5, verbose: int = 0):
        self.y, self.max_share, self.verbose = y, max_share, verbose
        self.sizes_, self.warnings_, self.collapsed_ = [], [], []
        self._sub_head = 0

    def __call__(self, epoch: int, probs, logs: dict) -> None:
        """probs: head B's probabilities on the monitored images, N x sub-heads x K; adds to `logs`."""
        sub_losses = np.array([logs.get(f"loss_B{s}", np.nan) for s in range(probs.shape[1])], np.float64)
        if np.isfinite(sub_losses).any():
            self._sub_head = int(np.nanargmin(sub_losses))
        p = probs[:, self._sub_head]
        sizes = np.bincount(p.argmax(1), minlength=p.shape[1])
        self.sizes_.append(sizes)
        logs.update(sub_head=float(self._sub_head), entropy=mean_entropy(p),
                    largest_cluster=float(sizes.max() / len(p)), clusters_used=float((sizes > 0).sum()))
        if self.y is not None:
            logs["display_acc"] = metrics.hungarian_accuracy(self.y, p.argmax(1))
        message = collapse_warning(sizes, self.max_share, context=f" after epoch {epoch + 1}")
        self.collapsed_.append(message is not None)
        if message:
            self.warnings_.append(message)
            if self.verbose:
                print(f"IIC: after epoch {epoch + 1} one cluster holds {sizes.max() / len(p):.0%} of the images "
                      "(common early on; a warning follows if the last epoch is still so)", flush=True)

    def final_warning(self) -> str | None:
        return self.warnings_[-1] if self.collapsed_ and self.collapsed_[-1] else None


# ---------------------------------------------------------------- the method
@register
class IIC(Method):
    """Invariant Information Clustering: a CNN trained to give an image and its perturbed copies the same
    cluster, maximising their mutual information. No labels, no k-means.

    Head B has `n_clusters` outputs, head A `overcluster` times more (0: no head A); `sub_heads` of each
    (`sub_heads_a` in head A when set). Batches hold `batch_images` images x `copies` perturbed copies (None:
    ~30 pairs per cluster of head B). `sobel=None`: Sobel input for colour images.
    fit(x, y=None, validation=None): `y` is ignored; `validation=(x_val, y_val)` only feeds the monitor's
    display ACC. After fit: model_ (the network, `IICNet`), history_, monitor_, sub_head_, sub_head_losses_,
    timings_, images_per_second_. A killed run resumes after its last finished epoch (`checkpoint_dir`).
    """

    name = "iic"
    defaults = dict(overcluster=5, sub_heads=5, sub_heads_a=None, copies=5, batch_images=None, lamb=1.0,
                    head_schedule="BA", input_size=24, crop=0.72, view_scale=(0.57, 0.86), rotation=25.0,
                    jitter=0.4, sobel=None, normalise=False, width=32, pool="gap", epochs=10, learning_rate=1e-3,
                    select_images=10000, monitor_images=2000, checkpoint_dir=None, verbose=0)
    presets = {
        "quick": dict(epochs=5, copies=3, lamb=2.0, head_schedule="BBA"),  # CI: standard's on <= 3,000 images, 5 epochs
        "standard": dict(epochs=6, copies=3, lamb=2.0, head_schedule="BBA"),  # as many epochs as ~30 CPU min allow
        # a GPU: 100 epochs, wider, the official ClusterNet's flattened map: ~20 min of a T4
        "full": dict(epochs=100, width=64, pool="flatten", lamb=2.0, head_schedule="BBA"),
    }
    smoke = dict(epochs=3, batch_images=32, select_images=64, monitor_images=64)  # BBA: both heads, B twice

    def __init__(self, n_clusters: int, seed: int = 0, **params):
        super().__init__(n_clusters, seed, **{**self.defaults, **params})
        self.timings_: dict[str, float] = {}

    # -- pieces, public so that a notebook can show them one by one
    def batch_images(self) -> int:
        p = self.params
        return int(p["batch_images"]) if p["batch_images"] else max(128, math.ceil(30 * self.n_clusters / p["copies"]))

    def views(self, input_shape):
        p = self.params
        return iic_views(input_shape, p["input_size"], p["crop"], tuple(p["view_scale"]), p["rotation"],
                         p["jitter"], self.seed)

    def trunk(self, input_shape):
        """(trunk, evaluation view): the kit's small CNN (Sobel input for colour images by default) on the
        evaluation view of the images."""
        p = self.params
        sobel = (input_shape[-1] == 3) if p["sobel"] is None else p["sobel"]
        size = p["input_size"]
        trunk = small_cnn_backbone((size, size, input_shape[-1]), p["width"], sobel, p["normalise"], p["pool"],
                                   name="iic_trunk")
        return trunk, self.views(input_shape)[2]

    def build(self, input_shape) -> IICNet:
        """The network Phi for inputs of `input_shape`: trunk, head B and (overcluster > 0) head A."""
        p = self.params
        trunk, evaluation = self.trunk(input_shape)
        n_over = int(round(p["overcluster"] * self.n_clusters))
        head_b = SubHeads(p["sub_heads"], self.n_clusters, name="head_B")
        head_a = SubHeads(p["sub_heads_a"] or p["sub_heads"], n_over, name="head_A") if n_over else None
        net = IICNet(trunk, evaluation, head_b, head_a, name=self.name.replace("-", "_"))
        net(np.zeros((1, *input_shape), "float32"))  # build the weights
        return net

    def trainers(self, net: IICNet, steps_per_epoch: int, input_shape, model=IICModel) -> dict:
        """One compiled training `model` per head, sharing the trunk; Adam with a cosine decay over the head's
        steps. On an accelerator each one makes the perturbed copies in its training step."""
        p, schedule, views = self.params, self.schedule(net), self.step_views(input_shape)
        trainers = {}
        for name, head in net.heads.items():
            steps = max(1, steps_per_epoch * sum(schedule[e % len(schedule)] == name for e in range(p["epochs"])))
            lr = keras.optimizers.schedules.CosineDecay(p["learning_rate"], decay_steps=steps, alpha=0.1)
            trainers[name] = model(net.trunk, head, p["lamb"], views, name=f"iic_head_{name}")
            trainers[name].compile(optimizer=keras.optimizers.Adam(lr))
        return trainers

    def step_views(self, input_shape):
        """(original, perturbed, copies) when the training step makes the copies (on an accelerator), else None."""
        if not training.augment_on_device():
            return None
        original, perturbed, _ = self.views(input_shape)
        return original, perturbed, self.params["copies"]

    def schedule(self, net: IICNet) -> str:
        return self.params["head_schedule"] if net.head_a is not None else "B"

    def features(self, x) -> np.ndarray:
        """What the network takes: the images."""
        return np.asarray(x).astype("float32")

    def batches(self, x, shuffle: bool = True, pairs: bool = False):
        """Training batches: images with their perturbed copies, or plain images when the training step makes
        the copies (on an accelerator; `pairs=True` makes them here anyway)."""
        original, perturbed, _ = self.views(x.shape[1:])
        if training.augment_on_device() and not pairs:
            original = perturbed = None
        return iic_batches(x, self.batch_images(), self.params["copies"], original, perturbed, self.seed, shuffle)

    def selection_batches(self, x):
        """Batches of pairs to choose the sub-head on (reshuffled, made on the host)."""
        return self.batches(x[np.random.default_rng(self.seed + 1).permutation(len(x))], pairs=True)

    # -- scikit-learn shape
    def fit(self, x, y=None, validation=None):
        p, x = self.params, np.asarray(x)
        n = min(self.batch_images(), len(x))
        self.model_ = net = self.build(self.features(x[:1]).shape[1:])
        trainers, schedule = self.trainers(net, len(x) // n, x.shape[1:]), self.schedule(net)
        monitor_idx = np.random.default_rng(self.seed).choice(len(x), min(p["monitor_images"], len(x)), replace=False)
        x_val, y_val = validation if validation is not None else (x[monitor_idx], None)
        x_val = self.features(np.asarray(x_val))
        self.monitor_ = IICMonitor(None if y_val is None else np.asarray(y_val), verbose=p["verbose"])
        folder = self.checkpoint_folder(x)
        checkpoint = training.EpochCheckpoint(net, folder and Path(folder) / "iic")
        self.history_: dict[str, list] = {}
        start = checkpoint.restore(self.history_)
        for name, model in trainers.items():  # a resumed run continues each head's learning-rate schedule
            model.optimizer.iterations.assign((len(x) // n) * [schedule[e % len(schedule)] for e in range(start)].count(name))
        images = (len(x) // n) * n * (1 + p["copies"])  # through the trunk in one epoch

        def end_of_epoch(epoch, logs):
            self.monitor_(epoch, self.model_.predict(x_val, batch_size=512, verbose=0)["B"], logs)
            for key in set(self.history_) | set(logs):  # the other head's losses: NaN (not computed)
                self.history_.setdefault(key, [math.nan] * epoch).append(float(logs.get(key, math.nan)))
            checkpoint.save(epoch + 1, self.history_)
            if p["verbose"]:
                print(training.progress_line("IIC: ", epoch, p["epochs"], logs["loss"], self.history_["seconds"][start:],
                                             images), flush=True)

        t0 = time.perf_counter()
        train_heads(trainers, self.batches(x), schedule, p["epochs"], start, end_of_epoch)
        self.timings_["training"] = time.perf_counter() - t0
        self.images_per_second_ = images / float(np.median(self.history_["seconds"]))
        t0 = time.perf_counter()
        self.sub_head_losses_ = evaluate_sub_heads(trainers["B"], self.selection_batches(x),
                                                   max(1, min(len(x), p["select_images"]) // n))
        self.sub_head_ = training.lowest_loss(self.sub_head_losses_)
        self.timings_["sub-head selection"] = time.perf_counter() - t0
        if self.monitor_.final_warning():  # still collapsed at the end of training: worth a warning
            warnings.warn(self.monitor_.final_warning(), RuntimeWarning, stacklevel=2)
        return self

    def predict_heads(self, x) -> np.ndarray:
        """Head B's probabilities for every sub-head: N x sub_heads x K."""
        return self.model_.predict(self.features(x), batch_size=512, verbose=0)["B"]

    def predict_proba(self, x) -> np.ndarray:
        return self.predict_heads(x)[:, self.sub_head_]

    def predict(self, x) -> np.ndarray:
        return self.predict_proba(x).argmax(1).astype(np.int64)
