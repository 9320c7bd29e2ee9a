"""The supervised upper reference: a CNN trained WITH labels (what no clustering method may use)."""
from __future__ import annotations

import math

import numpy as np

from .. import augment, models, training
from . import Method, register


@register
class SupervisedCNN(Method):
    """arch='small' (4-block CNN, augmentation, cosine learning rate) or 'seed' (seed 000's CNN as it was)."""

    name = "supervised-cnn"
    needs_labels = True
    predicts_labels = True
    defaults = dict(arch="small", epochs=10, batch_size=128, learning_rate=2e-3, augment=True,
                    checkpoint_dir=None, verbose=0)
    presets = {
        "quick": dict(epochs=8, batch_size=64),
        "standard": dict(epochs=15, batch_size=128),
        "full": dict(epochs=40, batch_size=128),
    }
    smoke = dict(epochs=3, batch_size=64)

    def __init__(self, n_clusters: int, seed: int = 0, **params):
        super().__init__(n_clusters, seed, **{**self.defaults, **params})

    def augmenter(self):
        return augment.weak_augmenter(seed=self.seed) if self.params["augment"] else None

    def build(self, input_shape):
        """The network, with the augmentation layers in front when they run on the device."""
        p = self.params
        if p["arch"] == "seed":
            net = models.seed_cnn(input_shape, self.n_clusters)
        else:
            net = models.classifier(models.small_cnn_backbone(input_shape), self.n_clusters)
        return training.augment_in_model(net, self.augmenter())

    def fit(self, x, y=None):
        import keras

        if y is None:
            raise ValueError("supervised-cnn is the labelled upper reference: fit(x, y) needs labels")
        p = self.params
        self.model_ = self.build(x.shape[1:])
        steps = p["epochs"] * math.ceil(len(x) / p["batch_size"])
        lr = keras.optimizers.schedules.CosineDecay(p["learning_rate"], decay_steps=max(1, steps))
        self.model_.compile(keras.optimizers.Adam(lr), "sparse_categorical_crossentropy", metrics=["accuracy"])
        self.history_ = training.fit_resumable(
            self.model_, x.astype("float32"), np.asarray(y), epochs=p["epochs"], batch_size=p["batch_size"],
            checkpoint_dir=self.checkpoint_folder(x), verbose=p["verbose"], seed=self.seed,
            augmenter=self.augmenter())
        ran = [int(e) for e in self.history_.get("epoch", [])]
        self.log_ = {"epochs": p["epochs"], "epochs_run_now": ran,
                     "resumed_after_epoch": ran[0] if ran and ran[0] > 0 else None}
        return self

    def predict_proba(self, x):
        return self.model_.predict(x.astype("float32"), batch_size=512, verbose=0)

    def predict(self, x):
        return self.predict_proba(x).argmax(1).astype(np.int64)
