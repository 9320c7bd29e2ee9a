"""SCAN's step 1, the pretext task: a CNN learns features without labels (the official repository's simclr.py).

- SimCLR (Chen et al. 2020): two strongly augmented views of each image; NT-Xent asks each view to find its
  partner among all the batch's views (`losses.nt_xent_loss`). SCAN's default.
- RotNet (Gidaris et al. 2018): classify which of 0/90/180/270 degrees an image was rotated.

Both train `models.small_cnn_backbone` and return it with the loss history; a `checkpoint` path stem makes a
cut-off run continue after its last finished epoch (`training.EpochCheckpoint`).
"""
from __future__ import annotations

import time

import keras
import numpy as np

from . import augment, losses, models, training
from .distribute import per_replica


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
            return ((keras.ops.convert_to_numpy(augmenter(a, training=True)),
                     keras.ops.convert_to_numpy(augmenter(b, training=True))),)

        return training.IndexBatches(len(x), batch_size, make, seed, drop_remainder=len(x) >= batch_size)
    order = np.random.default_rng(seed).permutation(len(x))
    ds = tf.data.Dataset.from_tensor_slices((order, partner[order]))
    ds = ds.batch(batch_size, drop_remainder=len(x) >= batch_size)
    xs = tf.constant(x)

    def views(i, j):
        a, b = tf.gather(xs, i), tf.gather(xs, j)
        return ((augmenter(tf.cast(a, "float32"), training=True), augmenter(tf.cast(b, "float32"), training=True)),)

    return ds.map(views, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


@keras.saving.register_keras_serializable(package="course_lib")
class SimCLR(keras.Model):
    """backbone + a 2-layer projection head, trained with NT-Xent on two views (keras.io: override compute_loss).

    `augmenter`: the views' augmentation inside the training step (on an accelerator), else None (the input
    pipeline augments). Saved and loaded whole with `model.save` / `keras.models.load_model`.
    """

    def __init__(self, backbone, proj_dim: int | None = 128, hidden: int = 256, temperature: float = 0.1,
                 augmenter=None, **kwargs):
        super().__init__(**kwargs)
        self.backbone, self.augmenter, self.temperature = backbone, augmenter, temperature
        self.proj_dim, self.hidden = proj_dim, hidden
        # proj_dim None: no projection head, the loss reads the backbone's output itself
        self.projector = keras.Sequential([keras.layers.Dense(hidden, activation="relu"),
                                           keras.layers.Dense(proj_dim, dtype="float32")], name="projector") \
            if proj_dim else keras.layers.Activation("linear", dtype="float32", name="no_projector")

    def call(self, inputs, training=False):
        v1, v2 = inputs
        if training and self.augmenter is not None:
            v1, v2 = self.augmenter(v1, training=True), self.augmenter(v2, training=True)
        return (self.projector(self.backbone(v1, training=training)),
                self.projector(self.backbone(v2, training=training)))

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        return per_replica(losses.nt_xent_loss(y_pred[0], y_pred[1], self.temperature))

    def get_config(self):
        ser = keras.saving.serialize_keras_object
        return {**super().get_config(), "backbone": ser(self.backbone), "proj_dim": self.proj_dim,
                "hidden": self.hidden, "temperature": self.temperature,
                "augmenter": None if self.augmenter is None else ser(self.augmenter)}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("backbone", "augmenter"):
            if config.get(key) is not None:
                config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)


def train_simclr(x, epochs: int, batch_size: int = 256, width: int = 32, learning_rate: float = 1e-3,
                 temperature: float = 0.1, seed: int = 0, colour: bool | None = None, verbose: int = 0,
                 checkpoint=None):
    """SimCLR pretext: returns (backbone, history). A fresh pairing order every epoch; strong augmentation in
    the tf.data pipeline on a CPU, in the training step on an accelerator."""
    colour = x.shape[-1] == 3 if colour is None else colour
    backbone = models.small_cnn_backbone(x.shape[1:], width=width)
    aug = augment.strong_augmenter(colour=colour, seed=seed)
    model = SimCLR(backbone, temperature=temperature, augmenter=training.on_device(aug))
    model.compile(keras.optimizers.Adam(learning_rate))
    model((np.zeros((1, *x.shape[1:]), "float32"),) * 2)  # built, so that a checkpoint can be loaded
    hist = {"loss": [], "seconds": []}
    ckpt = training.EpochCheckpoint(model, checkpoint)
    for epoch in range(ckpt.restore(hist), epochs):
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


def train_rotnet(x, epochs: int, batch_size: int = 256, width: int = 32, learning_rate: float = 1e-3,
                 seed: int = 0, verbose: int = 0, checkpoint=None):
    """RotNet pretext: returns (backbone, history). One random rotation per image per epoch (an epoch is N
    images)."""
    backbone = models.small_cnn_backbone(x.shape[1:], width=width)
    clf = models.classifier(backbone, 4, dropout=0.0, name="rotnet")
    clf.compile(keras.optimizers.Adam(learning_rate), "sparse_categorical_crossentropy", metrics=["accuracy"])
    rng = np.random.default_rng(seed)
    hist = {"loss": [], "accuracy": [], "seconds": []}
    ckpt = training.EpochCheckpoint(clf, checkpoint)
    for epoch in range(ckpt.restore(hist), epochs):
        t0 = time.perf_counter()
        r = rng.integers(0, 4, len(x))
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
    """The backbone's features of images (N x d, float32)."""
    return np.asarray(backbone.predict(x.astype("float32"), batch_size=batch_size, verbose=0), np.float32)
